"""Resources as the API shows them: every field hcloud-python's domain classes and hcloud-go's schema read."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from lab.hcloud_api import catalog
from lab.hcloud_api.catalog import Stock, SystemImage, timestamp
from lab.hcloud_api.labels import parse_selector
from lab.hcloud_api.records import (
    ActionRecord,
    AppliedTo,
    FirewallRecord,
    ImageRecord,
    ProjectState,
    ServerRecord,
    SshKeyRecord,
)

Json = dict[str, Any]


def action_view(action: ActionRecord) -> Json:
    return {
        "id": action.id,
        "command": action.command,
        "status": action.status,
        "progress": action.progress,
        "started": timestamp(action.started),
        "finished": timestamp(action.finished) if action.finished else None,
        "resources": [resource.model_dump() for resource in action.resources],
        "error": action.error.model_dump() if action.error else None,
    }


def system_image_view(image: SystemImage) -> Json:
    return {
        "id": image.id,
        "type": "system",
        "status": "available",
        "name": image.name,
        "description": image.description,
        "image_size": None,
        "disk_size": image.disk_size,
        "created": timestamp(image.created),
        "created_from": None,
        "bound_to": None,
        "os_flavor": image.os_flavor,
        "os_version": image.os_version,
        "architecture": image.architecture,
        "rapid_deploy": True,
        "protection": {"delete": False},
        "deprecated": None,
        "deprecation": None,
        "deleted": None,
        "labels": {},
    }


def own_image_view(image: ImageRecord) -> Json:
    """A snapshot or a backup (`bound_to` its server), as Hetzner shows a project's own images."""
    return {
        "id": image.id,
        "type": image.type,
        "status": image.status,
        "name": None,
        "description": image.description,
        "image_size": image.image_size,
        "disk_size": image.disk_size,
        "created": timestamp(image.created),
        "created_from": {"id": image.created_from_id, "name": image.created_from_name},
        "bound_to": image.bound_to,
        "os_flavor": image.os_flavor,
        "os_version": image.os_version,
        "architecture": image.architecture,
        "rapid_deploy": False,
        "protection": {"delete": image.delete_protection},
        "deprecated": None,
        "deprecation": None,
        "deleted": None,
        "labels": image.labels,
    }


def image_view(project: ProjectState, image_id: int | None) -> Json | None:
    if image_id is None:
        return None
    if (system := catalog.system_image_by_id(image_id)) is not None:
        return system_image_view(system)
    own = project.images.get(image_id)
    return own_image_view(own) if own else None


def ssh_key_view(key: SshKeyRecord) -> Json:
    return {
        "id": key.id,
        "name": key.name,
        "fingerprint": key.fingerprint,
        "public_key": key.public_key,
        "labels": key.labels,
        "created": timestamp(key.created),
    }


def applies_to(entry: AppliedTo, server: ServerRecord) -> bool:
    if entry.type == "server":
        return entry.server_id == server.id
    assert entry.selector is not None
    return parse_selector(entry.selector)(server.labels)


def covering(project: ProjectState, server: ServerRecord) -> list[FirewallRecord]:
    """The firewalls that apply to `server`, directly or through a label selector."""
    return [fw for fw in project.firewalls.values() if any(applies_to(entry, server) for entry in fw.applied_to)]


def firewall_view(project: ProjectState, firewall: FirewallRecord) -> Json:
    applied: list[Json] = []
    for entry in firewall.applied_to:
        if entry.type == "server":
            applied.append({"type": "server", "server": {"id": entry.server_id}})
            continue
        matching = [s for s in project.servers.values() if applies_to(entry, s)]
        applied.append(
            {
                "type": "label_selector",
                "label_selector": {"selector": entry.selector},
                "applied_to_resources": [{"type": "server", "server": {"id": s.id}} for s in matching],
            }
        )
    return {
        "id": firewall.id,
        "name": firewall.name,
        "labels": firewall.labels,
        "created": timestamp(firewall.created),
        "rules": [rule.model_dump() for rule in firewall.rules],
        "applied_to": applied,
    }


def server_firewalls(project: ProjectState, server: ServerRecord) -> list[Json]:
    pending = {
        (action.step.firewall_id, action.step.server_id)
        for action in project.actions.values()
        if action.status == "running" and action.command == "apply_firewall" and action.step is not None
    }
    return [
        {"id": fw.id, "status": "pending" if (fw.id, server.id) in pending else "applied"}
        for fw in covering(project, server)
    ]


def server_view(project: ProjectState, server: ServerRecord, now: datetime, stock: Stock) -> Json:
    """A server as Hetzner shows it since 2026-07-01: its location, no datacenter."""
    server_type = catalog.server_type_by_id(server.server_type_id)
    location = catalog.location_named(server.location)
    ipv4 = None
    if server.ipv4 is not None:
        reverse = ".".join(reversed(server.ipv4.split(".")))
        ipv4 = {
            "id": server.ipv4_id,
            "ip": server.ipv4,
            "blocked": False,
            "dns_ptr": f"static.{reverse}.clients.your-server.de",
        }
    ipv6 = None
    if server.ipv6_network is not None:
        ipv6 = {"id": server.ipv6_id, "ip": server.ipv6_network, "blocked": False, "dns_ptr": []}
    return {
        "id": server.id,
        "name": server.name,
        "status": server.status,
        "created": timestamp(server.created),
        "public_net": {
            "ipv4": ipv4,
            "ipv6": ipv6,
            "floating_ips": [],
            "firewalls": server_firewalls(project, server),
        },
        "private_net": [],
        "server_type": catalog.server_type_view(server_type, now, stock),
        "location": catalog.location_view(location),
        "image": image_view(project, server.image_id),
        "iso": None,
        "rescue_enabled": False,
        "locked": False,
        "backup_window": server.backup_window,
        "outgoing_traffic": 0,
        "ingoing_traffic": 0,
        "included_traffic": catalog.included_traffic(server.location),
        "protection": {"delete": server.delete_protection, "rebuild": server.rebuild_protection},
        "labels": server.labels,
        "volumes": [],
        "load_balancers": [],
        "primary_disk_size": server.primary_disk_size,
        "placement_group": None,
    }
