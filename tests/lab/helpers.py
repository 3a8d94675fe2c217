"""Small tools the lab tests share: bounded SSH attempts, the kernel log, TCP probes."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from lab.world import in_ns, run

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
