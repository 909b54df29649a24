"""A model for the command provider that says what the test tells it to.

argv[1] is JSON: a list of turns, each `{"text": [delta, ...], "tool_call": {...}}` (both
optional). The turn is the number of assistant messages in the request plus one. JSON
escapes reach handshake as written, so a test can stream what no TOML file can hold: a lone
surrogate (`"\\ud800"`), or a surrogate pair split across two deltas, as real servers do.
"""

import json
import sys

turns = json.loads(sys.argv[1])
request = json.load(sys.stdin)
turn = sum(1 for m in request["messages"] if m["role"] == "assistant")
said = turns[min(turn, len(turns) - 1)]
for delta in said.get("text", []):
    sys.stdout.write(json.dumps({"text": delta}) + "\n")
if "tool_call" in said:
    sys.stdout.write(json.dumps({"tool_call": said["tool_call"]}) + "\n")
sys.stdout.write(json.dumps({"done": True}) + "\n")
