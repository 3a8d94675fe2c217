"""Hetzner resources that a create cut off in flight made without the stack's state knowing.

When a CLI is killed while Hetzner makes a server (its worker host died, or the watchdog had to kill
it), the checkpoint keeps a pending create and no id. The server exists all the same, and its name is
unique in the project: every later `up` fails with "server name is already used" until it is gone.
It was never recorded, so nothing ran on it and it holds no customer data; the worker that clears the
stack deletes it, so the next attempt creates it anew. The same holds for the firewall and the SSH key
the program names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hcloud import Client

# The program's named resources, servers first: a firewall cannot be deleted while it is attached.
NAMED = (
    ("hcloud:index/server:Server", "servers"),
    ("hcloud:index/firewall:Firewall", "firewalls"),
    ("hcloud:index/sshKey:SshKey", "ssh_keys"),
)


def remove_orphans(hetzner: Client, deployment: Mapping[str, Any], log: Callable[[str], None]) -> list[str]:
    """Delete what the checkpoint's pending creates made; say what was deleted. A resource the state
    records, or whose labels are not those the create asked for, is never touched."""
    recorded = {str(resource.get("id")) for resource in deployment.get("resources") or [] if resource.get("id")}
    creates = [
        operation.get("resource") or {}
        for operation in deployment.get("pending_operations") or []
        if operation.get("type") == "creating"
    ]
    removed: list[str] = []
    for resource_type, collection in NAMED:
        for resource in creates:
            inputs = resource.get("inputs") or {}
            if resource.get("type") != resource_type or not inputs.get("name"):
                continue
            found = getattr(hetzner, collection).get_by_name(inputs["name"])
            wanted = (inputs.get("labels") or {}).items()
            if found is None or str(found.id) in recorded or not wanted <= (found.labels or {}).items():
                continue
            if collection == "servers":
                if found.protection.get("delete") or found.protection.get("rebuild"):
                    found.change_protection(delete=False, rebuild=False).wait_until_finished()
                found.delete().wait_until_finished()
            else:
                found.delete()
            removed.append(f"{collection[:-1].replace('_', ' ')} {inputs['name']} ({found.id}), never recorded")
            log(f"deleted {removed[-1]}")
    return removed
