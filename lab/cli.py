"""`pulumi` for the lab's Automation API calls: the pinned CLI, run inside the provisioner's network
namespace, where the servers and Hetzner's API are reachable.

    python lab/cli.py PULUMI ARGS...   (the lab's bin/pulumi runs this)

The Automation API follows an operation over gRPC: it listens on the host's 127.0.0.1 and passes
`--event-log tcp://127.0.0.1:PORT`. The same address inside the provisioner's namespace is another
socket, so this listens there too and relays each connection to the host's listener.
"""

from __future__ import annotations

import contextlib
import itertools
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab.netns import listener
from lab.topology import PROVISIONER

EVENT_LOG = "--event-log"
LOOPBACK = "tcp://127.0.0.1:"


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for end in (source, target):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)


def _relay(port: int) -> None:
    """Accept in the provisioner's namespace, connect in the host's, copy both ways."""
    server = listener("127.0.0.1", port, PROVISIONER.namespace)

    def serve() -> None:
        while True:
            inside, _ = server.accept()
            outside = socket.create_connection(("127.0.0.1", port))
            for source, target in ((inside, outside), (outside, inside)):
                threading.Thread(target=_pump, args=(source, target), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()


def main(argv: list[str]) -> int:
    pulumi, *arguments = argv
    for flag, value in itertools.pairwise(arguments):
        if flag == EVENT_LOG and value.startswith(LOOPBACK):
            _relay(int(value.removeprefix(LOOPBACK)))
    child = subprocess.Popen(["ip", "netns", "exec", PROVISIONER.namespace, pulumi, *arguments])
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda number, _frame: child.send_signal(number))
    return child.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
