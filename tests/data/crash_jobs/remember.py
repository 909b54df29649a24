"""An idempotent_with_key tool: stores a fact under this call's idempotency key, once.
A retry with the same key finds it there and changes nothing."""

import json
import os
import sys

STORE = "remembered.json"
key = os.environ["HANDSHAKE_IDEMPOTENCY_KEY"]
fact = json.load(sys.stdin)["fact"]
try:
    with open(STORE, encoding="utf-8") as fh:
        store = json.load(fh)
except FileNotFoundError:
    store = {}
if key not in store:
    store[key] = fact
    tmp = STORE + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(store, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, STORE)
    directory = os.open(".", os.O_RDONLY)
    os.fsync(directory)
    os.close(directory)
print("remembered")
