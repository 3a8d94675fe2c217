"""Hetzner Cloud firewall rules derived from the baseline policy.

Hetzner firewalls are stateful. With no outbound rule all egress is allowed; with one, everything
not allowed is denied. Blocking SMTP/IRC therefore means allowing the complementary TCP ranges,
plus every other protocol Hetzner filters (UDP, ICMP, ESP, GRE), explicitly.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

import pulumi_hcloud as hcloud

from config.policy import MAX_PORT, BaselinePolicy

ANYWHERE = ["0.0.0.0/0", "::/0"]
# Hetzner's API limits: rule entries per firewall, and entries times their address ranges.
MAX_RULES = 50
MAX_EFFECTIVE_RULES = 500
# Hetzner's firewall protocols besides tcp and udp; none of them has ports.
PORTLESS_PROTOCOLS = ("icmp", "esp", "gre")


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
        # Portless protocols (VPN tunnels need ESP and GRE); the contract blocks only SMTP and IRC.
        *(
            hcloud.FirewallRuleArgs(
                direction="out",
                protocol=protocol,
                destination_ips=ANYWHERE,
                description=f"baseline: outbound {protocol}",
            )
            for protocol in PORTLESS_PROTOCOLS
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


# A rule as Hetzner compares it: direction, protocol, port and the set of networks.
RuleKey = tuple[str, str, str, frozenset[str]]


def rule_key(direction: str, protocol: str, port: str | None, networks: Iterable[str]) -> RuleKey:
    return (direction, protocol, port or "", frozenset(str(ipaddress.ip_network(net)) for net in networks))


def _key_text(key: RuleKey) -> str:
    direction, protocol, port, networks = key
    peer = "from" if direction == "in" else "to"
    return f"{direction} {protocol}{f' {port}' if port else ''} {peer} {', '.join(sorted(networks))}"


def rule_differences(actual: Iterable[RuleKey], policy: BaselinePolicy) -> list[str]:
    """What an existing firewall's rules lack or add compared with the policy's, one line each."""
    expected = {
        rule_key(rule.direction, rule.protocol, rule.port, rule.source_ips or rule.destination_ips or [])  # type: ignore[arg-type]
        for rule in firewall_rules(policy)
    }
    found = set(actual)
    return [f"missing: {_key_text(key)}" for key in sorted(expected - found, key=_key_text)] + [
        f"unexpected: {_key_text(key)}" for key in sorted(found - expected, key=_key_text)
    ]
