"""A bounded SYN flood: non-blocking connects at a fixed rate for a fixed time, each abandoned at
once, so every attempt is one SYN. Works for IPv4 and IPv6 alike.

    python -m lab.flood ADDRESS PORT [--rate 1000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time

MAX_RATE = 5000
MAX_SECONDS = 30


def flood(address: str, port: int, rate: int, seconds: float) -> dict[str, float]:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    interval = 1 / rate
    started = time.monotonic()
    sent = 0
    while (elapsed := time.monotonic() - started) < seconds:
        # Catch up with the schedule in small batches; never more than the bounded total.
        due = min(int(elapsed / interval) + 1, int(rate * seconds))
        while sent < due:
            probe = socket.socket(family, socket.SOCK_STREAM)
            probe.setblocking(False)
            probe.connect_ex((address, port))
            probe.close()
            sent += 1
        time.sleep(interval)
    elapsed = time.monotonic() - started
    return {"sent": sent, "seconds": elapsed, "rate": sent / elapsed}


def command(namespace: str, address: str, port: int, rate: int, seconds: float) -> list[str]:
    """How to run a bounded flood from inside a lab namespace."""
    arguments = [address, str(port), "--rate", str(rate), "--seconds", str(seconds)]
    return ["ip", "netns", "exec", namespace, sys.executable, "-m", "lab.flood", *arguments]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.flood")
    parser.add_argument("address")
    parser.add_argument("port", type=int)
    parser.add_argument("--rate", type=int, default=1000, choices=range(1, MAX_RATE + 1), metavar="SYN/s")
    parser.add_argument("--seconds", type=float, default=5)
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= MAX_SECONDS:
        parser.error(f"--seconds must be in (0, {MAX_SECONDS}]")
    print(json.dumps(flood(args.address, args.port, args.rate, args.seconds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
