"""Small tools the lab tests share: bounded SSH attempts, the kernel log, TCP probes."""

from __future__ import annotations

import base64
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paramiko

from lab.netns import connect_from
from lab.topology import PROVISIONER
from lab.world import Lab, in_ns, run

_STAMP = re.compile(r"^\[\s*(\d+\.\d+)\]")


class Kernel:
    """The kernel log (LOG target lines) since a point in time.

    By the kernel's own timestamps, not by line count: the ring buffer drops old lines when full.
    """

    def __init__(self) -> None:
        self.start = max((stamp for stamp, _ in self._lines()), default=0.0)

    @staticmethod
    def _lines() -> list[tuple[float, str]]:
        output = subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout
        return [(float(match.group(1)), line) for line in output.splitlines() if (match := _STAMP.match(line))]

    def since(self, needle: str) -> list[str]:
        return [line for stamp, line in self._lines() if stamp > self.start and needle in line]


def ssh(namespace: str, host: str, key: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """One bounded SSH login attempt as root that runs `true`."""
    return run(
        in_ns(
            namespace,
            "ssh",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=5",
            "-o",
            "IdentitiesOnly=yes",
            "-i",
            str(key),
            *options,
            f"root@{host}",
            "true",
        ),
        check=False,
        timeout=20,
    )


def connect(namespace: str, host: str, port: int, timeout: float = 3) -> tuple[bool, float]:
    """One TCP connection attempt: (connected, seconds it took). Bounded by `timeout`."""
    started = time.monotonic()
    result = run(
        in_ns(namespace, "nc", "-z", "-w", str(int(timeout)), host, str(port)),
        check=False,
        timeout=timeout + 5,
    )
    return result.returncode == 0, time.monotonic() - started


@contextmanager
def provisioner_session(lab: Lab) -> Iterator[paramiko.Transport]:
    """An SSH session as the provisioner opens one: from its network, with the provisioning key,
    the host key the stack pinned."""
    kind, blob = lab.command_inputs("gateway")["connection"]["hostKey"].split()[:2]
    key = paramiko.Ed25519Key.from_private_key_file(str(lab.provisioning_key))
    client = paramiko.SSHClient()
    client.get_host_keys().add(lab.ipv4, kind, paramiko.PKey.from_type_string(kind, base64.b64decode(blob)))
    client.connect(
        lab.ipv4,
        username="root",
        pkey=key,
        sock=connect_from(PROVISIONER.namespace, lab.ipv4, 22, 5),
        timeout=5,
        allow_agent=False,
        look_for_keys=False,
    )
    try:
        transport = client.get_transport()
        assert transport is not None
        yield transport
    finally:
        client.close()
