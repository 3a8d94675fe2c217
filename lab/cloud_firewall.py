"""Hetzner's cloud firewall, enforced on the lab's router: one nftables table of its own in
`claw-lab-net`, a pair of chains per server keyed by the router's end of its link (`cs<id>`).

Traffic to a server leaves the router through that link (forwarded, or from the router's own
services: the sinks, the mirror), traffic from it arrives through it; two verdict maps send each
packet of a server's link to its `<link>-in` or `<link>-out` chain and nothing else, so the lab's
other namespaces, which route through the same router on links of their own, are never matched.
A chain `return`s what its rules allow (the next check, or the router, decides) and drops the rest,
as Hetzner does (docs.hetzner.com/cloud/firewalls/faq):
- with a firewall applied, inbound traffic that no `in` rule allows is dropped, without a reply;
- outbound traffic is allowed unless a firewall has an `out` rule; then what no `out` rule allows
  is dropped;
- stateful: replies to allowed traffic (and ICMP errors about it) pass both ways;
- traffic of Hetzner's own services to the server is always allowed: here DHCP, the metadata
  service, the resolver it hands out, and IPv6 neighbour discovery with the gateway.

Each change is one `nft -f` transaction: the table's frame re-declared (its dispatch rules flushed
and added again) with the server's chains, so a server is never seen half filtered.
"""

from __future__ import annotations

import ipaddress
import subprocess

from lab import topology
from lab.hcloud_api.backend import FirewallRule, MachineError, ServerFirewall

TABLE = "claw-lab-cloud-firewall"
_T = f"inet {TABLE}"
# ICMPv6 a link needs to work at all (RFC 4861): never the firewall's business.
_NEIGHBOUR_DISCOVERY = (
    "icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } return"
)
_FRAME = (
    f"add table {_T}",
    f"add map {_T} inbound {{ type ifname : verdict; }}",
    f"add map {_T} outbound {{ type ifname : verdict; }}",
    *(
        f"add chain {_T} {hook} {{ type filter hook {hook} priority filter; policy accept; }}\nflush chain {_T} {hook}"
        for hook in ("forward", "input", "output")
    ),
    f"add rule {_T} forward oifname vmap @inbound",
    f"add rule {_T} forward iifname vmap @outbound",
    f"add rule {_T} input iifname vmap @outbound",
    f"add rule {_T} output oifname vmap @inbound",
)
_ALWAYS_IN = ("ct state established,related return", _NEIGHBOUR_DISCOVERY, "udp sport 67 udp dport 68 return")
_ALWAYS_OUT = (
    "ct state established,related return",
    _NEIGHBOUR_DISCOVERY,
    "udp sport 68 udp dport 67 return",
    f"ip daddr {topology.METADATA_V4} tcp dport 80 return",
    f"ip daddr {topology.DNS_V4} meta l4proto {{ tcp, udp }} th dport 53 return",
)


def _statements(rule: FirewallRule) -> list[str]:
    """What `rule` allows, one statement per address family it names."""
    inbound = rule.direction == "in"
    networks = [ipaddress.ip_network(text) for text in (rule.source_ips if inbound else rule.destination_ips)]
    port = f" th dport {rule.port}" if rule.port not in (None, "any") else ""
    statements = []
    for version, family, nfproto, icmp in ((4, "ip", "ipv4", "icmp"), (6, "ip6", "ipv6", "ipv6-icmp")):
        own = list(ipaddress.collapse_addresses(n for n in networks if n.version == version))
        if not own:
            continue
        if own[0].prefixlen == 0:
            addresses = f"meta nfproto {nfproto}"
        else:
            addresses = f"{family} {'saddr' if inbound else 'daddr'} {{ {', '.join(map(str, own))} }}"
        protocol = icmp if rule.protocol == "icmp" else rule.protocol
        statements.append(f"{addresses} meta l4proto {protocol}{port} return")
    return statements


def _chain(name: str, always: tuple[str, ...], rules: list[FirewallRule]) -> list[str]:
    body = [*always, *(s for rule in rules for s in _statements(rule)), "drop"] if always else []
    return [f"add chain {_T} {name}", f"flush chain {_T} {name}", *(f"add rule {_T} {name} {s}" for s in body)]


def script(link: str, firewall: ServerFirewall) -> str:
    """The transaction that makes `firewall` what filters the server on `link`."""
    inbound, outbound = f"{link}-in", f"{link}-out"
    elements = [
        f'add element {_T} inbound {{ "{link}" : jump {inbound} }}',
        f'add element {_T} outbound {{ "{link}" : jump {outbound} }}',
    ]
    if firewall.firewall_ids:
        out_rules = [rule for rule in firewall.rules if rule.direction == "out"]
        in_rules = [rule for rule in firewall.rules if rule.direction == "in"]
        # No out rule: an empty chain, which returns everything.
        chains = _chain(inbound, _ALWAYS_IN, in_rules) + _chain(outbound, _ALWAYS_OUT if out_rules else (), out_rules)
        return "\n".join([*_FRAME, *chains, *elements]) + "\n"
    # Unfiltered: no chains. Declared first, so removing them is the same whether they were there or not.
    chains = [f"add chain {_T} {inbound}", f"add chain {_T} {outbound}"]
    removal = [
        f'delete element {_T} inbound {{ "{link}" }}',
        f'delete element {_T} outbound {{ "{link}" }}',
        *(f"flush chain {_T} {name}\ndelete chain {_T} {name}" for name in (inbound, outbound)),
    ]
    return "\n".join([*_FRAME, *chains, *elements, *removal]) + "\n"


def _nft(arguments: list[str], text: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    command = ["ip", "netns", "exec", topology.ROUTER, "nft", *arguments]
    result = subprocess.run(command, input=text, capture_output=True, text=True, timeout=30, check=False)
    if check and result.returncode != 0:
        raise MachineError(f"nft {' '.join(arguments)} in {topology.ROUTER}: {result.stderr.strip()[-1000:]}")
    return result


def apply(link: str, firewall: ServerFirewall) -> None:
    _nft(["-f", "-"], script(link, firewall))


def ruleset() -> str:
    """The table as nft lists it (empty when there is none)."""
    return _nft(["list", "table", *_T.split()], check=False).stdout


def remove_table() -> None:
    _nft(["delete", "table", *_T.split()], check=False)
