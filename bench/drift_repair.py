"""How long a hand-made change to the packet filter lasts: from the change to its repair by the
drift check (components/drift_check.py), in a fresh network namespace (root needed).

Measured: one clean check; one check run that finds a change, confirms it and repairs it; and the
time from a change to its repair while the check runs on a timer (as clawhosters-drift.timer's
OnUnitActiveSec does, with a short period), the change made at a random moment of the period.

    python -m bench.drift_repair [--repeat 5] [--period 2]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.apply_cost import namespace
from bench.common import spread, table, write_section
from components.drift import CHECK_PATH
from components.host_baseline import HostSettings, render_host_baseline
from config import BaselinePolicy

CHANGES = {
    "chain CLAW-INPUT flushed": ["iptables", "-F", "CLAW-INPUT"],
    "hook INPUT -> CLAW-INPUT deleted": ["iptables", "-D", "INPUT", "-j", "CLAW-INPUT"],
    "INPUT policy set to ACCEPT": ["ip6tables", "-P", "INPUT", "ACCEPT"],
}


def ruleset(prefix: list[str]) -> str:
    return "".join(
        subprocess.run([*prefix, tool, "-t", "filter"], capture_output=True, text=True, check=True).stdout
        for tool in ("iptables-save", "ip6tables-save")
    )


def _without_comments(saved: str) -> str:
    return "\n".join(line for line in saved.splitlines() if not line.startswith("#"))


class Timer(threading.Thread):
    """Starts the check every `period` seconds, counted from each start, like OnUnitActiveSec."""

    def __init__(self, check: list[str], period: float) -> None:
        super().__init__(daemon=True)
        self.check, self.period = check, period
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            started = time.monotonic()
            subprocess.run(self.check, capture_output=True, check=False)
            self.stopped.wait(max(0.0, self.period - (time.monotonic() - started)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.drift_repair")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--period", type=float, default=2.0, help="the timer period for the end-to-end figure")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root (it creates network namespaces)")
    policy = BaselinePolicy()

    rows = []
    with tempfile.TemporaryDirectory() as directory, namespace(f"claw-drift-bench-{os.getpid()}") as prefix:
        bundle_dir = Path(directory) / "bundle"
        render_host_baseline(policy, HostSettings()).write_to(bundle_dir)
        subprocess.run([*prefix, "sh", str(bundle_dir / "apply.sh"), "--firewall-only"], check=True)
        clean = _without_comments(ruleset(prefix))
        check = [*prefix, "/usr/bin/python3", str(bundle_dir / CHECK_PATH), "--only", "firewall"]
        check += ["--status", str(Path(directory) / "status.json")]

        def timed_check() -> float:
            started = time.perf_counter()
            subprocess.run(check, capture_output=True, check=False)
            return time.perf_counter() - started

        rows.append(["no change: one clean check", spread([timed_check() for _ in range(args.repeat)], " s")])
        for name, command in CHANGES.items():
            durations = []
            for _ in range(args.repeat):
                subprocess.run([*prefix, *command], check=True)
                durations.append(timed_check())
                assert _without_comments(ruleset(prefix)) == clean, f"{name} was not repaired"
            rows.append([f"{name}: one check finds, confirms and repairs it", spread(durations, " s")])

        timer = Timer(check, args.period)
        timer.start()
        for name, command in CHANGES.items():
            lasted = []
            for _ in range(args.repeat):
                time.sleep(random.uniform(0, args.period))  # noqa: S311 (a moment, not a secret)
                subprocess.run([*prefix, *command], check=True)
                changed = time.perf_counter()
                while _without_comments(ruleset(prefix)) != clean:
                    time.sleep(0.02)
                lasted.append(time.perf_counter() - changed)
            rows.append([f"{name}: change to repair, timer every {args.period:g} s", spread(lasted, " s")])
        timer.stopped.set()
        timer.join()

    drift = policy.drift
    body = (
        f"Fresh network namespace, both families, {args.repeat} runs per row, median [min, max]. A change "
        f"counts only if it is still there {drift.confirm_seconds:g} s later (Docker rewrites its FORWARD "
        "jump when it creates a network), so a check that finds drift takes at least that long. With the "
        f"shipped period of {drift.check_interval_seconds} s a change lasts at most that period plus one "
        "repairing check, half the period on average.\n\n" + table(["measured", "time"], rows)
    )
    print(write_section("Drift repair", body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
