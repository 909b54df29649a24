"""A command tool for the tool-gate tests; what it does is chosen by its JSON arguments.

Keys (all optional, applied in this order): `started` (touch this file), `sleep` (seconds),
`stdout_repeat` ([text, n]: print text n times), `stderr` (write it), `touch` (create this
file), `exit` (status). It reports what it received (its arguments, environment and current
directory) into the file named by `report_to`, or else on stdout unless told what to print.
"""

from __future__ import annotations

import json
import os
import sys
import time

args = json.loads(sys.stdin.read())
if "started" in args:
    open(args["started"], "w").close()
if "sleep" in args:
    time.sleep(args["sleep"])
if "stdout_repeat" in args:
    text, times = args["stdout_repeat"]
    sys.stdout.write(text * times)
if "stderr" in args:
    sys.stderr.write(args["stderr"])
sys.stdout.flush()
if "touch" in args:
    with open(args["touch"], "w") as done:
        done.write("done")
report = {"args": args, "env": dict(os.environ), "cwd": os.getcwd()}
if "report_to" in args:
    with open(args["report_to"], "w") as out:
        json.dump(report, out)
elif not {"stdout_repeat", "stderr"} & args.keys():
    json.dump(report, sys.stdout)
sys.exit(args.get("exit", 0))
