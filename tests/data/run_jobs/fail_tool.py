"""A command tool that always fails with exit status 3."""

import sys

print("something went wrong", file=sys.stderr)
sys.exit(3)
