"""A model for the command provider's tests: reads the request on stdin, streams JSON lines.

First turn (the last message is the user's): a sentence, word by word, then a write_file call.
After a tool result: "Done." Flags: --slow (20 ms between lines), --bad-line (a line that is
not JSON after the first word), --exit N (stop after the first word with status N), --no-done.
Every request is appended to requests.jsonl in the current directory (the workspace).
"""

import json
import sys
import time

flags = sys.argv[1:]
request = json.load(sys.stdin)
with open("requests.jsonl", "a") as log:
    log.write(json.dumps(request) + "\n")


def emit(line: object) -> None:
    sys.stdout.write((line if isinstance(line, str) else json.dumps(line)) + "\n")
    sys.stdout.flush()
    if "--slow" in flags:
        time.sleep(0.02)


last = request["messages"][-1]
words = ["I ", "will ", "write ", "the ", "file ", "now."] if last["role"] == "user" else ["Done."]
for index, word in enumerate(words):
    emit({"text": word})
    if index == 0 and "--bad-line" in flags:
        emit("this is not json")
    if index == 0 and "--exit" in flags:
        sys.stderr.write("model runner: out of memory\n")
        sys.exit(int(flags[flags.index("--exit") + 1]))
if last["role"] == "user":
    emit({"tool_call": {"tool": "write_file", "args": {"path": "out.txt", "content": "from the model"}}})
if "--no-done" not in flags:
    emit({"done": True})
