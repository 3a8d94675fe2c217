"""What the Pulumi CLI runs for `--policy-pack policy`: `python -u -m pulumi.policy ENGINE .` in this
directory, which `runpy`s this file."""

import sys
from pathlib import Path

# The pack runs from its own directory; the rules live in the repository's packages.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from policy.pack import serve

serve()
