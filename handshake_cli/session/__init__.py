"""The session as data: pure folds over journal records.

A session's state machine and INTERRUPTED, the message thread, each tool call's status and
checkpoints (their body, how one is written and read back). Given the same records, these
give the same answers, whoever calls them: the loop, recovery, readers or maintenance.
"""
