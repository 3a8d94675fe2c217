"""Refuse stack changes that would cost a customer's server its data or its cloud firewall.

The program cannot read its own previous state, so it asks Hetzner what exists, through the
provider's data sources (invokes, which run in `pulumi preview` as in `pulumi up`, before any
resource is registered): the customer's server and dedicated firewall by their labels, the shared
firewall by its id. A refusal is a ConfigError naming the setting and how to proceed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import pulumi_hcloud as hcloud

from components.cloud_firewall import rule_differences, rule_key
from config.customer import customer_labels
from config.loader import CUSTOMER_NAMESPACE, PLATFORM_NAMESPACE, ConfigError, StackSettings
from config.policy import BaselinePolicy

# Set by the platform's own tooling (fleet.stacks), which shuts a server down gracefully before a
# resize and starts it again whatever the outcome; without it a resize of a running server is
# refused, since the provider would cut its power and leave it off when Hetzner refuses the type.
GRACEFUL_RESIZE_ENV = "CLAW_GRACEFUL_RESIZE"


def label_selector(customer_id: str) -> str:
    return ",".join(f"{key}={value}" for key, value in customer_labels(customer_id).items())


@dataclass(frozen=True)
class ExistingServer:
    name: str
    location: str
    firewall_ids: frozenset[int]
    server_type: str
    disk_gb: int
    status: str


class Resizable(Protocol):
    """What decides whether Hetzner resizes a server: its name, type and disk."""

    @property
    def name(self) -> str: ...
    @property
    def server_type(self) -> str: ...
    @property
    def disk_gb(self) -> int: ...


@dataclass(frozen=True)
class OfferedType:
    """A server type as Hetzner describes it now: what it runs on, its disk, where it is sold."""

    name: str
    architecture: str
    disk_gb: int
    orderable_in: frozenset[str]


def offered_types() -> dict[str, OfferedType]:
    """Hetzner's server types as listed now; a type unavailable everywhere is no longer listed."""
    return {
        found.name: OfferedType(
            name=found.name,
            architecture=found.architecture,
            disk_gb=found.disk,
            # Unavailable where it is not sold, and everywhere once past its `unavailable_after`.
            orderable_in=frozenset(location.name for location in found.locations if location.available),
        )
        for found in hcloud.get_server_types().server_types
    }


def existing_server(customer_id: str) -> ExistingServer | None:
    """The customer's server as Hetzner has it now, or None before the first `up`."""
    servers = hcloud.get_servers(with_selector=label_selector(customer_id)).servers
    if not servers:
        return None
    if len(servers) > 1:
        names = ", ".join(sorted(server.name for server in servers))
        raise ConfigError(
            f"{CUSTOMER_NAMESPACE}:customer_id: several servers carry the labels of {customer_id!r} ({names}); "
            "resolve that by hand before running this stack"
        )
    server = servers[0]
    return ExistingServer(
        name=server.name,
        location=server.location,
        firewall_ids=frozenset(server.firewall_ids),
        server_type=server.server_type,
        disk_gb=server.primary_disk_size,
        status=server.status,
    )


def check_server_type(settings: StackSettings, server: ExistingServer | None) -> None:
    """Refuse, before anything changes, a type Hetzner would refuse (not sold here, or a resize it
    rejects after the provider has already powered the server off, which it then leaves off), and
    a resize of a running server by anyone but the platform's tooling."""
    wanted = settings.customer.server_type
    if server is not None and server.server_type == wanted:
        return  # a running server keeps its type, even one no longer sold
    refusal = server_type_refusal(wanted, settings.customer.location, server, offered_types())
    if refusal is None and server is not None and server.status != "off" and os.environ.get(GRACEFUL_RESIZE_ENV) != "1":
        refusal = (
            f"server {server.name} is {server.status}; the provider would cut its power to resize it to {wanted}. "
            f"Resize with `python -m fleet up --stack <stack>`, which shuts it down gracefully first and starts it "
            "again whatever the outcome"
        )
    if refusal is not None:
        raise ConfigError(f"{CUSTOMER_NAMESPACE}:server_type: {refusal}")


