"""Sink servers on the "internet": they answer every connection with one line and close it.

python -m lab.sink ADDRESS [ADDRESS...] --ports 25 443 ...
"""

from __future__ import annotations

import argparse
import asyncio
import sys

BANNER = b"sink\n"


async def _answer(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(BANNER)
    await writer.drain()
    writer.close()


async def serve(addresses: list[str], ports: list[int]) -> None:
    servers = [await asyncio.start_server(_answer, address, port) for address in addresses for port in ports]
    print("ready", flush=True)
    await asyncio.gather(*(server.serve_forever() for server in servers))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.sink")
    parser.add_argument("addresses", nargs="+")
    parser.add_argument("--ports", type=int, nargs="+", required=True)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.addresses, args.ports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
