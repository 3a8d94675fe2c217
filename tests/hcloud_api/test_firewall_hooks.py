"""Which firewall each server is filtered by: the backend's `apply_firewall` hook, called with the
union of the rules of every firewall that applies to the server whenever that union changes, while
the action that changed it runs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from hcloud import Client
from hcloud.firewalls import BoundFirewall, Firewall, FirewallResource, FirewallResourceLabelSelector, FirewallRule

from lab.hcloud_api.backend import FirewallRule as Enforced
from lab.hcloud_api.backend import RecordingBackend, ServerFirewall
from tests.hcloud_api.conftest import Emulator, create_server
from tests.hcloud_api.test_firewalls_and_keys import BASELINE, on_server

EVERYWHERE = ("0.0.0.0/0", "::/0")
SSH = Enforced(direction="in", protocol="tcp", port="22", source_ips=EVERYWHERE)
GATEWAY = Enforced(direction="in", protocol="tcp", port="8080", source_ips=EVERYWHERE)
PING = FirewallRule(direction="in", protocol="icmp", source_ips=["203.0.113.0/24"])
WEB_OUT = FirewallRule(direction="out", protocol="tcp", port="80-85", destination_ips=["2001:db8:99::/48"])


def by_label(selector: str) -> FirewallResource:
    return FirewallResource(type="label_selector", label_selector=FirewallResourceLabelSelector(selector))


def wait_all(client: Client, firewall: BoundFirewall) -> None:
    for action in client.firewalls.get_actions(firewall):
        action.wait_until_finished()


def calls_for(backend: RecordingBackend, server_id: int) -> list[ServerFirewall]:
    return [firewall for called, firewall in backend.firewall_calls if called == server_id]


def test_a_server_created_with_firewalls_is_filtered_before_it_boots(client: Client, emulator: Emulator) -> None:
    backend = emulator.backend
    assert isinstance(backend, RecordingBackend)
    one = client.firewalls.create(name="one", rules=BASELINE).firewall
    # The same rule in two firewalls is enforced once; the union keeps the firewalls' order.
    two = client.firewalls.create(name="two", rules=[BASELINE[0], PING]).firewall
    server = create_server(client, "guarded", firewalls=[Firewall(id=one.id), Firewall(id=two.id)])
    hooks = [hook for hook, server_id in backend.calls if server_id == server.id]
    assert hooks == ["create", "apply_firewall", "power_on"]
    ping = Enforced(direction="in", protocol="icmp", source_ips=("203.0.113.0/24",))
    assert calls_for(backend, server.id) == [ServerFirewall(firewall_ids=(one.id, two.id), rules=(SSH, GATEWAY, ping))]

    client.servers.delete(server).wait_until_finished()
    assert calls_for(backend, server.id)[-1] == ServerFirewall()


def test_apply_set_rules_and_remove_each_give_the_servers_their_new_rules(client: Client, emulator: Emulator) -> None:
    backend = emulator.backend
    assert isinstance(backend, RecordingBackend)
    first, second = create_server(client, "first"), create_server(client, "second")
    response = client.firewalls.create(name="fw", rules=BASELINE, resources=[on_server(first.id)])
    firewall = response.firewall
    for action in response.actions:
        action.wait_until_finished()
    assert backend.firewalls[first.id] == ServerFirewall(firewall_ids=(firewall.id,), rules=(SSH, GATEWAY))
    assert calls_for(backend, second.id) == [ServerFirewall()]  # its creation only

    for action in client.firewalls.apply_to_resources(firewall, [on_server(second.id)]):
        action.wait_until_finished()
    assert backend.firewalls[second.id] == backend.firewalls[first.id]

    # Outbound rules: the backend gets them as they are; denying the rest is its part.
    for action in client.firewalls.set_rules(firewall, [BASELINE[0], WEB_OUT]):
        action.wait_until_finished()
    out = Enforced(direction="out", protocol="tcp", port="80-85", destination_ips=("2001:db8:99::/48",))
    for server in (first, second):
        assert backend.firewalls[server.id] == ServerFirewall(firewall_ids=(firewall.id,), rules=(SSH, out))

    # A firewall without rules still applies: everything inbound is dropped.
    for action in client.firewalls.set_rules(firewall, []):
        action.wait_until_finished()
    assert backend.firewalls[first.id] == ServerFirewall(firewall_ids=(firewall.id,))

    before = len(calls_for(backend, second.id))
    for action in client.firewalls.remove_from_resources(firewall, [on_server(first.id)]):
        action.wait_until_finished()
    assert backend.firewalls[first.id] == ServerFirewall()
    assert len(calls_for(backend, second.id)) == before  # not concerned


def test_label_selectors_follow_the_servers_labels(client: Client, emulator: Emulator) -> None:
    backend = emulator.backend
    assert isinstance(backend, RecordingBackend)
    tagged = create_server(client, "tagged", labels={"managed-by": "clawhosters"})
    other = create_server(client, "other")
    response = client.firewalls.create(name="by-label", rules=BASELINE, resources=[by_label("managed-by=clawhosters")])
    firewall = response.firewall
    wait_all(client, firewall)
    applied = ServerFirewall(firewall_ids=(firewall.id,), rules=(SSH, GATEWAY))
    assert backend.firewalls[tagged.id] == applied
    assert calls_for(backend, other.id) == [ServerFirewall()]

    # A label change brings the server under the selector, or out of it: one action on the firewall each.
    client.servers.update(other, labels={"managed-by": "clawhosters"})
    wait_all(client, firewall)
    assert backend.firewalls[other.id] == applied
    client.servers.update(tagged, labels={})
    wait_all(client, firewall)
    assert backend.firewalls[tagged.id] == ServerFirewall()
    commands = [(a.command, [r["id"] for r in a.resources]) for a in client.firewalls.get_actions(firewall)]
    assert ("apply_firewall", [firewall.id, other.id]) in commands
    assert ("remove_firewall", [firewall.id, tagged.id]) in commands
    # A change of other labels changes no firewall.
    before = len(backend.firewall_calls)
    client.servers.update(other, labels={"managed-by": "clawhosters", "tier": "gold"})
    time.sleep(0.3)  # several action times
    assert len(backend.firewall_calls) == before

    for action in client.firewalls.remove_from_resources(firewall, [by_label("managed-by=clawhosters")]):
        action.wait_until_finished()
    assert backend.firewalls[other.id] == ServerFirewall()


class HeldFirewall(RecordingBackend):
    """apply_firewall returns only once the test lets it."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def apply_firewall(self, server_id: int, firewall: ServerFirewall) -> None:
        if firewall.firewall_ids:
            assert self.release.wait(timeout=10), "apply_firewall was never released"
        super().apply_firewall(server_id, firewall)


