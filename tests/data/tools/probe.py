"""A probe for the tool-gate tests: says its verdict, then exits with the status in its arguments."""

from __future__ import annotations

import json
import sys

args = json.loads(sys.stdin.read())
print(f"checked call {args.get('label', '?')}")
sys.exit(args["status"])
