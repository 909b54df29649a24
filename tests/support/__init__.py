"""What the test modules share: paths, running the console script, job files, session files.

No test lives here, and no test module imports another test module: a helper two modules
need moves here. Data the tests read (jobs, scripts, tools, golden guidance) is in
tests/data/.
"""
