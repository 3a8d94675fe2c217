"""Hetzner resources that a create cut off in flight made without the stack's state knowing.

When a CLI is killed while Hetzner makes a server (its worker host died, or the watchdog had to kill
it), the checkpoint keeps a pending create and no id. The server exists all the same, and its name is
unique in the project: every later `up` fails with "server name is already used" until it is gone.
It was never recorded, so nothing ran on it and it holds no customer data; the worker that clears the
stack deletes it, so the next attempt creates it anew. The same holds for the firewall and the SSH key
the program names, and for the customer's DNS records in the DNS project (an RRset is unique by its
zone, name and type: "already exists" otherwise).
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


RRSET = "hcloud:index/zoneRrset:ZoneRrset"


def remove_orphans(
    hetzner: Client, deployment: Mapping[str, Any], log: Callable[[str], None], dns: Client | None = None
) -> list[str]:
    """Delete what the checkpoint's pending creates made; say what was deleted. A resource the state
    records, or whose labels are not those the create asked for, is never touched. `dns`: the DNS
    project's client, for the records (None: the stack has none)."""
    resources = deployment.get("resources") or []
    recorded = {str(resource.get("id")) for resource in resources if resource.get("id")}
    creates = [
        operation.get("resource") or {}
        for operation in deployment.get("pending_operations") or []
        if operation.get("type") == "creating"
    ]
    removed = _remove_named(hetzner, creates, recorded, log)
    if dns is not None:
        removed += _remove_records(dns, creates, resources, log)
    return removed


def _remove_named(
    hetzner: Client, creates: list[dict[str, Any]], recorded: set[str], log: Callable[[str], None]
) -> list[str]:
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


def _remove_records(
    dns: Client, creates: list[dict[str, Any]], resources: list[dict[str, Any]], log: Callable[[str], None]
) -> list[str]:
    from hcloud import APIException
    from hcloud.zones import Zone

    def key(inputs: Mapping[str, Any]) -> tuple[str, str, str]:
        return (str(inputs.get("zone")), str(inputs.get("name")), str(inputs.get("type")))

    recorded = {key(resource.get("inputs") or {}) for resource in resources if resource.get("type") == RRSET}
    removed: list[str] = []
    for resource in creates:
        inputs = resource.get("inputs") or {}
        if resource.get("type") != RRSET or key(inputs) in recorded:
            continue
        zone, name, kind = key(inputs)
        try:
            found = dns.zones.get_rrset(Zone(name=zone), name, kind)  # type: ignore[arg-type]
        except APIException as error:
            if error.code == "not_found":
                continue
            raise
        if not (inputs.get("labels") or {}).items() <= (found.labels or {}).items():
            continue
        dns.zones.delete_rrset(found).action.wait_until_finished()
        removed.append(f"record {name}/{kind} in {zone}, never recorded")
        log(f"deleted {removed[-1]}")
    return removed
