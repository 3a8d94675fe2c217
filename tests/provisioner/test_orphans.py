"""What a create cut off in flight left in Hetzner, deleted through Hetzner's own client against the
lab's emulation of its API; the checkpoint is shaped as the CLI writes it (pending operations of
type "creating", each with its resource's inputs and no id)."""

from __future__ import annotations

from typing import Any

from hcloud.firewalls import FirewallResource, FirewallRule
from hcloud.zones import ZoneRecord

from provisioner.orphans import RRSET, remove_orphans
from tests.hcloud_api.conftest import OTHER, Emulator, create_server
from tests.keys import public_key

LABELS = {"customer": "acme", "managed-by": "clawhosters"}
SERVER, FIREWALL, SSH_KEY = "hcloud:index/server:Server", "hcloud:index/firewall:Firewall", "hcloud:index/sshKey:SshKey"


def _resource(kind: str, name: str, **inputs: Any) -> dict[str, Any]:
    urn = f"urn:pulumi:customer-acme::clawhosters::clawhosters:index:Instance${kind}::{name}"
    return {"urn": urn, "custom": True, "type": kind, "inputs": {"name": name, **inputs}}


def _creating(resource: dict[str, Any]) -> dict[str, Any]:
    return {"resource": resource, "type": "creating"}


def test_a_server_firewall_and_key_made_by_a_cut_off_create_are_deleted(hetzner: Emulator) -> None:
    client = hetzner.client()
    key = client.ssh_keys.create(name="claw-acme-provisioning", public_key=public_key())
    rule = FirewallRule(direction="in", protocol="tcp", port="8080", source_ips=["0.0.0.0/0"])
    firewall = client.firewalls.create(name="claw-acme-baseline", rules=[rule], labels=LABELS).firewall
    server = create_server(client, "claw-acme", ssh_keys=[key], firewalls=[firewall], labels=LABELS)
    client.servers.get_by_id(server.id).change_protection(delete=True, rebuild=True).wait_until_finished()
    deployment = {
        "resources": [],
        "pending_operations": [
            _creating(_resource(SSH_KEY, "claw-acme-provisioning")),
            _creating(_resource(FIREWALL, "claw-acme-baseline", labels=LABELS)),
            _creating(_resource(SERVER, "claw-acme", labels=LABELS)),
        ],
    }
    said: list[str] = []
    removed = remove_orphans(client, deployment, said.append)
    assert removed == [
        f"server claw-acme ({server.id}), never recorded",
        f"firewall claw-acme-baseline ({firewall.id}), never recorded",
        f"ssh key claw-acme-provisioning ({key.id}), never recorded",
    ]
    assert said == [f"deleted {what}" for what in removed]
    assert client.servers.get_all() == [] and client.firewalls.get_all() == [] and client.ssh_keys.get_all() == []
    assert remove_orphans(client, deployment, said.append) == [], "a create that made nothing leaves nothing to do"


def test_what_the_state_records_or_the_create_did_not_ask_for_is_kept(hetzner: Emulator) -> None:
    client = hetzner.client()
    recorded = create_server(client, "claw-acme", labels=LABELS)
    stranger = create_server(client, "claw-globex", labels={"customer": "globex"})
    firewall = client.firewalls.create(name="claw-acme-baseline", labels=LABELS).firewall
    firewall.apply_to_resources([FirewallResource(type="server", server=recorded)])
    deployment = {
        "resources": [{**_resource(SERVER, "claw-acme", labels=LABELS), "id": str(recorded.id)}],
        "pending_operations": [
            # A replacement's create under the recorded server's name, and a name another customer holds.
            _creating(_resource(SERVER, "claw-acme", labels=LABELS)),
            _creating(_resource(SERVER, "claw-globex", labels=LABELS)),
            # Not a create: a delete or update in flight made nothing new.
            {"resource": _resource(FIREWALL, "claw-acme-baseline", labels=LABELS), "type": "deleting"},
        ],
    }
    assert remove_orphans(client, deployment, lambda _line: None) == []
    assert sorted(server.id for server in client.servers.get_all()) == sorted([recorded.id, stranger.id])
    assert [found.id for found in client.firewalls.get_all()] == [firewall.id]


def test_records_made_by_a_cut_off_create_are_deleted_with_the_dns_projects_client(hetzner: Emulator) -> None:
    """A worker killed, or the state's store unreachable, after Hetzner made a record: the next `up`
    would meet "already exists" on every attempt."""
    client, dns = hetzner.client(), hetzner.client(OTHER)  # the DNS zone lives in a project of its own
    zone = dns.zones.create(name="gateways.example", mode="primary").zone
    made = dns.zones.create_rrset(zone, name="acme", type="A", records=[ZoneRecord("203.0.113.9")], labels=LABELS)
    kept = dns.zones.create_rrset(zone, name="acme", type="AAAA", records=[ZoneRecord("2001:db8::9")], labels=LABELS)
    foreign = dns.zones.create_rrset(zone, name="www", type="A", records=[ZoneRecord("203.0.113.10")])

    def record(name: str, kind: str) -> dict[str, Any]:
        inputs = {"zone": "gateways.example", "name": name, "type": kind, "labels": LABELS}
        return {**_resource(RRSET, f"customer-acme-{name}-{kind.lower()}-record"), "inputs": inputs}

    deployment = {
        # The AAAA record's create was checkpointed; the A record's and a missing one's were not.
        "resources": [{**record("acme", "AAAA"), "id": "gateways.example/acme/AAAA"}],
        "pending_operations": [
            _creating(record("acme", "A")),
            _creating(record("acme", "AAAA")),
            _creating(record("www", "A")),
            _creating(record("absent", "A")),
        ],
    }
    assert remove_orphans(client, deployment, lambda _line: None) == [], "without the DNS project's client"
    said: list[str] = []
    assert remove_orphans(client, deployment, said.append, dns) == ["record acme/A in gateways.example, never recorded"]
    assert said == ["deleted record acme/A in gateways.example, never recorded"]
    left = {(rrset.name, rrset.type) for rrset in dns.zones.get_rrset_all(zone)}
    assert made.rrset.name is not None and (made.rrset.name, "A") not in left
    assert {(kept.rrset.name, "AAAA"), (foreign.rrset.name, "A")} <= left
