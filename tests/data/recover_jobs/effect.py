"""A non-idempotent command tool: appends one line per call to effects.log in the workspace
(the idempotency key, a tab, the message). Doing it twice would do it twice.

With --probe it answers whether the call with this key already took effect: exit 0 and the
same output the call printed when it did, exit 1 when it did not.
"""

import json
import os
import sys

LOG = "effects.log"


def logged(key: str) -> str | None:
    try:
        with open(LOG, encoding="utf-8") as log:
            for line in log:
                logged_key, _, message = line.rstrip("\n").partition("\t")
                if logged_key == key:
                    return message
    except FileNotFoundError:
        pass
    return None


key = os.environ["HANDSHAKE_IDEMPOTENCY_KEY"]
if sys.argv[1:] == ["--probe"]:
    found = logged(key)
    if found is None:
        sys.exit(1)
    print(f"sent: {found}")
    sys.exit(0)
message = json.load(sys.stdin).get("message", "")
with open(LOG, "a", encoding="utf-8") as log:
    log.write(f"{key}\t{message}\n")
    log.flush()
    os.fsync(log.fileno())
print(f"sent: {message}")
