"""Stands in for handshake in the signal tests: runs one slow command tool through run_tool.

Usage: driver.py WORKSPACE cooperative|default. `cooperative` installs a SIGINT handler that
only sets a flag, as the runner does; `default` leaves Python's handlers in place. Prints
the outcome and whether a SIGINT arrived as one JSON line.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

from handshake_cli.engine.jobs import ToolSpec
from handshake_cli.engine.tools.gate import ToolContext, run_tool

workspace, mode = Path(sys.argv[1]), sys.argv[2]
interrupted: list[int] = []
if mode == "cooperative":
    signal.signal(signal.SIGINT, lambda number, frame: interrupted.append(number))

spec = ToolSpec(
    name="slow",
    side_effect="execute",
    idempotency="non_idempotent",
    command=(sys.executable, str(Path(__file__).with_name("fake_tool.py"))),
    timeout_seconds=10,
)
ctx = ToolContext("s1", "call-1-0", "hk_test", workspace, lambda data: "unused", dict(os.environ))
# It prints after the sleep: a tool whose handshake has gone must not die writing its output.
args = {"started": "started", "sleep": 0.5, "stdout_repeat": ["still working\n", 1], "touch": "done"}
outcome = run_tool(spec, args, ctx)
print(json.dumps({"outcome": outcome.as_result_data(), "interrupted": bool(interrupted)}), flush=True)
