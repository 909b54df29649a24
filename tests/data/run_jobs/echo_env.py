"""A command tool that prints the value of the variable named in its arguments."""

import json
import os
import sys

args = json.load(sys.stdin)
print(f"value: {os.environ.get(args['name'], '<unset>')} {args.get('extra', '')}")
