"""Runs a tool script with the fleet's world as its working directory: `in_world.py WORLD
SCRIPT ARGS...` runs SCRIPT in WORLD/<HANDSHAKE_SESSION_ID>. What a tool leaves there
outlives the machine that ran it, as a message in a team's chat or a row in another service
would; what a tool leaves in its workspace does not (tests/test_fleet.py)."""

import os
import runpy
import sys

world = os.path.join(sys.argv[1], os.environ["HANDSHAKE_SESSION_ID"])
os.makedirs(world, exist_ok=True)
os.chdir(world)
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
