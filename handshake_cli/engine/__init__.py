"""The engine: what turns a job into a running session.

Jobs (the job file's contract), model providers, the tool gate, secret masking, the
session writer that applies the durability rules, the run loop that drives the model and
tools through it, and `launch`, which starts a session or checkpoints one on request.
"""
