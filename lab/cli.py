"""`pulumi` for the lab's Automation API calls: the pinned CLI, run inside the provisioner's network
namespace, where the servers and Hetzner's API are reachable.

    python lab/cli.py PULUMI ARGS...   (the lab's bin/pulumi runs this)

The Automation API follows an operation over gRPC: it listens on the host's 127.0.0.1 and passes
`--event-log tcp://127.0.0.1:PORT`. The same address inside the provisioner's namespace is another
socket, so this listens there too and relays each connection to the host's listener.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab.netns import relay
from lab.topology import PROVISIONER

EVENT_LOG = "--event-log"
LOOPBACK = "tcp://127.0.0.1:"


def main(argv: list[str]) -> int:
    pulumi, *arguments = argv
    for flag, value in itertools.pairwise(arguments):
        if flag == EVENT_LOG and value.startswith(LOOPBACK):
            relay(int(value.removeprefix(LOOPBACK)), PROVISIONER.namespace)
    child = subprocess.Popen(["ip", "netns", "exec", PROVISIONER.namespace, pulumi, *arguments])
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda number, _frame: child.send_signal(number))
    return child.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
