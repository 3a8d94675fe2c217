"""A customer's stack over its life, through the real CLI against the lab's Hetzner: changes that
would cost the server its data or its firewall refused at preview with nothing changed, a resize
without a power cut, a firewall-mode switch, a tampered program stopped by the policy pack before
its commands run, and a cancellation that leaves only the snapshot."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hcloud import Client
from hcloud.firewalls import FirewallRule
from hcloud.servers import BoundServer
from pulumi.automation import CommandError

from components.cloud_firewall import firewall_rules
from config.customer import PlatformConfig
from config.loader import StackSettings
from lab.topology import CLIENT, PLATFORM_ZONE
from lab.world import CUSTOMER_ID, REPO, STACK, Lab, wait_until

pytestmark = pytest.mark.usefixtures("restore_settings")

TAMPERED_PROGRAM = REPO / "tests" / "fixtures" / "tampered_program"
# Printed by systemd when it powers off cleanly; a machine whose power was cut never logs it.
CLEAN_STOP = "Reached target poweroff.target"


def _with_customer(lab: Lab, **changes: object) -> StackSettings:
    settings = lab.default_settings()
    return settings.model_copy(update={"customer": settings.customer.model_copy(update=changes)})


def _with_platform(lab: Lab, **changes: object) -> StackSettings:
    settings = lab.default_settings()
    platform = PlatformConfig.model_validate(settings.platform.model_dump() | changes)
    return settings.model_copy(update={"platform": platform})


def _server(lab: Lab) -> BoundServer:
    return lab.hetzner().servers.get_by_id(lab.server_id)


def _commands(server: BoundServer) -> list[str]:
    return [action.command for action in server.get_actions(sort=["id:asc"])]


def _refused(lab: Lab, settings: StackSettings, *, program_dir: Path | None = None) -> str:
    with pytest.raises(CommandError) as refusal:
        lab.preview(settings, program_dir=program_dir)
    return str(refusal.value)


def _unchanged(lab: Lab, before: BoundServer) -> None:
    after = _server(lab)
    assert (after.status, after.server_type.name, after.location.name) == (
        before.status,
        before.server_type.name,
        before.location.name,
    )
    assert _commands(after) == _commands(before), "Hetzner was asked to act on the server"


def test_a_location_change_is_refused_at_preview_naming_the_setting(lab: Lab) -> None:
    before = _server(lab)
    refusal = _refused(lab, _with_customer(lab, location="nbg1"))
    assert "clawhosters:location: server" in refusal and "is in fsn1" in refusal, refusal
    _unchanged(lab, before)


@pytest.mark.parametrize(
    ("server_type", "why"),
    [
        ("cpx11", "Hetzner does not sell cpx11 in fsn1 (clawhosters:location)"),
        ("cax11", "Hetzner cannot change a server's architecture"),
    ],
)
def test_a_type_hetzner_would_refuse_is_refused_at_preview(lab: Lab, server_type: str, why: str) -> None:
    before = _server(lab)
    refusal = _refused(lab, _with_customer(lab, server_type=server_type))
    assert "clawhosters:server_type:" in refusal and why in refusal, refusal
    _unchanged(lab, before)


def test_a_resize_shuts_down_gracefully_keeps_the_data_and_leaves_the_server_running(lab: Lab) -> None:
    port = lab.policy.inbound.gateway_port
    instance = lab.http_get(lab.ipv4, port, CLIENT.namespace, auth=True, path="/instance-id")
    before = len(_commands(_server(lab)))
    steps = lab.deploy(_with_customer(lab, server_type="cx33"))
    assert [(step.name, step.action) for step in steps if step.action != "unchanged"] == [(f"{STACK}-server", "update")]
    server = _server(lab)
    assert (server.status, server.server_type.name) == ("running", "cx33")
    # A graceful shutdown by the platform, no power cut by the provider, the type change (after
    # which Hetzner starts the server itself).
    assert _commands(server)[before:] == ["shutdown_server", "change_server_type"]
    assert CLEAN_STOP in lab.journal("-b", "-1", "-o", "cat")
    lab.wait_for_gateway()
    assert lab.http_get(lab.ipv4, port, CLIENT.namespace, auth=True, path="/instance-id") == instance


@pytest.fixture
def shared_firewall(lab: Lab) -> Iterator[int]:
    """A platform firewall with the baseline's rules, as operators create one for `shared` mode;
    afterwards the stack goes back to its dedicated firewall the way it must, through `both`."""
    rules = [
        FirewallRule(
            direction=rule.direction,
            protocol=rule.protocol,
            port=rule.port,
            source_ips=list(rule.source_ips or []),
            destination_ips=list(rule.destination_ips or []),
            description=rule.description,
        )
        for rule in firewall_rules(lab.policy)
    ]
    hetzner = lab.hetzner()
    firewall = hetzner.firewalls.create(name="platform-baseline", rules=rules).firewall
    try:
        yield firewall.id
    finally:
        lab.deploy(_with_platform(lab, firewall_mode="both", shared_firewall_id=firewall.id))
        lab.deploy(lab.default_settings())
        hetzner.firewalls.delete(firewall)


def _attached(lab: Lab) -> set[int]:
    return {attached.firewall.id for attached in _server(lab).public_net.firewalls}


def test_a_firewall_mode_switch_goes_through_both_and_the_server_is_never_unfiltered(
    lab: Lab, shared_firewall: int
) -> None:
    dedicated = int(lab.outputs["firewall_id"])
    shared = _with_platform(lab, firewall_mode="shared", shared_firewall_id=shared_firewall)
    refusal = _refused(lab, shared)
    assert "platform:firewall_mode: switching server" in refusal and "'both' first" in refusal, refusal
    assert _attached(lab) == {dedicated}
    lab.deploy(_with_platform(lab, firewall_mode="both", shared_firewall_id=shared_firewall))
    assert _attached(lab) == {dedicated, shared_firewall}
    lab.deploy(shared)
    assert _attached(lab) == {shared_firewall}
    assert lab.http_status(lab.ipv4, lab.policy.inbound.gateway_port, CLIENT.namespace) == 401
    # Straight back is refused as well; the fixture returns through `both`.
    assert "'both' first" in _refused(lab, lab.default_settings())


def test_a_tampered_program_is_stopped_by_the_pack_before_its_commands_run(lab: Lab) -> None:
    before = lab.command_inputs("baseline")["create"]
    refusal = _refused(lab, lab.default_settings(), program_dir=TAMPERED_PROGRAM)
    assert "commands-match-rendering" in refusal, refusal
    with pytest.raises(CommandError):
        lab.deploy(lab.default_settings(), program_dir=TAMPERED_PROGRAM)
    assert ":INPUT DROP" in lab.vps("iptables-save", "-t", "filter").stdout
    assert lab.command_inputs("baseline")["create"] == before


def test_cancelling_destroys_the_stack_and_keeps_only_the_snapshot(lab: Lab) -> None:
    hetzner = lab.hetzner()
    server_id = lab.server_id
    snapshot_id = lab.destroy()
    snapshot = hetzner.images.get_by_id(snapshot_id)
    assert (snapshot.type, snapshot.created_from.id) == ("snapshot", server_id)
    assert snapshot.labels["customer"] == "lab" and "expires-on" in snapshot.labels
    assert hetzner.servers.get_all() == []
    assert [firewall.name for firewall in hetzner.firewalls.get_all()] == []
    assert hetzner.ssh_keys.get_all() == []
    assert STACK not in lab.stack_names()
    # The customer's records went with the server: the name no longer resolves.
    hostname = f"{CUSTOMER_ID}.{PLATFORM_ZONE}"
    dns = Client(token=lab.dns_token, api_endpoint=lab.hetzner_endpoint)
    assert {rrset.type for rrset in dns.zones.get_rrset_all(dns.zones.get(PLATFORM_ZONE))} == {"SOA", "NS"}
    wait_until("the name to be gone", lambda: lab.resolve(hostname) == {4: [], 6: []}, timeout=10)
    # A new signup of the same customer starts from nothing; the snapshot stays; the name is the new server's.
    lab.deploy(lab.default_settings())
    assert lab.server_id != server_id
    assert hetzner.images.get_by_id(snapshot_id).id == snapshot_id
    wait_until("the name to come back", lambda: lab.resolve(hostname) == {4: [lab.ipv4], 6: [lab.ipv6]}, timeout=10)
