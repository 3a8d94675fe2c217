"""Entry point the Pulumi CLI runs for `pulumi preview --policy-pack policy`."""

import sys
from pathlib import Path

# The pack runs from its own directory; the rules live in the repository's packages.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from policy.pack import build_pack

build_pack()
