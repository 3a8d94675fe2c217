"""Shared parts of the benchmarks: machine description, statistics and the results file."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from collections.abc import Sequence
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = "# Benchmark results\n\nEach section is rewritten by its own script; figures come from one run of it.\n"


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    iptables = subprocess.run(["iptables", "--version"], capture_output=True, text=True, check=False).stdout
    return (
        f"{cpu}, {os.cpu_count()} cores, {memory_kib / 1024 / 1024:.0f} GiB, Linux {platform.release()}, "
        f"Python {platform.python_version()}, {iptables.strip() or 'no iptables'}"
    )


def spread(values: Sequence[float], unit: str = "", digits: int = 2) -> str:
    """'median [min, max]' of repeated measurements."""
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{mid:.{digits}f}{unit} [{low:.{digits}f}, {high:.{digits}f}]"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(title: str, body: str) -> str:
    """Replace (or add) the section `## title` in RESULTS.md; return the section's text."""
    section = f"## {title}\n\nMachine: {machine()}\n\n{body.strip()}\n"
    existing = RESULTS.read_text() if RESULTS.exists() else HEADER
    parts = existing.split("\n## ")
    kept = [parts[0].rstrip() + "\n"] + [
        "## " + part.rstrip() + "\n" for part in parts[1:] if not part.startswith(title + "\n")
    ]
    RESULTS.write_text("\n".join([*kept, section]))
    return section
