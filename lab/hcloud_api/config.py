"""The emulator's settings: where state lives, where it listens, which tokens open which project."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator

from config.hetzner import HETZNER
from lab import topology

# terraform-provider-hcloud refuses any token that is not 64 characters long; Hetzner's are
# alphanumeric. A token the provider would refuse is refused here too, at start.
_TOKEN = re.compile(r"[A-Za-z0-9]{64}")
# Documentation ranges only (RFC 5737, RFC 3849); 192.0.2.0/24 is left to the machine's uplink.
_IPV4_RANGES = tuple(ipaddress.IPv4Network(net) for net in ("198.51.100.0/24", "203.0.113.0/24"))
_IPV6_RANGE = ipaddress.IPv6Network("2001:db8::/32")


def _documentation_v4(pool: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
    if not any(pool.subnet_of(allowed) for allowed in _IPV4_RANGES):
        raise ValueError(f"{pool} is not inside 198.51.100.0/24 or 203.0.113.0/24")
    return pool


def _documentation_v6(pool: ipaddress.IPv6Network) -> ipaddress.IPv6Network:
    if not pool.subnet_of(_IPV6_RANGE) or pool.prefixlen > 64:
        raise ValueError(f"{pool} is not a /64 or larger inside 2001:db8::/32")
    return pool


class _Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Token(_Settings):
    project: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]
    token: SecretStr
    # Hetzner's "Read" permission: GET requests only; anything else is a 403 `token_readonly`.
    read_only: bool = False

    @field_validator("token")
    @classmethod
    def _sixty_four(cls, token: SecretStr) -> SecretStr:
        if _TOKEN.fullmatch(token.get_secret_value()) is None:
            raise ValueError("a token is 64 letters and digits (the hcloud provider refuses others)")
        return token


class RateLimit(_Settings):
    """Hetzner's bucket: `limit` requests, refilled by `refill_per_second`, per project."""

    limit: Annotated[int, Field(gt=0)] = 3600
    refill_per_second: Annotated[float, Field(gt=0)] = 1.0


class AddressPools(_Settings):
    """Where servers' public addresses come from: by default the lab's server pools, clear of the
    lab's other addresses, so that its machines can be reached at them (lab/servers.py)."""

    ipv4: Annotated[ipaddress.IPv4Network, AfterValidator(_documentation_v4)] = ipaddress.IPv4Network(
        topology.CLOUD_POOL_V4
    )
    ipv6: Annotated[ipaddress.IPv6Network, AfterValidator(_documentation_v6)] = ipaddress.IPv6Network(
        topology.CLOUD_POOL_V6
    )


class SoldOut(_Settings):
    """A server type Hetzner has run out of in a location (it must sell it there)."""

    server_type: str
    location: str

    @field_validator("location")
    @classmethod
    def _sold_there(cls, location: str, info: ValidationInfo) -> str:
        name = info.data.get("server_type", "")
        server_type = HETZNER.server_type(name)
        if server_type is None or server_type.name != name:
            raise ValueError(f"{name!r} is not a server type of the catalogue")
        if location not in server_type.locations:
            raise ValueError(f"{name} is not sold in {location!r} ({', '.join(server_type.locations)})")
        return location


class StockChange(_Settings):
    """The body of PUT /_lab/stock: what Hetzner has run out of from now on."""

    sold_out: tuple[SoldOut, ...]


class EmulatorConfig(_Settings):
    state_dir: Path
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    tokens: tuple[Token, ...] = ()
    rate_limit: RateLimit = RateLimit()
    pools: AddressPools = AddressPools()
    # How long an action stays `running` at least, as Hetzner's take a moment too.
    action_seconds: Annotated[float, Field(ge=0)] = 0.5
    # What Hetzner has run out of when the emulator starts (the lab changes it at PUT /_lab/stock).
    sold_out: tuple[SoldOut, ...] = ()
    # Where each primary DNS zone's A and AAAA records are published as a hosts file (lab/hcloud_api/zones.py).
    dns_hosts_dir: Path | None = None

    @field_validator("tokens")
    @classmethod
    def _distinct(cls, tokens: tuple[Token, ...]) -> tuple[Token, ...]:
        secrets = [token.token.get_secret_value() for token in tokens]
        if len(set(secrets)) != len(secrets):
            raise ValueError("a token opens one project only")
        return tokens
