"""A command-provider model that says the same thing every time, until it is told otherwise:
30 words, one line each, 20 ms apart; once a file named `diverge` exists in the workspace,
the first word changes. A job declares it deterministic, so recovery expects it to repeat
what it had streamed, and a changed first word is a divergence.
"""

import json
import os
import sys
import time

json.load(sys.stdin)
first = "changed0" if os.path.exists("diverge") else "word0"
words = [first, *(f"word{i}" for i in range(1, 30))]
for index, word in enumerate(words):
    text = word if index == len(words) - 1 else word + " "
    sys.stdout.write(json.dumps({"text": text}) + "\n")
    sys.stdout.flush()
    time.sleep(0.02)
sys.stdout.write(json.dumps({"done": True}) + "\n")
