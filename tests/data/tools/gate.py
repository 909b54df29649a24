"""A command tool that waits for the test: it touches `started`, then waits until the file
`gate` exists (both relative to the workspace, its current directory), then prints `output`.

It lets a test hold a run at a known point (inside a tool call, lock held, intent on disk)
for as long as it needs, instead of hoping the run is still going. It gives up after
`timeout` seconds (default 120) with exit 1, so a broken test fails instead of hanging.
"""

from __future__ import annotations

import json
import os
import sys
import time

args = json.load(sys.stdin)
if "started" in args:
    open(args["started"], "w").close()
deadline = time.monotonic() + float(args.get("timeout", 120))
while not os.path.exists(args["gate"]):
    if time.monotonic() > deadline:
        sys.stderr.write(f"gate {args['gate']} never opened\n")
        sys.exit(1)
    time.sleep(0.01)
print(args.get("output", "opened"))
