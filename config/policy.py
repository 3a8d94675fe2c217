"""The network baseline every customer instance gets: the single source of its numbers.

The cloud firewall, the host packet filter, fail2ban, the tests and the README's table are all
derived from `BaselinePolicy()`. Nothing a customer or a stack setting provides can change it.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, IPvAnyAddress, model_validator

Port = Annotated[int, Field(ge=1, le=65535)]
MAX_PORT = 65535


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BlockedService(_Frozen):
    """A family of outbound TCP ports that neither the host nor its containers may reach."""

    name: str
    tcp_ports: tuple[Port, ...]


class InboundPolicy(_Frozen):
    ssh_port: Port = 22
    gateway_port: Port = 8080
    # The gateway's metrics listener: reachable from inside the VPS only, never published.
    metrics_port: Port = 9090
    # The cloud firewall admits the open ports from everywhere, both address families.
    source_cidrs: tuple[str, ...] = ("0.0.0.0/0", "::/0")

    @property
    def open_tcp_ports(self) -> tuple[int, ...]:
        return (self.ssh_port, self.gateway_port)

    @model_validator(mode="after")
    def _metrics_never_open(self) -> InboundPolicy:
        if self.metrics_port in self.open_tcp_ports:
            raise ValueError("metrics_port must not be one of the open inbound ports")
        return self


class EgressPolicy(_Frozen):
    blocked: tuple[BlockedService, ...] = (
        BlockedService(name="SMTP", tcp_ports=(25, 465, 587, 2525)),
        BlockedService(name="IRC", tcp_ports=(6667, 6697, 194)),
    )
    # Blocked egress is refused locally (TCP reset) so the customer's app fails at once, and
    # logged, rate-limited, for abuse detection.
    log_prefix: str = Field(default="EGRESS_BLOCKED: ", max_length=29)
    log_rate_per_minute: int = Field(default=10, ge=1)
    log_burst: int = Field(default=5, ge=1)

    @property
    def blocked_tcp_ports(self) -> tuple[int, ...]:
        return tuple(sorted({port for service in self.blocked for port in service.tcp_ports}))

    @property
    def allowed_tcp_ranges(self) -> tuple[tuple[int, int], ...]:
        """The complement of the blocked ports in 1..65535, as inclusive (first, last) ranges."""
        ranges: list[tuple[int, int]] = []
        start = 1
        for port in self.blocked_tcp_ports:
            if port > start:
                ranges.append((start, port - 1))
            start = port + 1
        if start <= MAX_PORT:
            ranges.append((start, MAX_PORT))
        return tuple(ranges)


class SynGuardPolicy(_Frozen):
    """Per-source limit on new inbound TCP connections (a global limit would let one flood
    starve every legitimate user)."""

    rate_per_second: int = Field(default=30, ge=1)
    burst: int = Field(default=60, ge=1)
    # Sources are grouped by these prefixes: a single IPv6 host usually owns a whole /64.
    ipv4_source_prefix: int = Field(default=32, ge=8, le=32)
    ipv6_source_prefix: int = Field(default=64, ge=16, le=128)
    log_prefix: str = Field(default="PORTSCAN_BLOCKED: ", max_length=29)
    # The LOG itself is rate-limited, or a flood fills the disk.
    log_rate_per_minute: int = Field(default=10, ge=1)
    log_burst: int = Field(default=5, ge=1)


class Fail2banPolicy(_Frozen):
    jail: str = "sshd"
    maxretry: int = Field(default=3, ge=1)
    findtime_seconds: int = Field(default=600, ge=1)
    bantime_seconds: int = Field(default=3600, ge=1)
    # Debian 12 has no auth.log: sshd failures are read from the journal.
    backend: str = "systemd"


class MetadataPolicy(_Frozen):
    """Hetzner's metadata service serves the server's user_data (with the host's SSH private key)
    for the server's whole life. Only root on the host reaches it (cloud-init needs it at boot);
    containers and other host users are refused."""

    # IPv4, and the IPv6 link-local address cloud-init's Hetzner datasource tries first.
    addresses: tuple[IPvAnyAddress, ...] = (
        ipaddress.IPv4Address("169.254.169.254"),
        ipaddress.IPv6Address("fe80::a9fe:a9fe"),
    )

    def addresses_of(self, family: int) -> tuple[str, ...]:
        return tuple(str(address) for address in self.addresses if address.version == family)


class DriftPolicy(_Frozen):
    """How each VPS keeps its baseline: a timer compares the live host with the installed bundle
    and re-asserts the baseline when they differ."""

    check_interval_seconds: int = Field(default=300, ge=5, le=86400)
    # The first check after boot (or after the timer is installed): Docker and the gateway are up by then.
    first_check_seconds: int = Field(default=60, ge=1, le=3600)
    # A difference counts only if it is still there this much later: Docker rewrites its FORWARD
    # jump (delete, then insert) when it creates a network.
    confirm_seconds: float = Field(default=1.0, ge=0, le=30)


class BaselinePolicy(_Frozen):
    """The contract. Its defaults are the baseline; there is no per-customer variant."""

    inbound: InboundPolicy = InboundPolicy()
    egress: EgressPolicy = EgressPolicy()
    syn_guard: SynGuardPolicy = SynGuardPolicy()
    fail2ban: Fail2banPolicy = Fail2banPolicy()
    metadata: MetadataPolicy = MetadataPolicy()
    drift: DriftPolicy = DriftPolicy()

    @model_validator(mode="after")
    def _open_ports_not_blocked(self) -> BaselinePolicy:
        overlap = set(self.inbound.open_tcp_ports) & set(self.egress.blocked_tcp_ports)
        if overlap:
            raise ValueError(f"ports {sorted(overlap)} are both open inbound and blocked outbound")
        return self
