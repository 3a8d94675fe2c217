"""What applying the baseline costs: our `apply.sh --firewall-only` (one iptables-restore
transaction per family) against the same rules applied one `iptables` call at a time.

Each run uses a fresh network namespace (root needed). Measured: the first apply, an idempotent
re-apply, and the rule count left on the box.

    python -m bench.apply_cost [--repeat 10]
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from statistics import median

from bench.common import spread, table, write_section
from components.host_baseline import (
    BANS_CHAIN,
    DOCKER_CHAIN,
    INPUT_CHAIN,
    OUTPUT_CHAIN,
    RULE_FILES,
    HostSettings,
)
from components.host_baseline import render_host_baseline as render
from config import BaselinePolicy

TOOLS = {4: "iptables", 6: "ip6tables"}


@contextmanager
def namespace(name: str) -> Iterator[list[str]]:
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield ["ip", "netns", "exec", name]
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=True)


def _timed(commands: list[list[str]]) -> float:
    started = time.perf_counter()
    for command in commands:
        subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def one_call_per_rule(bundle_dir: Path, prefix: list[str]) -> list[list[str]]:
    """The same ruleset as individual iptables invocations, as a hand-written script would do."""
    commands: list[list[str]] = []
    for family, tool in TOOLS.items():
        commands += [[*prefix, tool, "-w", "-N", chain] for chain in ("DOCKER-USER", BANS_CHAIN)]
        for line in (bundle_dir / RULE_FILES[family]).read_text().splitlines():
            if line.startswith(":"):
                commands.append([*prefix, tool, "-w", "-N", line[1:].split()[0]])
            elif line.startswith("-A "):
                commands.append([*prefix, tool, "-w", *shlex.split(line)])
        for chain, target in (
            ("INPUT", INPUT_CHAIN),
            ("OUTPUT", OUTPUT_CHAIN),
            ("DOCKER-USER", DOCKER_CHAIN),
        ):
            commands.append([*prefix, tool, "-w", "-I", chain, "1", "-j", target])
        commands.append([*prefix, tool, "-w", "-I", "FORWARD", "1", "-j", "DOCKER-USER"])
        commands.append([*prefix, tool, "-w", "-P", "INPUT", "DROP"])
    return commands


def rule_count(prefix: list[str]) -> int:
    saved = "".join(
        subprocess.run([*prefix, f"{tool}-save"], capture_output=True, text=True, check=True).stdout
        for tool in TOOLS.values()
    )
    return sum(1 for line in saved.splitlines() if line.startswith("-A "))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.apply_cost")
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root (it creates network namespaces)")

    first, again, single, counts = [], [], [], set()
    with tempfile.TemporaryDirectory() as directory:
        bundle_dir = Path(directory)
        render(BaselinePolicy(), HostSettings()).write_to(bundle_dir)
        apply = ["sh", str(bundle_dir / "apply.sh"), "--firewall-only"]
        for index in range(args.repeat):
            with namespace(f"claw-bench-apply-{os.getpid()}-{index}") as prefix:
                first.append(_timed([[*prefix, *apply]]))
                again.append(_timed([[*prefix, *apply]]))
                counts.add(("apply.sh", rule_count(prefix)))
            with namespace(f"claw-bench-calls-{os.getpid()}-{index}") as prefix:
                commands = one_call_per_rule(bundle_dir, prefix)
                single.append(_timed(commands))
                counts.add(("one call per rule", rule_count(prefix)))

    rules = dict(counts)
    rows = [
        ["apply.sh, first apply", spread(first, " s", 3), str(rules["apply.sh"])],
        ["apply.sh, idempotent re-apply", spread(again, " s", 3), str(rules["apply.sh"])],
        [
            f"one iptables call per rule ({len(commands)} calls)",
            spread(single, " s", 3),
            str(rules["one call per rule"]),
        ],
        [
            "one call per rule / apply.sh (first apply)",
            f"{median(single) / median(first):.1f}x",
            "",
        ],
    ]
    body = (
        f"Fresh network namespace per run, both families, {args.repeat} runs, median [min, max]; "
        "rules = `-A` lines in iptables-save plus ip6tables-save. Applying one call per rule a second "
        "time would duplicate every rule; apply.sh's re-apply leaves the ruleset identical.\n\n"
        + table(["method", "time", "rules"], rows)
    )
    print(write_section("Apply cost", body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
