"""A stand-in notification tool for the job tests: arguments as JSON on stdin, a JSON result out.

With --probe it answers whether the notification happened (exit 0) or not (exit 1); this
stand-in never records one, so its probe always says it did not.
"""

import json
import sys

if "--probe" in sys.argv[1:]:
    sys.exit(1)
args = json.load(sys.stdin)
print(json.dumps({"notified": args.get("message", "")}))
