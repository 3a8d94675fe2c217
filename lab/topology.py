"""Addresses and names of the emulated world. Documentation ranges only; nothing is bridged to
the machine's uplink.

    client ─┐
  attacker ─┼─ net (router: "the internet", sinks on SINK_V4/SINK_V6) ── s<id> (the cloud's servers)
provisioner─┤
  worker-a ─┤
  worker-b ─┤
 ci-runner ─┘
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "claw-lab"
ROUTER = f"{PREFIX}-net"

SINK_V4 = "203.0.113.100"
SINK_V6 = "2001:db8:99::100"
# Services of the emulated internet, on the router: the resolver the provider's image uses, the
# Debian mirror (under the archive's own name, as the stock sources.list has it) and the registry.
DNS_V4 = "203.0.113.53"
MIRROR_V4 = "203.0.113.80"
REGISTRY_V4 = "203.0.113.81"
ARCHIVE_NAME = "deb.debian.org"
REGISTRY_NAME = "registry.lab.example"
# The platform's DNS zone at the lab's Hetzner: each customer is `<customer_id>.PLATFORM_ZONE`.
PLATFORM_ZONE = "clawhosters.example"
GATEWAY_REPOSITORY = "openclaw/gateway"
SINK_PORTS = (25, 465, 587, 2525, 6667, 6697, 194, 443)


@dataclass(frozen=True)
class Peer:
    """A namespace joined to the router by one veth pair, with one address of each family."""

    namespace: str
    ipv4: str
    router_ipv4: str
    ipv6: str
    router_ipv6: str
    prefix4: int
    prefix6: int = 64

    @property
    def link(self) -> str:
        return self.namespace.removeprefix(f"{PREFIX}-")

    @property
    def cidr4(self) -> str:
        return f"{self.ipv4}/{self.prefix4}"


CLIENT = Peer(f"{PREFIX}-client", "203.0.113.2", "203.0.113.1", "2001:db8:20::2", "2001:db8:20::1", 28)
ATTACKER = Peer(f"{PREFIX}-attacker", "203.0.113.18", "203.0.113.17", "2001:db8:30::2", "2001:db8:30::1", 28)
# The platform's own hosts: the provisioner's (its API, Redis, the state backend's object store,
# the operator's CLI) and the worker hosts that share them, each a /30 of the platform's /28.
PROVISIONER = Peer(f"{PREFIX}-prov", "203.0.113.34", "203.0.113.33", "2001:db8:40::2", "2001:db8:40::1", 30)
WORKER_HOSTS = (
    Peer(f"{PREFIX}-wa", "203.0.113.38", "203.0.113.37", "2001:db8:40:1::2", "2001:db8:40:1::1", 30),
    Peer(f"{PREFIX}-wb", "203.0.113.42", "203.0.113.41", "2001:db8:40:2::2", "2001:db8:40:2::1", 30),
)
# The pull-request workflows' runner: a host of its own (it runs a pull request's program, confined),
# joined to the provisioner's private listener by a tunnel (lab/control_plane.py).
CI_RUNNER = Peer(f"{PREFIX}-ci", "203.0.113.50", "203.0.113.49", "2001:db8:50::2", "2001:db8:50::1", 30)
PEERS = (CLIENT, ATTACKER, PROVISIONER, *WORKER_HOSTS, CI_RUNNER)
# What the baseline is told never to ban: every platform host.
PROVISIONER_CIDRS = ("203.0.113.32/28", "2001:db8:40::/48")
NAMESPACES = (ROUTER, *(peer.namespace for peer in PEERS))

# The servers of the emulated Hetzner Cloud (lab/servers.py): each in a namespace of its own, on a
# link of its own to the router. Their public addresses come from these pools (the API emulator's
# defaults), clear of the peers above. As at Hetzner, the IPv4 address is a /32 behind an on-link
# gateway (Hetzner's is 172.31.1.1; this one is on every server link) handed out by DHCP, and the
# IPv6 /64 is routed to the link, its first address the server's, behind fe80::1.
CLOUD_POOL_V4 = "198.51.100.128/25"
CLOUD_POOL_V6 = "2001:db8:1000::/36"
CLOUD_GATEWAY_V4 = "198.51.100.126"
CLOUD_GATEWAY_V6 = "fe80::1"
# The network the DHCP server answers for: the gateway and every pool address are inside it.
CLOUD_DHCP_NETWORK = "198.51.100.0/24"
METADATA_V4 = "169.254.169.254"
SERVER_NAMESPACE_PREFIX = f"{PREFIX}-s"
