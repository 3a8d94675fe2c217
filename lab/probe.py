"""A legitimate client's view: timed TCP connects, bounded in count and time.

    python -m lab.probe ADDRESS PORT [--count 50] [--seconds 30] [--interval 0.1] [--timeout 2]

Attempts start until --count attempts were made or --seconds have passed. Prints a JSON list with
the connect time in seconds of each attempt, or null where it failed.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time

MAX_COUNT = 1000


def probe(
    address: str, port: int, count: int, seconds: float, interval: float, timeout: float, until_fail: bool = False
) -> list[float | None]:
    results: list[float | None] = []
    deadline = time.monotonic() + seconds
    while len(results) < count and time.monotonic() < deadline:
        started = time.monotonic()
        try:
            with socket.create_connection((address, port), timeout=timeout):
                results.append(time.monotonic() - started)
        except OSError:
            results.append(None)
            if until_fail:
                print(json.dumps({"failed_at": started}), file=sys.stderr)
                break
        time.sleep(interval)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.probe")
    parser.add_argument("address")
    parser.add_argument("port", type=int)
    parser.add_argument("--count", type=int, default=50, choices=range(1, MAX_COUNT + 1), metavar="N")
    parser.add_argument("--seconds", type=float, default=30, help="start no attempt after this long")
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--timeout", type=float, default=2)
    parser.add_argument(
        "--until-fail",
        action="store_true",
        help="stop at the first failure; its start (monotonic clock) goes to stderr",
    )
    args = parser.parse_args(argv)
    print(
        json.dumps(
            probe(args.address, args.port, args.count, args.seconds, args.interval, args.timeout, args.until_fail)
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
