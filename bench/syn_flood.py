"""Availability under a SYN flood: our per-source guard against the naive global limit and no guard.

In the lab (root needed): one attacker floods the gateway port while a legitimate client connects
to it; only the SYN guard chain differs between variants. Measured per variant and run: the
client's connect success rate and p50/p95 connect time.

    python -m bench.syn_flood [--repeat 3] [--rate 2000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from bench.common import spread, table, write_section
from components.host_baseline import SYN_GUARD_CHAIN
from lab.flood import command as flood_command
from lab.topology import ATTACKER, CLIENT, VPS_PEER
from lab.world import REPO, Lab, down, in_ns


def _guard_rules(variant: str, lab: Lab) -> list[list[str]]:
    guard = lab.policy.syn_guard
    log = ["-m", "limit", "--limit", f"{guard.log_rate_per_minute}/min", "-j", "LOG", "--log-prefix", guard.log_prefix]
    if variant == "global -m limit":
        limit = ["-m", "limit", "--limit", f"{guard.rate_per_second}/second", "--limit-burst", str(guard.burst)]
        return [[*limit, "-j", "RETURN"], log, ["-j", "DROP"]]
    return [["-j", "RETURN"]]  # no guard


def _use(lab: Lab, variant: str) -> None:
    lab.apply_firewall()  # ours, as shipped
    if variant != "per-source hashlimit (ours)":
        lab.vps("iptables", "-F", SYN_GUARD_CHAIN)
        for rule in _guard_rules(variant, lab):
            lab.vps("iptables", "-A", SYN_GUARD_CHAIN, *rule)


def _run(lab: Lab, rate: int, seconds: float) -> list[float | None]:
    port = str(lab.policy.inbound.gateway_port)
    python = sys.executable
    flood = subprocess.Popen(
        flood_command(ATTACKER.namespace, VPS_PEER.ipv4, int(port), rate, seconds), cwd=REPO, stdout=subprocess.DEVNULL
    )
    try:
        time.sleep(0.5)
        # Attempts start only while the flood runs; a SYN not answered within 1 s (the first
        # retransmission) counts as failed: a stall a user would notice.
        probe = ["-m", "lab.probe", VPS_PEER.ipv4, port, "--seconds", str(seconds - 1.5), "--timeout", "1"]
        client = subprocess.run(
            in_ns(CLIENT.namespace, python, *probe), cwd=REPO, capture_output=True, text=True, check=True, timeout=60
        )
    finally:
        flood.wait(timeout=seconds + 10)
    time.sleep(2)  # let the attacker's budget and the conntrack table settle between runs
    return json.loads(client.stdout)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


VARIANTS = ("per-source hashlimit (ours)", "global -m limit", "no guard")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.syn_flood")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rate", type=int, default=2000, help="attacker SYN/s (at most 5000)")
    parser.add_argument("--seconds", type=float, default=5)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root (it builds the lab)")
    lab = Lab()
    rows = []
    try:
        lab.up()
        for variant in VARIANTS:
            success, p50, p95 = [], [], []
            for _ in range(args.repeat):
                _use(lab, variant)
                results = _run(lab, args.rate, args.seconds)
                times = [1000 * r for r in results if r is not None]
                success.append(100 * len(times) / len(results))
                if times:
                    p50.append(statistics.median(times))
                    p95.append(_percentile(times, 0.95))
            latency = [spread(p50, " ms", 1), spread(p95, " ms", 1)] if p50 else ["no connection", "no connection"]
            rows.append([variant, spread(success, " %", 0), *latency])
    finally:
        down(lab.state_dir)
    body = (
        f"One attacker floods tcp/{lab.policy.inbound.gateway_port} at {args.rate} SYN/s for {args.seconds:g} s "
        "(IPv4, through Docker's DNAT path) while a client connects every 0.1 s, counting a connect not "
        "answered within 1 s (the first SYN retransmission) as failed; "
        f"only the SYN guard differs. {args.repeat} runs per variant, median [min, max].\n\n"
        + table(["SYN guard", "client connects that succeed", "p50 connect", "p95 connect"], rows)
    )
    print(write_section("Availability under a SYN flood", body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
