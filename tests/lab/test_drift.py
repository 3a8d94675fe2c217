"""On the booted machine, the drift timer notices hand-made changes to the baseline, names them in a
`BASELINE_DRIFT:` line and repairs them within one period; a clean host reports no drift."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from components.drift import DRIFT_SERVICE, STATUS_FILE
from config.policy import BaselinePolicy, DriftPolicy
from lab.world import Lab, LabError, wait_until

PERIOD = 10
# The time a check itself may take on top of the period: the packet filter is rebuilt in a
# scratch namespace for comparison, and a difference is looked at twice.
CHECK_SECONDS = 10
FAST = BaselinePolicy(drift=DriftPolicy(check_interval_seconds=PERIOD, first_check_seconds=5))


@pytest.fixture(scope="module")
def fast_timer(lab: Lab) -> Iterator[None]:
    lab.deploy(policy=FAST)
    try:
        yield
    finally:
        lab.deploy(lab.default_settings(), BaselinePolicy())


def _status(lab: Lab) -> dict[str, object]:
    return json.loads(lab.host("cat", STATUS_FILE).stdout)


@pytest.mark.usefixtures("fast_timer")
def test_a_clean_host_reports_no_drift_across_ten_checks(lab: Lab) -> None:
    for _ in range(10):
        # A oneshot unit: `start` returns when the check has finished.
        lab.host("systemctl", "start", DRIFT_SERVICE, timeout=120)
        status = _status(lab)
        assert status["result"] == "ok", status


def _repaired(lab: Lab, named: str) -> bool:
    last = _status(lab).get("last_drift") or {}
    assert isinstance(last, dict)
    return last.get("result") == "repaired" and any(named in item for item in last.get("what", []))


def _rules(lab: Lab) -> str:
    return "\n".join(line for line in lab.ruleset().splitlines() if "CLAW-BANS" not in line)


CHANGES: dict[str, tuple[tuple[str, ...], str]] = {
    "flushed chain": (("iptables", "-F", "CLAW-INPUT"), "CLAW-INPUT"),
    "deleted hook": (("iptables", "-D", "INPUT", "-j", "CLAW-INPUT"), "ipv4 chain INPUT"),
    "INPUT policy ACCEPT": (("ip6tables", "-P", "INPUT", "ACCEPT"), "ipv6 INPUT policy: ACCEPT"),
    "fail2ban stopped": (("systemctl", "stop", "fail2ban.service"), "fail2ban"),
    # Any image will do: the gateway's, idling instead of serving.
    "a second container publishing a port": (
        ("docker", "run", "--detach", "--name", "stray", "-p", "8081:8080", "--entrypoint", "sleep"),
        "stray",
    ),
}


@pytest.mark.usefixtures("fast_timer")
@pytest.mark.parametrize("change", CHANGES)
def test_a_hand_made_change_is_named_and_repaired_within_one_period(lab: Lab, change: str) -> None:
    command, named = CHANGES[change]
    if command[0] == "docker":
        command = (*command, lab.gateway_image(), "300")
    clean = _rules(lab)
    started_at = lab.host("date", "+%s").stdout.strip()
    started = time.monotonic()
    try:
        lab.host(*command)
        try:
            wait_until(
                "the drift check to repair it", lambda: _repaired(lab, named), timeout=2 * PERIOD + CHECK_SECONDS
            )
        except LabError:
            pytest.fail(f"not repaired: {_status(lab)}\n{lab.journal('-u', DRIFT_SERVICE, f'--since=@{started_at}')}")
        elapsed = time.monotonic() - started
        print(f"{change}: repaired {elapsed:.1f} s after the change")
        assert elapsed <= PERIOD + CHECK_SECONDS
        journal = lab.journal("-u", DRIFT_SERVICE, f"--since=@{started_at}")
        assert any("BASELINE_DRIFT:" in line and named in line for line in journal.splitlines()), journal
        assert _rules(lab) == clean
        assert lab.host("systemctl", "is-active", "fail2ban.service").stdout.strip() == "active"
        running = lab.docker("ps", "--format", "{{.Names}} {{.Ports}}").stdout
        assert "stray" not in running and "openclaw-gateway" in running
    finally:
        lab.docker("rm", "--force", "stray", check=False)
