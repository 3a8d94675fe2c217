"""Hetzner Cloud firewall rules derived from the baseline policy.

Hetzner firewalls are stateful. With no outbound rule all egress is allowed; with one, everything
not allowed is denied. Blocking SMTP/IRC therefore means allowing the complementary TCP ranges,
plus UDP and ICMP, explicitly.
"""

from __future__ import annotations

import pulumi_hcloud as hcloud

from config.policy import MAX_PORT, BaselinePolicy

ANYWHERE = ["0.0.0.0/0", "::/0"]
# Hetzner's API limits: rule entries per firewall, and entries times their address ranges.
MAX_RULES = 50
MAX_EFFECTIVE_RULES = 500


def _port_text(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}-{last}"


def inbound_rules(policy: BaselinePolicy) -> list[hcloud.FirewallRuleArgs]:
    return [
        hcloud.FirewallRuleArgs(
            direction="in",
            protocol="tcp",
            port=str(port),
            source_ips=list(policy.inbound.source_cidrs),
            description=f"baseline: inbound tcp/{port}",
        )
        for port in policy.inbound.open_tcp_ports
    ]


def outbound_rules(policy: BaselinePolicy) -> list[hcloud.FirewallRuleArgs]:
    blocked = ", ".join(str(port) for port in policy.egress.blocked_tcp_ports)
    tcp = [
        hcloud.FirewallRuleArgs(
            direction="out",
            protocol="tcp",
            port=_port_text(first, last),
            destination_ips=ANYWHERE,
            description=f"baseline: outbound tcp except {blocked}",
        )
        for first, last in policy.egress.allowed_tcp_ranges
    ]
    return [
        *tcp,
        hcloud.FirewallRuleArgs(
            direction="out",
            protocol="udp",
            port=_port_text(1, MAX_PORT),
            destination_ips=ANYWHERE,
            description="baseline: outbound udp",
        ),
        hcloud.FirewallRuleArgs(
            direction="out", protocol="icmp", destination_ips=ANYWHERE, description="baseline: outbound icmp"
        ),
    ]


def firewall_rules(policy: BaselinePolicy) -> list[hcloud.FirewallRuleArgs]:
    rules = inbound_rules(policy) + outbound_rules(policy)
    effective = sum(len(rule.source_ips or rule.destination_ips or []) for rule in rules)
    if len(rules) > MAX_RULES or effective > MAX_EFFECTIVE_RULES:
        raise ValueError(
            f"the policy needs {len(rules)} firewall rules ({effective} effective); Hetzner allows "
            f"{MAX_RULES} ({MAX_EFFECTIVE_RULES} effective)"
        )
    return rules
