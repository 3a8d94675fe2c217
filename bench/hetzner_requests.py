"""Hetzner API requests per stack: what one customer stack's preview, no-op `up`, baseline-change
`up` and drift repair (a refresh, then the gated `up`) ask of Hetzner's API, counted by the lab's
emulator per token, through the real CLI and providers (root needed). Then what that means for a
fleet in one Hetzner project, whose bucket holds 3,600 requests and refills one per second.

    python -m bench.hetzner_requests
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections import Counter
from collections.abc import Callable

from bench.common import table, write_section
from config.policy import BaselinePolicy
from fleet import stacks
from lab.world import STACK, Lab, down

FLEET = 5_000
BUCKET = 3_600  # requests a project's bucket holds, and refills per hour


def _measure(lab: Lab, operation: Callable[[], object]) -> Counter[str]:
    """The requests of the lab's own project's token that `operation` made, by route."""
    before = Counter(lab.hetzner_usage()["by_route"])
    operation()
    return Counter(lab.hetzner_usage()["by_route"]) - before


def _routes(counts: Counter[str]) -> str:
    return ", ".join(f"{route} {count}" for route, count in counts.most_common())


def _repair(lab: Lab) -> None:
    stacks.refresh(lab.workspace(), STACK)
    lab.deploy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hetzner_requests")
    parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root (it builds the lab)")
    lab = Lab()
    try:
        lab.up(deploy=False)
        guard = lab.policy.syn_guard
        changed = BaselinePolicy().model_copy(update={"syn_guard": guard.model_copy(update={"burst": guard.burst + 1})})
        measured = {
            "first `up` (gated preview, then `up --plan`)": _measure(lab, lab.deploy),
            "preview with the policy pack": _measure(lab, lambda: lab.preview(lab.default_settings())),
            "no-op `up` (gated preview, then `up --plan`)": _measure(lab, lab.deploy),
            "baseline-change `up` (baseline command replaced)": _measure(lab, lambda: lab.deploy(policy=changed)),
            "drift repair (refresh, then a no-op `up`)": _measure(lab, lambda: _repair(lab)),
        }
    finally:
        lab.close()
        down(lab.state_dir)
    rows = []
    for operation, counts in measured.items():
        total = counts.total()
        # A full bucket at the start of the hour, then one request a second.
        hours = max(0.0, (FLEET * total - BUCKET) / BUCKET)
        projects = math.ceil(FLEET * total / (2 * BUCKET))
        rows.append([operation, str(total), f"{FLEET * total:,}", f"{hours:.1f} h", str(projects), _routes(counts)])
    body = (
        "Requests to Hetzner's API of one customer stack on the lab's Hetzner Cloud, counted by the "
        "emulator for the stack's token, through the real CLI and hcloud provider (its refreshes, the "
        "program's data sources, action polling). The projection is for a fleet of "
        f"{FLEET:,} stacks in one Hetzner project, whose bucket holds {BUCKET:,} requests and refills one "
        "per second: the time the bucket needs to serve the fleet once, and how many projects serve it "
        "within one hour (a full bucket plus an hour of refill each).\n\n"
        + table(
            ["operation", "requests per stack", f"{FLEET:,} stacks", "one project", "projects for 1 h", "routes"],
            rows,
        )
    )
    print(write_section("Hetzner requests per stack", body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
