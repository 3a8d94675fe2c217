"""Firewalls (rules, application to servers, deletion while applied) and SSH keys."""

from __future__ import annotations

import pytest
from hcloud import APIException, Client
from hcloud.firewalls import Firewall, FirewallResource, FirewallResourceLabelSelector, FirewallRule
from hcloud.servers import Server

from tests.hcloud_api.conftest import create_server
from tests.keys import public_key

BASELINE = [
    FirewallRule(direction="in", protocol="tcp", port="22", source_ips=["0.0.0.0/0", "::/0"], description="ssh"),
    FirewallRule(direction="in", protocol="tcp", port="8080", source_ips=["0.0.0.0/0", "::/0"]),
]


def on_server(server_id: int) -> FirewallResource:
    return FirewallResource(type="server", server=Server(id=server_id))


def firewall_ids(client: Client, server_id: int) -> list[tuple[int, str]]:
    return [(f.firewall.id, f.status) for f in client.servers.get_by_id(server_id).public_net.firewalls]


def test_create_with_rules_and_apply_to(client: Client) -> None:
    server = create_server(client, "guarded")
    response = client.firewalls.create(
        name="claw-acme", rules=BASELINE, labels={"customer": "acme"}, resources=[on_server(server.id)]
    )
    assert [a.command for a in response.actions] == ["set_firewall_rules", "apply_firewall"]
    assert firewall_ids(client, server.id) == [(response.firewall.id, "pending")]
    for action in response.actions:
        action.wait_until_finished()
    assert firewall_ids(client, server.id) == [(response.firewall.id, "applied")]
    firewall = client.firewalls.get_by_id(response.firewall.id)
    assert [(r.direction, r.protocol, r.port, r.source_ips, r.destination_ips) for r in firewall.rules] == [
        ("in", "tcp", "22", ["0.0.0.0/0", "::/0"], []),
        ("in", "tcp", "8080", ["0.0.0.0/0", "::/0"], []),
    ]
    assert firewall.rules[0].description == "ssh" and firewall.rules[1].description is None
    assert [(r.type, r.server.id) for r in firewall.applied_to] == [("server", server.id)]
    assert [f.name for f in client.firewalls.get_all(label_selector="customer=acme")] == ["claw-acme"]
    assert [f.id for f in client.firewalls.get_all(name="claw-acme")] == [firewall.id]
    assert client.firewalls.get_all(label_selector="customer=other") == []


def test_server_created_with_a_firewall_and_delete_refused_while_applied(client: Client) -> None:
    firewall = client.firewalls.create(name="shared", rules=BASELINE).firewall
    server = create_server(client, "attached", firewalls=[Firewall(id=firewall.id)])
    assert firewall_ids(client, server.id) == [(firewall.id, "applied")]
    with pytest.raises(APIException) as caught:
        client.firewalls.delete(firewall)
    assert caught.value.code == "resource_in_use"
    with pytest.raises(APIException) as caught:
        client.firewalls.apply_to_resources(firewall, [on_server(server.id)])
    assert caught.value.code == "firewall_already_applied"
    actions = client.firewalls.remove_from_resources(firewall, [on_server(server.id)])
    assert [a.command for a in actions] == ["remove_firewall"]
    for action in actions:
        action.wait_until_finished()
    assert firewall_ids(client, server.id) == []
    assert client.firewalls.remove_from_resources(firewall, [on_server(server.id)]) == []  # already removed: no-op
    client.firewalls.delete(firewall)
    assert client.firewalls.get_all() == []


def test_apply_set_rules_and_unknown_resources(client: Client) -> None:
    first, second = create_server(client, "s1"), create_server(client, "s2")
    firewall = client.firewalls.create(name="fw").firewall
    for action in client.firewalls.apply_to_resources(firewall, [on_server(first.id), on_server(second.id)]):
        action.wait_until_finished()
    actions = client.firewalls.set_rules(firewall, BASELINE[:1])
    assert [a.command for a in actions] == ["set_firewall_rules", "apply_firewall", "apply_firewall"]
    assert len(client.firewalls.get_by_id(firewall.id).rules) == 1
    with pytest.raises(APIException) as caught:
        client.firewalls.apply_to_resources(firewall, [on_server(999_999_999)])
    assert caught.value.code == "firewall_resource_not_found"
    with pytest.raises(APIException) as caught:
        client.firewalls.set_rules(
            firewall, [FirewallRule(direction="in", protocol="tcp", port="22", source_ips=["not-a-net"])]
        )
    assert caught.value.code == "invalid_input"
    client.servers.delete(first).wait_until_finished()
    assert [r.server.id for r in client.firewalls.get_by_id(firewall.id).applied_to] == [second.id]


def test_label_selector_application(client: Client) -> None:
    tagged = create_server(client, "tagged", labels={"managed-by": "clawhosters"})
    create_server(client, "untagged")
    firewall = client.firewalls.create(name="by-label").firewall
    selector = FirewallResource(
        type="label_selector", label_selector=FirewallResourceLabelSelector("managed-by=clawhosters")
    )
    client.firewalls.apply_to_resources(firewall, [selector])
    [entry] = client.firewalls.get_by_id(firewall.id).applied_to
    assert entry.label_selector.selector == "managed-by=clawhosters"
    assert [r.server.id for r in entry.applied_to_resources] == [tagged.id]
    assert firewall_ids(client, tagged.id) == [(firewall.id, "applied")]
    with pytest.raises(APIException) as caught:
        client.firewalls.remove_from_resources(firewall, [on_server(tagged.id)])
    assert caught.value.code == "firewall_managed_by_label_selector"


def test_firewall_update_and_name_uniqueness(client: Client) -> None:
    firewall = client.firewalls.create(name="one").firewall
    client.firewalls.create(name="two")
    assert client.firewalls.update(firewall, name="uno", labels={"a": "b"}).name == "uno"
    with pytest.raises(APIException) as caught:
        client.firewalls.update(firewall, name="two")
    assert caught.value.code == "uniqueness_error"
    with pytest.raises(APIException) as caught:
        client.firewalls.get_by_id(123)
    assert caught.value.code == "not_found"


def test_ssh_keys(client: Client) -> None:
    key = client.ssh_keys.create(name="prov", public_key=public_key(comment="key-one"), labels={"customer": "acme"})
    assert key.fingerprint.count(":") == 15 and key.public_key == public_key(comment="key-one")
    assert client.ssh_keys.get_by_id(key.id).name == "prov"
    assert client.ssh_keys.get_by_name("prov").id == key.id
    assert client.ssh_keys.get_by_fingerprint(key.fingerprint).id == key.id
    assert [k.id for k in client.ssh_keys.get_all(label_selector="customer=acme")] == [key.id]
    for name, material, field in (
        ("prov", public_key(comment="key-two"), "name"),
        ("other", public_key(comment="key-one"), "public_key"),
    ):
        with pytest.raises(APIException) as caught:
            client.ssh_keys.create(name=name, public_key=material)
        assert caught.value.code == "uniqueness_error" and caught.value.details["fields"] == [{"name": field}]
    with pytest.raises(APIException) as caught:
        client.ssh_keys.create(name="broken", public_key="ssh-ed25519 not-base64!")
    assert caught.value.code == "invalid_input" and caught.value.details["fields"][0]["name"] == "public_key"
    assert client.ssh_keys.update(key, name="renamed").name == "renamed"
    client.ssh_keys.delete(key)
    assert client.ssh_keys.get_all() == []
