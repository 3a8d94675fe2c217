"""Re-applying the baseline changes nothing; after a reboot the firewall unit is active before
Docker, fail2ban and sshd start, and the instance serves again with its data."""

from __future__ import annotations

import re

from lab.topology import CLIENT
from lab.world import Lab
from tests.lab.test_scan import scan_finds_only_ssh_and_gateway

TOOLS = ("iptables", "ip6tables")
FIREWALL_UNIT = "clawhosters-firewall.service"
AFTER_THE_FIREWALL = ("docker.service", "containerd.service", "fail2ban.service", "ssh.service")


def _without_bans(ruleset: str) -> str:
    # fail2ban's own chain: its entries come and go with bans, not with the baseline.
    return re.sub(r"^-A CLAW-BANS .*\n", "", ruleset, flags=re.MULTILINE)


def _first_rule(lab: Lab, tool: str, chain: str) -> str:
    return lab.vps(tool, "-S", chain).stdout.splitlines()[1]


def _monotonic(lab: Lab, unit: str, prop: str) -> int:
    value = lab.host("systemctl", "show", f"--property={prop}", "--value", unit).stdout.strip()
    return int(value)


def test_reapply_with_the_gateway_running_is_idempotent(lab: Lab) -> None:
    before = lab.ruleset()
    lab.apply_firewall()
    lab.apply_firewall()
    assert lab.ruleset() == before
    for tool in TOOLS:
        rules = [line for line in lab.vps(f"{tool}-save", "-t", "filter").stdout.splitlines() if line.startswith("-A ")]
        duplicates = {line for line in rules if rules.count(line) > 1}
        assert not duplicates, f"{tool}: {duplicates}"
    assert lab.http_status(lab.ipv4, lab.policy.inbound.gateway_port, CLIENT.namespace, auth=True) == 200


def test_a_reboot_brings_the_baseline_up_first_and_the_gateway_back_with_its_data(lab: Lab) -> None:
    port = lab.policy.inbound.gateway_port
    instance = lab.http_get(lab.ipv4, port, CLIENT.namespace, auth=True, path="/instance-id")
    running = _without_bans(lab.ruleset())
    lab.reboot()
    firewall_done = _monotonic(lab, FIREWALL_UNIT, "ActiveEnterTimestampMonotonic")
    assert firewall_done > 0, "the firewall unit did not run at boot"
    for unit in AFTER_THE_FIREWALL:
        started = _monotonic(lab, unit, "InactiveExitTimestampMonotonic")
        assert started >= firewall_done, f"{unit} started before the baseline was active"
    print(lab.journal("-b", "-u", FIREWALL_UNIT, "-u", "docker.service", "-u", "ssh.service", "-u", "fail2ban.service"))
    for tool in TOOLS:
        assert ":INPUT DROP" in lab.vps(f"{tool}-save", "-t", "filter").stdout
        assert _first_rule(lab, tool, "INPUT") == "-A INPUT -j CLAW-INPUT"
    assert _first_rule(lab, "iptables", "FORWARD") == "-A FORWARD -j DOCKER-USER"
    assert _first_rule(lab, "iptables", "DOCKER-USER") == "-A DOCKER-USER -j CLAW-DOCKER"
    assert _without_bans(lab.ruleset()) == running
    assert lab.http_get(lab.ipv4, port, CLIENT.namespace, auth=True, path="/instance-id") == instance
    assert lab.http_status(lab.ipv4, port, CLIENT.namespace) == 401
    scan_finds_only_ssh_and_gateway(lab)
