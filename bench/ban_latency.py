"""Ban latency: seconds from the failed SSH login that triggers the ban to the first dropped
connection, on SSH and on the gateway, for our fail2ban setup and for Debian's stock one.

In the lab (root needed), on the deployed machine: fail2ban reads sshd from the machine's journal.
The stock setup (the shipped jail file moved aside, Debian's own sshd jail left) needs its own
maxretry (5) failures; latency counts from the last of them.

    python -m bench.ban_latency [--repeat 5]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import spread, table, write_section
from components.drift import DRIFT_TIMER
from lab.topology import ATTACKER, VPS_PEER
from lab.world import REPO, Lab, LabError, down, in_ns, run, wait_until

GIVE_UP_SECONDS = 15
STOCK_MAXRETRY = 5  # jail.conf's default


def _fail_logins(key: Path, times: int) -> float:
    for _ in range(times):
        options = ["BatchMode=yes", "StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null", "IdentitiesOnly=yes"]
        options.append("ConnectTimeout=3")
        ssh = ["ssh", *(word for option in options for word in ("-o", option)), "-i", str(key)]
        # A source dropped mid-login (banned before its last attempt) waits for nothing more.
        with contextlib.suppress(subprocess.TimeoutExpired):
            run(in_ns(ATTACKER.namespace, *ssh, f"root@{VPS_PEER.ipv4}", "true"), check=False, timeout=8)
    return time.monotonic()


def _first_drop(port: int) -> subprocess.Popen[str]:
    probe = ["-m", "lab.probe", VPS_PEER.ipv4, str(port), "--count", "1000", "--seconds", str(GIVE_UP_SECONDS)]
    # 10 connects/s per port: together below the SYN guard's per-source budget, which would
    # otherwise drop probes itself.
    probe += ["--interval", "0.1", "--timeout", "1", "--until-fail"]
    return subprocess.Popen(
        in_ns(ATTACKER.namespace, sys.executable, *probe),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


SHIPPED_JAIL = "/etc/fail2ban/jail.d/clawhosters.local"
ASIDE = "/root/clawhosters.local"


def _use_jail(lab: Lab, shipped: bool) -> bool:
    """The shipped jail, or Debian's stock configuration alone; fail2ban restarted either way.
    False when fail2ban does not stay up (Debian 12's stock jail looks for /var/log/auth.log)."""
    if shipped:
        lab.host("sh", "-c", f"[ ! -e {ASIDE} ] || mv {ASIDE} {SHIPPED_JAIL}")
        lab.host("systemctl", "start", DRIFT_TIMER)
    else:
        # The drift check would put the shipped jail back: it is off while the stock one is measured.
        lab.host("systemctl", "stop", DRIFT_TIMER)
        lab.host("sh", "-c", f"[ ! -e {SHIPPED_JAIL} ] || mv {SHIPPED_JAIL} {ASIDE}")
    lab.host("systemctl", "restart", "fail2ban.service", check=False)
    try:
        wait_until("fail2ban", lambda: lab.fail2ban("status", "sshd", check=False).returncode == 0, timeout=30)
    except LabError:
        return False
    # The server answers before it has read its jails; a bad configuration ends it moments later.
    time.sleep(3)
    return lab.host("systemctl", "is-active", "fail2ban.service", check=False).returncode == 0


def _measure(lab: Lab, key: Path, shipped: bool, maxretry: int) -> dict[int, float | None]:
    ports = (lab.policy.inbound.ssh_port, lab.policy.inbound.gateway_port)
    if not _use_jail(lab, shipped):
        return dict.fromkeys(ports)
    last_failure = _fail_logins(key, maxretry)
    probes = {port: _first_drop(port) for port in ports}
    latency: dict[int, float | None] = {}
    for port, probe in probes.items():
        _, stderr = probe.communicate(timeout=GIVE_UP_SECONDS + 10)
        failed = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
        latency[port] = failed[0]["failed_at"] - last_failure if failed else None
    lab.fail2ban("unban", "--all", check=False)
    return latency


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ban_latency")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root (it builds the lab)")
    lab = Lab()
    setups = {
        "ours (shipped jail and action)": (True, lab.policy.fail2ban.maxretry),
        "Debian's stock sshd jail": (False, STOCK_MAXRETRY),
    }
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        key = Path(directory) / "stranger"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        try:
            lab.up()
            for name, (shipped, maxretry) in setups.items():
                runs = [_measure(lab, key, shipped, maxretry) for _ in range(args.repeat)]
                row = [name, str(maxretry)]
                for port in (lab.policy.inbound.ssh_port, lab.policy.inbound.gateway_port):
                    values = [run_[port] for run_ in runs if run_[port] is not None]
                    blocked = f"{len(values)}/{len(runs)} runs"
                    row.append(f"{spread(values, ' s')} ({blocked})" if values else f"never dropped ({blocked})")
                rows.append(row)
        finally:
            down(lab.state_dir)
    body = (
        "Failed logins from one attacker, then connects every 100 ms (1 s timeout) to SSH and to the gateway "
        f"until one is dropped, giving up after {GIVE_UP_SECONDS} s. {args.repeat} runs per setup, "
        "median [min, max].\n\n"
        + table(
            ["fail2ban setup", "failures to ban", "SSH dropped after", "gateway (IPv4, via Docker) dropped after"], rows
        )
    )
    print(write_section("Ban latency", body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
