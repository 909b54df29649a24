"""A tool that holds its session live until the test opens the gate: it creates
`gate.reached` in the workspace, then waits for `gate.open` to exist, then answers."""

import os
import sys
import time

with open("gate.reached", "a", encoding="utf-8") as fh:
    fh.write(f"{os.getpid()}\n")
while not os.path.exists("gate.open"):
    time.sleep(0.01)  # waits on an event (the file), not on time
print("the gate is open")
sys.exit(0)
