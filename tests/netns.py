"""A fresh network namespace with its own empty packet filter, for tests of the rendered rules."""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Run = Callable[..., subprocess.CompletedProcess[str]]
_names = itertools.count()


@contextmanager
def network_namespace(prefix: str = "claw-unit") -> Iterator[Run]:
    """Yields `run(*command, check=True, stdin=None)` inside the namespace; removes it afterwards."""
    assert os.geteuid() == 0, "the packet-filter tests need root (CI runs as root)"
    name = f"{prefix}-{os.getpid()}-{next(_names)}"
    subprocess.run(["ip", "netns", "add", name], check=True)

    def run(*command: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", name, *command], input=stdin, capture_output=True, text=True, check=check
        )

    try:
        yield run
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=True)


def ruleset(run: Run) -> str:
    """Both families' filter tables, without comments, counters or timestamps."""
    dumps = [run(tool, "-t", "filter").stdout for tool in ("iptables-save", "ip6tables-save")]
    return "".join(line + "\n" for dump in dumps for line in dump.splitlines() if not line.startswith("#"))
