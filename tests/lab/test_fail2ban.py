"""Three failed SSH logins ban the source on every port, the gateway included, for the policy's
bantime; the provisioner's network and bystanders are never banned."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.topology import ATTACKER, CLIENT, PROVISIONER
from lab.world import Lab, wait_until
from tests.lab.helpers import connect, ssh

BAN_WITHIN_SECONDS = 15


@pytest.fixture
def unban_afterwards(lab: Lab) -> Iterator[None]:
    yield
    lab.fail2ban("unban", "--all")


def _fail(lab: Lab, namespace: str, address: str, key: Path, times: int) -> None:
    for _ in range(times):
        assert ssh(namespace, address, key).returncode == 255


def _banned(lab: Lab) -> str:
    return lab.fail2ban("status", lab.policy.fail2ban.jail).stdout


@pytest.mark.usefixtures("unban_afterwards")
@pytest.mark.parametrize("family,source", [(4, ATTACKER.ipv4), (6, ATTACKER.ipv6)], ids=["ipv4", "ipv6"])
def test_three_failures_drop_the_source_on_ssh_and_gateway(
    lab: Lab, stranger_key: Path, family: int, source: str
) -> None:
    address = lab.address(family)
    gateway = lab.policy.inbound.gateway_port
    assert lab.http_status(address, gateway, ATTACKER.namespace) == 401
    _fail(lab, ATTACKER.namespace, address, stranger_key, lab.policy.fail2ban.maxretry)
    started = time.monotonic()
    wait_until("the ban", lambda: source in _banned(lab), timeout=BAN_WITHIN_SECONDS)
    print(f"banned {time.monotonic() - started:.1f} s after the last failure")

    assert connect(ATTACKER.namespace, address, lab.policy.inbound.ssh_port) == (
        False,
        pytest.approx(3, abs=1),
    )
    assert lab.http_status(address, gateway, ATTACKER.namespace) == 0
    assert lab.fail2ban("get", lab.policy.fail2ban.jail, "bantime").stdout.strip() == str(
        lab.policy.fail2ban.bantime_seconds
    )
    # A bystander keeps full access.
    assert lab.http_status(address, gateway, CLIENT.namespace, auth=True) == 200
    assert connect(CLIENT.namespace, address, lab.policy.inbound.ssh_port)[0]


def test_the_provisioner_is_never_banned(lab: Lab, stranger_key: Path) -> None:
    failures = lab.policy.fail2ban.maxretry + 2
    _fail(lab, PROVISIONER.namespace, lab.ipv4, stranger_key, failures)
    log = lab.machine.rootfs / "var/log/fail2ban.log"
    # fail2ban has read every failure and ignored each one, by address.
    wait_until(
        "fail2ban to read the failures",
        lambda: log.read_text().count(f"Ignore {PROVISIONER.ipv4} by ip") >= failures,
        timeout=BAN_WITHIN_SECONDS,
    )
    assert PROVISIONER.ipv4 not in _banned(lab)
    assert ssh(PROVISIONER.namespace, lab.ipv4, lab.provisioning_key).returncode == 0


@pytest.mark.usefixtures("unban_afterwards")
def test_sshd_lines_count_whatever_process_name_journald_recorded(lab: Lab) -> None:
    """journald leaves _COMM (and _SYSTEMD_UNIT) off lines of an sshd process that has already
    exited, and Debian's unit is ssh.service: the jail matches what sshd itself sends."""
    source = "203.0.113.250"
    for attempt in range(lab.policy.fail2ban.maxretry):
        # Sent through syslog as sshd, by a process that is not named sshd.
        line = f"Connection closed by authenticating user root {source} port {40000 + attempt} [preauth]"
        lab.host("logger", "--id=4242", "-t", "sshd", "-p", "auth.info", line)
    wait_until("the ban", lambda: source in _banned(lab), timeout=BAN_WITHIN_SECONDS)