def server_type_refusal(
    wanted: str, location: str, server: Resizable | None, listed: Mapping[str, OfferedType]
) -> str | None:
    """Why Hetzner would refuse `wanted` for a new server in `location` or for `server`, if it would."""
    offered = listed.get(wanted)
    orderable_in = offered.orderable_in if offered else frozenset()
    if offered is None or location not in orderable_in:
        where = ", ".join(sorted(orderable_in)) or "no location"
        return (
            f"Hetzner does not sell {wanted} in {location} ({CUSTOMER_NAMESPACE}:location); it is orderable in "
            f"{where}. Choose a type sold in {location}"
        )
    if server is None:
        return None
    # Hetzner stops listing a type it no longer sells anywhere; every type it has retired so far was x86.
    current_architecture = listed[server.server_type].architecture if server.server_type in listed else "x86"
    if offered.architecture != current_architecture:
        return (
            f"server {server.name} is {server.server_type} ({current_architecture}); {wanted} is "
            f"{offered.architecture}, and Hetzner cannot change a server's architecture. Keep an "
            f"{current_architecture} type; moving to another architecture is a migration"
        )
    if offered.disk_gb < server.disk_gb:
        return (
            f"server {server.name} has a {server.disk_gb} GB disk; {wanted} has {offered.disk_gb} GB, and Hetzner "
            "refuses a type with a smaller disk than the server's (the disk is kept on every resize). Choose a type "
            "with at least that disk"
        )
    return None


def dedicated_firewall_ids(customer_id: str) -> frozenset[int]:
    firewalls = hcloud.get_firewalls(with_selector=label_selector(customer_id)).firewalls
    return frozenset(firewall.id for firewall in firewalls if firewall.id is not None)


def check_location(settings: StackSettings, server: ExistingServer) -> None:
    wanted = settings.customer.location
    if server.location != wanted:
        raise ConfigError(
            f"{CUSTOMER_NAMESPACE}:location: server {server.name} is in {server.location}; changing it to {wanted} "
            "would replace the server and lose the customer's data. Set it back to "
            f"{server.location}; moving a customer is a migration (README: 'Moving a customer to another location')"
        )


def check_firewall_switch(settings: StackSettings, server: ExistingServer) -> None:
    """The provider detaches removed firewalls before attaching new ones: a switch is safe only
    when at least one firewall attached now stays attached."""
    platform = settings.platform
    if not server.firewall_ids:
        return
    wanted: set[int] = set()
    if platform.firewall_mode in ("shared", "both") and platform.shared_firewall_id is not None:
        wanted.add(platform.shared_firewall_id)
    if platform.firewall_mode in ("dedicated", "both"):
        wanted |= dedicated_firewall_ids(settings.customer.customer_id)
    if server.firewall_ids & wanted:
        return
    attached = ", ".join(str(firewall_id) for firewall_id in sorted(server.firewall_ids))
    raise ConfigError(
        f"{PLATFORM_NAMESPACE}:firewall_mode: switching server {server.name} (firewalls {attached}) straight to "
        f"'{platform.firewall_mode}' would leave it without a cloud firewall between detach and attach. "
        f"Run `pulumi up` with {PLATFORM_NAMESPACE}:firewall_mode 'both' first, then "
        f"'{platform.firewall_mode}' (README: 'Switching the firewall mode')"
    )


def check_shared_firewall(settings: StackSettings, policy: BaselinePolicy) -> None:
    firewall_id = settings.platform.shared_firewall_id
    if firewall_id is None:
        return
    firewall = hcloud.get_firewall(id=firewall_id)
    actual = [
        rule_key(rule.direction, rule.protocol or "", rule.port, rule.source_ips or rule.destination_ips or [])
        for rule in firewall.rules or []
    ]
    if differences := rule_differences(actual, policy):
        raise ConfigError(
            f"{PLATFORM_NAMESPACE}:shared_firewall_id: firewall {firewall_id} ({firewall.name}) does not "
            "match the baseline; fix its rules (components/cloud_firewall.py derives them):\n    "
            + "\n    ".join(differences)
        )


def check_existing(settings: StackSettings, policy: BaselinePolicy) -> None:
    """Raise ConfigError for any change the existing resources must not undergo."""
    if settings.platform.firewall_mode in ("shared", "both"):
        check_shared_firewall(settings, policy)
    server = existing_server(settings.customer.customer_id)
    if server is not None:
        check_location(settings, server)
    check_server_type(settings, server)
    if server is not None:
        check_firewall_switch(settings, server)
