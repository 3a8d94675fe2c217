"""The drift check on a real packet filter: the bundle applied in a fresh network namespace, the
check run there with Debian's own python3, drift made by hand and Docker's churn imitated.

The timer, fail2ban, sshd over systemd and real containers are exercised on the lab's booted
machine; here sshd's part runs against a real `sshd -T` and the container rule against Docker's
inspect format.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from components import drift_check
from components.drift import CHECK_PATH, DRIFT_TIMER, EXPECTED_PATH, STATUS_FILE, UNIT_FILES
from components.host_baseline import HostSettings, render_host_baseline
from config import BaselinePolicy, DriftPolicy
from tests.netns import Run, network_namespace, ruleset

POLICY = BaselinePolicy()
BUNDLE = render_host_baseline(POLICY, HostSettings())
SYSTEM_PYTHON = "/usr/bin/python3"
EVERYWHERE = "0.0.0.0"  # noqa: S104 (how Docker reports a port published on every address)


@pytest.fixture
def netns() -> Iterator[Run]:
    with network_namespace("claw-drift") as run:
        yield run


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "bundle"
    BUNDLE.write_to(directory)
    return directory


class Checker:
    def __init__(self, netns: Run, bundle_dir: Path) -> None:
        self.netns = netns
        self.bundle_dir = bundle_dir
        self.status_file = bundle_dir.parent / "status.json"

    def __call__(self, *options: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
        result = self.netns(
            SYSTEM_PYTHON,
            str(self.bundle_dir / CHECK_PATH),
            "--only",
            "firewall",
            "--status",
            str(self.status_file),
            *options,
            check=False,
        )
        return result, json.loads(self.status_file.read_text())


@pytest.fixture
def applied(netns: Run, bundle_dir: Path) -> Checker:
    imitate_docker(netns, 0)
    netns("sh", str(bundle_dir / "apply.sh"), "--firewall-only")
    return Checker(netns, bundle_dir)


def imitate_docker(netns: Run, step: int) -> None:
    """What dockerd does to the packet filter as it starts, and as containers and networks come and go."""
    for tool in ("iptables", "ip6tables"):
        for chain in ("DOCKER", "DOCKER-ISOLATION-STAGE-1", "DOCKER-ISOLATION-STAGE-2", "DOCKER-USER"):
            netns(tool, "-w", "-N", chain, check=False)
        netns(tool, "-w", "-t", "nat", "-N", "DOCKER", check=False)
        if netns(tool, "-w", "-C", "DOCKER-USER", "-j", "RETURN", check=False).returncode:
            netns(tool, "-w", "-A", "DOCKER-USER", "-j", "RETURN")
        # A new network: Docker deletes its FORWARD jump and puts it back on top.
        netns(tool, "-w", "-D", "FORWARD", "-j", "DOCKER-USER", check=False)
        netns(tool, "-w", "-I", "FORWARD", "1", "-j", "DOCKER-USER")
        for rule in (["-o", f"br-{step:04x}", "-j", "DOCKER"], ["-j", "DOCKER-ISOLATION-STAGE-1"]):
            netns(tool, "-w", "-A", "FORWARD", *rule)
        # A container starts (odd steps) or stops (even steps) publishing a port.
        address = f"172.17.0.{step + 2}/32" if tool == "iptables" else f"fd00:17::{step + 2}/128"
        publish = ["DOCKER", "-d", address, "!", "-i", "docker0", "-o", "docker0", "-p", "tcp", "--dport", "8080"]
        netns(tool, "-w", "-A" if step % 2 else "-D", *publish, "-j", "ACCEPT", check=bool(step % 2))
        netns(tool, "-w", "-t", "nat", "-F", "DOCKER")
        netns(tool, "-w", "-t", "nat", "-A", "DOCKER", "-p", "tcp", "--dport", str(8000 + step), "-j", "RETURN")
    # fail2ban bans and unbans into CLAW-BANS: its content is fail2ban's.
    if step:
        netns("iptables", "-w", "-I", "CLAW-BANS", "-s", f"198.51.100.{step}", "-j", "DROP")
        netns("ip6tables", "-w", "-F", "CLAW-BANS")


def test_a_clean_host_has_no_drift_across_ten_checks_while_docker_churns(applied: Checker) -> None:
    for step in range(1, 11):
        imitate_docker(applied.netns, step)
        result, status = applied()
        assert result.returncode == 0, result.stderr
        assert "BASELINE_DRIFT" not in result.stderr
        assert status["result"] == "ok" and status["drift"] == []
    assert status["bundle_digest"] == BUNDLE.digest, "the host reports the digest the stack exports"
    assert status["last_drift"] is None


DRIFTS = {
    "flushed chain": (["iptables", "-F", "CLAW-INPUT"], "ipv4 chain CLAW-INPUT: 0 rules, expected 7"),
    "flushed container chain": (["ip6tables", "-F", "CLAW-DOCKER"], "ipv6 chain CLAW-DOCKER: 0 rules"),
    "edited chain": (["ip6tables", "-D", "CLAW-SYNGUARD", "3"], "missing 1: -A CLAW-SYNGUARD -j DROP"),
    "deleted hook": (["iptables", "-D", "INPUT", "-j", "CLAW-INPUT"], "ipv4 chain INPUT: 0 rules, expected 1"),
    "deleted container hook": (
        ["ip6tables", "-D", "DOCKER-USER", "-j", "CLAW-DOCKER"],
        "ipv6 hook DOCKER-USER -> CLAW-DOCKER: 0x not first, expected 1x first",
    ),
    "INPUT policy ACCEPT": (["iptables", "-P", "INPUT", "ACCEPT"], "ipv4 INPUT policy: ACCEPT, expected DROP"),
    "rule ahead of the hook": (
        ["iptables", "-I", "INPUT", "1", "-p", "tcp", "--dport", "9999", "-j", "ACCEPT"],
        "unexpected 1: -A INPUT -p tcp -m tcp --dport 9999 -j ACCEPT",
    ),
    "rule after the hook": (
        ["ip6tables", "-A", "OUTPUT", "-p", "tcp", "--dport", "25", "-j", "ACCEPT"],
        "ipv6 chain OUTPUT: 2 rules, expected 1",
    ),
}


@pytest.mark.parametrize("change", DRIFTS)
def test_a_hand_made_change_is_named_and_repaired(applied: Checker, change: str) -> None:
    command, named = DRIFTS[change]
    applied()
    clean = ruleset(applied.netns)
    applied.netns(*command)
    assert ruleset(applied.netns) != clean

    result, status = applied()
    drift_lines = [line for line in result.stderr.splitlines() if line.startswith("BASELINE_DRIFT: ")]
    assert any(named in line for line in drift_lines), result.stderr
    assert "BASELINE_REPAIRED" in result.stderr and result.returncode == 0
    assert status["result"] == "repaired" and any(named in item for item in status["drift"])
    assert ruleset(applied.netns) == clean

    again, after = applied()
    assert again.returncode == 0 and "BASELINE_DRIFT" not in again.stderr
    assert after["result"] == "ok"
    assert after["last_drift"] == status["last_drift"], "the last drift stays on record"


def test_without_repair_drift_is_reported_and_left_alone(applied: Checker) -> None:
    applied.netns("iptables", "-P", "INPUT", "ACCEPT")
    drifted = ruleset(applied.netns)
    result, status = applied("--no-repair")
    assert result.returncode == 1
    assert "BASELINE_DRIFT: ipv4 INPUT policy: ACCEPT, expected DROP" in result.stderr
    assert status["result"] == "drift" and status["remaining"] == status["drift"]
    assert ruleset(applied.netns) == drifted


def test_a_host_without_the_baseline_is_all_drift(netns: Run, bundle_dir: Path) -> None:
    result, status = Checker(netns, bundle_dir)("--no-repair")
    assert result.returncode == 1
    assert "ipv4 chain CLAW-INPUT: chain is missing" in status["drift"]
    assert "ipv6 INPUT policy: ACCEPT, expected DROP" in status["drift"]


# --- sshd: the real `sshd -T` -----------------------------------------------------------------


def _sshd_config(tmp_path: Path, bundle_dir: Path, before: str = "") -> Path:
    host_key = tmp_path / "host_key"
    if not host_key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    config = tmp_path / "sshd_config"
    dropin = (bundle_dir / "etc/ssh/sshd_config.d/clawhosters.conf").read_text()
    # sshd takes the first value it reads: an earlier file overrides the baseline's drop-in.
    config.write_text(f"{before}{dropin}HostKey {host_key}\n")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    return config


def test_sshd_settings_are_compared_with_sshd_t(tmp_path: Path, bundle_dir: Path) -> None:
    status = tmp_path / "status.json"
    check = [SYSTEM_PYTHON, str(bundle_dir / CHECK_PATH), "--only", "sshd", "--no-repair", "--status", str(status)]
    config = _sshd_config(tmp_path, bundle_dir)
    clean = subprocess.run([*check, "--sshd-config", str(config)], capture_output=True, text=True, check=False)
    assert clean.returncode == 0, clean.stderr
    assert json.loads(status.read_text())["result"] == "ok"

    config = _sshd_config(tmp_path, bundle_dir, before="PasswordAuthentication yes\nPermitRootLogin yes\n")
    drifted = subprocess.run([*check, "--sshd-config", str(config)], capture_output=True, text=True, check=False)
    assert drifted.returncode == 1
    assert "BASELINE_DRIFT: sshd passwordauthentication is 'yes', expected 'no'" in drifted.stderr
    assert "BASELINE_DRIFT: sshd permitrootlogin is 'yes', expected 'prohibit-password'" in drifted.stderr


# --- fail2ban: a real server ---------------------------------------------------------------------


def test_fail2ban_is_compared_with_the_running_jail(netns: Run, bundle_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "fail2ban"
    shutil.copytree("/etc/fail2ban", config)
    for shipped in ("etc/fail2ban/jail.d/clawhosters.local", "etc/fail2ban/action.d/clawhosters-drop.conf"):
        shutil.copy(bundle_dir / shipped, config / shipped.removeprefix("etc/fail2ban/"))
    # No journal here: the jail follows a file instead; everything else is as shipped.
    (tmp_path / "auth.log").touch()
    (config / "jail.d/zz-here.local").write_text(f"[sshd]\nbackend = polling\nlogpath = {tmp_path / 'auth.log'}\n")
    (config / "fail2ban.d/zz-here.local").write_text(
        f"[Definition]\ndbfile = :memory:\nlogtarget = {tmp_path / 'f2b.log'}\n"
    )
    socket_path = str(tmp_path / "fail2ban.sock")
    client = ["fail2ban-client", "-s", socket_path]
    check = [SYSTEM_PYTHON, str(bundle_dir / CHECK_PATH), "--only", "fail2ban", "--no-repair"]
    check += ["--fail2ban-socket", socket_path, "--status", str(tmp_path / "status.json")]

    def drift() -> list[str]:
        result = subprocess.run(check, capture_output=True, text=True, check=False)
        assert result.returncode == (1 if "BASELINE_DRIFT" in result.stderr else 0), result.stderr
        return [line.removeprefix("BASELINE_DRIFT: ") for line in result.stderr.splitlines() if "DRIFT" in line]

    netns(*client, "-c", str(config), "-p", str(tmp_path / "fail2ban.pid"), "-x", "start")
    try:
        assert drift() == []
        netns(*client, "set", "sshd", "maxretry", "10")
        assert drift() == ["fail2ban jail sshd maxretry is '10', expected '3'"]
        netns(*client, "stop", "sshd")
        assert drift() == ["fail2ban jail sshd is not active"]
    finally:
        netns(*client, "stop", check=False)
    assert drift() == ["fail2ban is not running"]


# --- containers: Docker's inspect format --------------------------------------------------------


def _container(name: str, ports: dict[str, list[dict[str, str]] | None]) -> dict[str, Any]:
    return {"Name": f"/{name}", "NetworkSettings": {"Ports": ports}}


def test_only_the_gateway_publishes_and_only_its_port() -> None:
    expected = json.loads(BUNDLE.file(EXPECTED_PATH).content)
    host = drift_check.Host(expected, Path("/nonexistent"), None, None)
    gateway, metrics = POLICY.inbound.gateway_port, POLICY.inbound.metrics_port
    shipped = _container(
        "openclaw-gateway",
        {
            f"{gateway}/tcp": [
                {"HostIp": EVERYWHERE, "HostPort": str(gateway)},
                {"HostIp": "::", "HostPort": str(gateway)},
            ],
            f"{metrics}/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(metrics)}],
            "5000/tcp": None,  # exposed, not published
        },
    )
    assert host.stray_bindings([shipped]) == []
    second = _container("customer-app", {"80/tcp": [{"HostIp": EVERYWHERE, "HostPort": "8081"}]})
    squatter = _container("customer-proxy", {"80/tcp": [{"HostIp": "", "HostPort": str(gateway)}]})
    exposed = _container("openclaw-gateway", {f"{metrics}/tcp": [{"HostIp": EVERYWHERE, "HostPort": str(metrics)}]})
    assert host.stray_bindings([shipped, second, squatter, exposed]) == [
        ("customer-app", "0.0.0.0:8081 -> 80/tcp"),
        ("customer-proxy", f"*:{gateway} -> 80/tcp"),
        ("openclaw-gateway", f"0.0.0.0:{metrics} -> {metrics}/tcp"),
    ]


# --- rendering ----------------------------------------------------------------------------------


def test_the_timer_period_comes_from_the_policy() -> None:
    timer = BUNDLE.file(UNIT_FILES[1]).content
    assert f"OnUnitActiveSec={POLICY.drift.check_interval_seconds}s" in timer.splitlines()
    assert f"OnActiveSec={POLICY.drift.first_check_seconds}s" in timer.splitlines()
    fast = POLICY.model_copy(update={"drift": POLICY.drift.model_copy(update={"check_interval_seconds": 10})})
    bundle = render_host_baseline(fast, HostSettings())
    assert "OnUnitActiveSec=10s" in bundle.file(UNIT_FILES[1]).content.splitlines()
    assert bundle.digest != BUNDLE.digest


def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    units = []
    for path in UNIT_FILES:
        unit = tmp_path / Path(path).name
        unit.write_text(BUNDLE.file(path).content)
        units.append(str(unit))
    # verify only warns about an unknown key: any output is a finding.
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *units], capture_output=True, text=True, check=False
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_a_bad_drift_setting_fails_at_load_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="check_interval_seconds"):
        DriftPolicy(check_interval_seconds=1)


def test_the_check_knows_every_file_of_the_bundle_and_where_to_report() -> None:
    expected = json.loads(BUNDLE.file(EXPECTED_PATH).content)
    assert set(expected["bundle_files"]) == {str(item.path) for item in BUNDLE.files}
    assert expected["status_file"] == STATUS_FILE
    service = BUNDLE.file(UNIT_FILES[0]).content
    assert f"ExecStart={SYSTEM_PYTHON} /opt/clawhosters/baseline/{CHECK_PATH}" in service.splitlines()
    apply = BUNDLE.file("apply.sh").content
    assert f"systemctl enable {DRIFT_TIMER}" in apply.splitlines()
    assert apply.index(f"systemctl restart {DRIFT_TIMER}") < apply.index("systemctl reload-or-restart fail2ban.service")
