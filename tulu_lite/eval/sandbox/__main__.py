"""`python -I -S -B .../sandbox SETTINGS`: one program's harness (the folder is on sys.path as a script folder)."""

import json
import sys

from harness import harness

harness(json.loads(sys.argv[1]))
