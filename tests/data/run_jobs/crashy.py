"""A command tool that dies with handshake: it SIGKILLs its whole process group mid-way,
which is what a machine losing power looks like from inside the tool."""

import os
import signal
import sys

with open("crashy-started.txt", "w") as marker:
    marker.write("started\n")
sys.stdout.flush()
os.killpg(os.getpgrp(), signal.SIGKILL)
