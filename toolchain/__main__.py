"""`python -m toolchain build` builds the pinned toolchain; `python -m toolchain install` installs its
providers into the CLI's plugin cache; `python -m toolchain lock` writes the Python locks;
`python -m toolchain checked-lock IN OUT` copies a lock only if it is nothing but hashed pins."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from toolchain import build, lock, plugins


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m toolchain", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="build what is missing into the cache and link .toolchain/")
    commands.add_parser(
        "install", help="install the providers each SDK asks for into the CLI's plugin cache ($PULUMI_HOME/plugins)"
    )
    locking = commands.add_parser("lock", help="write requirements.txt and requirements-dev.txt from their .in files")
    locking.add_argument("--upgrade", action="store_true", help="resolve afresh instead of keeping the locked versions")
    checking = commands.add_parser(
        "checked-lock", help="write IN to OUT if it holds only pinned packages with their hashes (exit 1 otherwise)"
    )
    checking.add_argument("source", type=Path)
    checking.add_argument("target", type=Path)
    args = parser.parse_args()
    if args.command == "checked-lock":
        return lock.checked(args.source, args.target)
    if args.command == "lock":
        return lock.main(upgrade=args.upgrade)
    return build.main() if args.command == "build" else plugins.main()


if __name__ == "__main__":
    sys.exit(main())
