"""An idempotent_with_key command tool: stores its input in store.json in the workspace
under HANDSHAKE_IDEMPOTENCY_KEY, and ignores a key it already holds. The store is a list of
[key, value] entries, so a key stored twice would show. Every invocation, ignored or not,
appends its key to invocations.log, so a test can tell that a call was run again."""

import json
import os
import sys

STORE = "store.json"
key = os.environ["HANDSHAKE_IDEMPOTENCY_KEY"]
value = json.load(sys.stdin)
with open("invocations.log", "a", encoding="utf-8") as log:
    log.write(key + "\n")
try:
    with open(STORE, encoding="utf-8") as fh:
        store = json.load(fh)
except FileNotFoundError:
    store = []
if all(stored_key != key for stored_key, _ in store):
    store.append([key, value])
    tmp = STORE + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(store, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, STORE)
print("stored")
