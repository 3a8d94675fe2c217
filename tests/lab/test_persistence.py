"""Re-applying the baseline changes nothing; after a reboot the same ruleset is in place before
Docker starts, and Docker coming up keeps the baseline's hooks first."""

from __future__ import annotations

import re

from lab.topology import CLIENT, VPS_PEER
from lab.world import Lab

TOOLS = ("iptables", "ip6tables")


def _without_bans(ruleset: str) -> str:
    # fail2ban's own chain: its entries come and go with bans, not with the baseline.
    return re.sub(r"^-A CLAW-BANS .*\n", "", ruleset, flags=re.MULTILINE)


def _first_rule(lab: Lab, tool: str, chain: str) -> str:
    return lab.vps(tool, "-S", chain).stdout.splitlines()[1]


def test_reapply_with_the_gateway_running_is_idempotent(lab: Lab) -> None:
    before = lab.ruleset()
    lab.apply_firewall()
    lab.apply_firewall()
    assert lab.ruleset() == before
    for tool in TOOLS:
        rules = [line for line in lab.vps(f"{tool}-save", "-t", "filter").stdout.splitlines() if line.startswith("-A ")]
        duplicates = {line for line in rules if rules.count(line) > 1}
        assert not duplicates, f"{tool}: {duplicates}"
    assert lab.http_status(VPS_PEER.ipv4, lab.policy.inbound.gateway_port, CLIENT.namespace, auth=True) == 200


def test_a_reboot_restores_the_baseline_before_docker(lab: Lab) -> None:
    running = _without_bans(lab.ruleset())
    lab.stop_docker()
    # The reboot: the kernel forgets every rule.
    for tool in TOOLS:
        for table in ("filter", "nat"):
            lab.vps(tool, "-t", table, "-F")
            lab.vps(tool, "-t", table, "-X")
        lab.vps(tool, "-P", "INPUT", "ACCEPT")
    assert "CLAW" not in lab.ruleset()

    lab.apply_firewall()  # the boot unit's ExecStart, ordered before docker.service
    booted = lab.ruleset()
    for tool in TOOLS:
        saved = lab.vps(f"{tool}-save", "-t", "filter").stdout
        assert ":INPUT DROP" in saved
        assert _first_rule(lab, tool, "INPUT") == "-A INPUT -j CLAW-INPUT"
        assert _first_rule(lab, tool, "DOCKER-USER") == "-A DOCKER-USER -j CLAW-DOCKER"
    assert ":DOCKER -" not in booted, "Docker has not started yet"

    lab.start_docker()
    lab.start_gateway()
    for tool in TOOLS:
        assert _first_rule(lab, tool, "INPUT") == "-A INPUT -j CLAW-INPUT"
    assert _first_rule(lab, "iptables", "FORWARD") == "-A FORWARD -j DOCKER-USER"
    assert _first_rule(lab, "iptables", "DOCKER-USER") == "-A DOCKER-USER -j CLAW-DOCKER"
    assert _without_bans(lab.ruleset()) == running
    assert lab.http_status(VPS_PEER.ipv4, lab.policy.inbound.gateway_port, CLIENT.namespace, auth=True) == 200
