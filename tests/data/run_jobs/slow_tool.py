"""A command tool that takes a while, then leaves a mark: used to interrupt handshake mid-tool."""

import json
import sys
import time

args = json.load(sys.stdin)
with open("slow-started.txt", "w") as marker:
    marker.write("started\n")
time.sleep(float(args.get("seconds", 1)))
with open("slow-done.txt", "w") as marker:
    marker.write("done\n")
print("slept")
