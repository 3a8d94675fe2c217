"""The real hcloud provider against the lab's emulation of Hetzner's API, through the real CLI.

What the emulator answers is what the provider parses and acts on: a create Hetzner cannot place
refused with `resource_unavailable`, a server created with its SSH key and firewall (servers as Hetzner
shows them since 2026-07-01: a location, no datacenter), refreshed without a change, a resize through
the provider's own poweroff and change_type, a destroy, and the requests each step costs; a DNS zone
and its record written by a second provider with another project's token, changed and destroyed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.engine.test_engine import Cli
from tests.engine.test_engine import cli as cli  # a fixture, used by name
from tests.hcloud_api.conftest import ACME, OTHER, Emulator


@pytest.fixture
def cloud(tmp_path: Path, cli: Cli) -> Iterator[Emulator]:
    emulator = Emulator(tmp_path / "hetzner", {"action_seconds": 0.2})
    emulator.start()
    public_key = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    for key, value in {"hcloud:endpoint": f"{emulator.url}/v1", "hcloud:pollInterval": "100ms"}.items():
        cli.run("config", "set", key, value)
    cli.run("config", "set", "--secret", "hcloud:token", ACME)
    cli.run("config", "set", "ssh_public_key", public_key)
    yield emulator
    emulator.stop()


def requests_made(emulator: Emulator) -> int:
    return sum(token["requests"] for token in emulator.get("/_lab/requests").json()["tokens"])


def test_the_provider_creates_resizes_and_destroys_a_server_on_the_lab_cloud(cli: Cli, cloud: Emulator) -> None:
    cli.run("config", "set", "read_hcloud", "true")
    cli.run("config", "set", "cloud", "true")
    hetzner = cloud.client()
    stock = f"{cloud.url}/_lab/stock"
    requests.put(stock, json={"sold_out": [{"server_type": "cx23", "location": "fsn1"}]}, timeout=10).raise_for_status()
    unplaced = cli.run("up", "--yes", check=False)
    assert unplaced.returncode != 0 and "resource_unavailable" in unplaced.stdout + unplaced.stderr, unplaced.stdout
    assert hetzner.servers.get_all() == []
    requests.put(stock, json={"sold_out": []}, timeout=10).raise_for_status()
    cli.run("up", "--yes")
    outputs = json.loads(cli.run("stack", "output", "--json").stdout)
    server = hetzner.servers.get_by_id(int(outputs["server_id"]))
    assert (server.server_type.name, server.status, server.location.name) == ("cx23", "running", "fsn1")
    cli.run("refresh", "--yes", "--expect-no-changes")
    assert [firewall.firewall.name for firewall in server.public_net.firewalls] == [hetzner.firewalls.get_all()[0].name]
    assert outputs["ipv4_address"] == server.public_net.ipv4.ip

    before = requests_made(cloud)
    cli.run("up", "--yes", "--expect-no-changes")
    assert requests_made(cloud) > before, "a no-op up still reads the cloud"

    cli.run("config", "set", "server_type", "cx33")
    cli.run("up", "--yes")
    resized = hetzner.servers.get_by_id(server.id)
    assert resized.server_type.name == "cx33" and resized.primary_disk_size == server.primary_disk_size
    assert json.loads(cli.run("stack", "output", "--json").stdout)["servers"] == [server.name]

    cli.run("destroy", "--yes")
    assert hetzner.servers.get_all() == [] and hetzner.firewalls.get_all() == [] and hetzner.ssh_keys.get_all() == []


def test_a_second_provider_writes_a_zone_and_its_record_in_the_dns_project(cli: Cli, cloud: Emulator) -> None:
    cli.run("config", "set", "dns", "true")
    cli.run("config", "set", "dns_endpoint", f"{cloud.url}/v1")
    cli.run("config", "set", "--secret", "dns_token", OTHER)
    cli.run("up", "--yes")
    outputs = json.loads(cli.run("stack", "output", "--json").stdout)
    dns = cloud.client(OTHER)
    zone = dns.zones.get("engine-check.example")
    assert (outputs["zone_id"], outputs["record_id"]) == (str(zone.id), "www/A")
    assert (zone.ttl, zone.mode) == (600, "primary")
    record = dns.zones.get_rrset(zone, "www", "A")
    assert ([r.value for r in record.records], record.ttl, record.labels) == (
        ["198.51.100.10"],
        300,
        {"managed-by": "engine-check"},
    )
    # The default provider's project (HCLOUD's token) holds no zone.
    assert cloud.client(ACME).zones.get_all() == []
    cli.run("refresh", "--yes", "--expect-no-changes")

    cli.run("config", "set", "address", "198.51.100.11")
    cli.run("up", "--yes")
    assert [r.value for r in dns.zones.get_rrset(zone, "www", "A").records] == ["198.51.100.11"]
    commands = [action.command for action in dns.zones.get_actions(zone)]
    assert commands == ["create_zone", "create_rrset", "set_rrset_records"], commands
    cli.run("up", "--yes", "--expect-no-changes")

    cli.run("destroy", "--yes")
    assert dns.zones.get_all() == []


def test_switching_a_server_s_backups_is_an_update_in_place(cli: Cli, cloud: Emulator) -> None:
    hetzner = cloud.client()
    cli.run("config", "set", "cloud", "true")
    cli.run("up", "--yes")
    server_id = int(json.loads(cli.run("stack", "output", "--json").stdout)["server_id"])
    assert hetzner.servers.get_by_id(server_id).backup_window is None

    cli.run("config", "set", "backups", "true")
    steps = json.loads(cli.run("preview", "--json").stdout)["steps"]
    changed = {step["urn"].rsplit("::", 1)[1]: step for step in steps if step["op"] != "same"}
    assert list(changed) == ["server"] and changed["server"]["op"] == "update", changed
    assert changed["server"]["diffReasons"] == ["backups"]
    cli.run("up", "--yes")
    assert hetzner.servers.get_by_id(server_id).backup_window is not None
    cli.run("preview", "--expect-no-changes")
    backup = hetzner.servers.create_image(hetzner.servers.get_by_id(server_id), type="backup")
    backup.action.wait_until_finished()

    # Off again: the provider's disable_backup, which deletes the server's backups at once.
    cli.run("config", "set", "backups", "false")
    cli.run("up", "--yes")
    server = hetzner.servers.get_by_id(server_id)
    assert server.backup_window is None and hetzner.images.get_all(type=["backup"]) == []
    commands = [action.command for action in server.get_actions_list(sort=["id:asc"]).actions]
    assert commands == ["create_server", "start_server", "enable_backup", "create_image", "disable_backup"]
    cli.run("destroy", "--yes")