def test_the_action_runs_until_the_rules_are_in_force(start_emulator: Callable[..., Emulator]) -> None:
    backend = HeldFirewall()
    client = start_emulator(backend).client()
    server = create_server(client, "held")
    firewall = client.firewalls.create(name="held", rules=BASELINE).firewall
    [action] = client.firewalls.apply_to_resources(firewall, [on_server(server.id)])
    time.sleep(0.3)  # several action times
    assert client.actions.get_by_id(action.id).status == "running"
    backend.release.set()
    action.wait_until_finished()
    assert backend.firewalls[server.id].firewall_ids == (firewall.id,)


def test_a_restarted_emulator_puts_every_firewall_in_force_again(start_emulator: Callable[..., Emulator]) -> None:
    emulator = start_emulator()
    client = emulator.client()
    guarded = create_server(client, "guarded", labels={"managed-by": "clawhosters"})
    open_ = create_server(client, "open")
    firewall = client.firewalls.create(name="fw", rules=BASELINE, resources=[by_label("managed-by")]).firewall
    wait_all(client, firewall)
    emulator.stop()

    emulator.backend = RecordingBackend()
    emulator.start()
    assert sorted(emulator.backend.firewall_calls, key=lambda call: call[0]) == [
        (guarded.id, ServerFirewall(firewall_ids=(firewall.id,), rules=(SSH, GATEWAY))),
        (open_.id, ServerFirewall()),
    ]
