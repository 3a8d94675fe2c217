"""`python -m toolchain build` builds the pinned toolchain; `python -m toolchain lock` writes the Python lock."""

from __future__ import annotations

import argparse
import sys

from toolchain import build, lock


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m toolchain", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="build what is missing into the cache and link .toolchain/")
    commands.add_parser("lock", help="write requirements.lock from requirements.in and the SDK pins")
    args = parser.parse_args()
    return build.main() if args.command == "build" else lock.main()


if __name__ == "__main__":
    sys.exit(main())
