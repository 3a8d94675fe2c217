"""Backups as Hetzner documents them, through Hetzner's own client: enable_backup and disable_backup,
backup images bound to their server (seven slots, deleted with it and by disable_backup, kept as a
snapshot when converted), and a rebuild from one on the same server and addresses."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import requests
from hcloud import APIException, Client
from hcloud.images import Image
from hcloud.servers import BoundServer

from lab.hcloud_api.backend import RecordingBackend
from lab.hcloud_api.cloud import BACKUP_SLOTS
from tests.hcloud_api.conftest import Emulator, create_server


def backups_on(client: Client, name: str) -> BoundServer:
    server = create_server(client, name)
    action = client.servers.enable_backup(server)
    assert action.command == "enable_backup"
    action.wait_until_finished()
    return client.servers.get_by_id(server.id)


def take_backup(client: Client, server: BoundServer) -> int:
    response = client.servers.create_image(server, type="backup")
    response.action.wait_until_finished()
    image_id: int = response.image.id
    return image_id


def disks_dropped(backend: RecordingBackend) -> list[int]:
    return [image_id for hook, image_id in backend.calls if hook == "delete_image"]


def test_backups_are_switched_by_actions_and_show_as_a_window(client: Client) -> None:
    server = create_server(client, "switched")
    assert server.backup_window is None
    with pytest.raises(APIException) as refused:
        client.servers.create_image(server, type="backup")
    assert (refused.value.code, refused.value.details["fields"][0]["name"]) == ("invalid_input", "type")
    enabled = backups_on(client, "enabled")
    assert enabled.backup_window in ("22-02", "02-06", "06-10", "10-14", "14-18", "18-22")
    action = client.servers.disable_backup(enabled)
    assert action.command == "disable_backup"
    action.wait_until_finished()
    assert client.servers.get_by_id(enabled.id).backup_window is None


def test_a_backup_is_bound_to_its_server_and_the_oldest_makes_room(emulator: Emulator, client: Client) -> None:
    server = backups_on(client, "daily")
    other = backups_on(client, "other")
    first = take_backup(client, server)
    image = client.images.get_by_id(first)
    assert (image.type, image.bound_to.id, image.created_from.id, image.status) == (
        "backup",
        server.id,
        server.id,
        "available",
    )
    assert [i.id for i in client.images.get_all(type=["backup"], bound_to=[str(server.id)])] == [first]
    assert client.images.get_all(type=["snapshot"]) == []
    backend = emulator.backend
    assert isinstance(backend, RecordingBackend)
    later = [take_backup(client, server) for _ in range(BACKUP_SLOTS)]
    kept = [i.id for i in client.images.get_all(type=["backup"], bound_to=[str(server.id)], sort=["created:asc"])]
    assert kept == later and disks_dropped(backend) == [first]
    # Each server's slots are its own.
    assert [i.id for i in client.images.get_all(bound_to=[str(other.id)])] == []


def test_disable_backup_deletes_every_backup_at_once(emulator: Emulator, client: Client) -> None:
    server = backups_on(client, "stopped-backups")
    backups = [take_backup(client, server) for _ in range(2)]
    action = client.servers.disable_backup(server)
    assert client.images.get_all(type=["backup"]) == []
    action.wait_until_finished()
    assert isinstance(emulator.backend, RecordingBackend)
    assert disks_dropped(emulator.backend) == backups


def test_deleting_a_server_deletes_its_backups_and_keeps_its_snapshots(emulator: Emulator, client: Client) -> None:
    server = backups_on(client, "leaving")
    backup, kept_backup = take_backup(client, server), take_backup(client, server)
    snapshot = client.servers.create_image(server, description="kept")
    snapshot.action.wait_until_finished()
    # A backup converted to a snapshot is no longer bound to the server, and outlives it.
    converted = client.images.update(Image(id=kept_backup), type="snapshot")
    assert (converted.type, converted.bound_to) == ("snapshot", None)
    client.servers.delete(server).wait_until_finished()
    with pytest.raises(APIException) as gone:
        client.images.get_by_id(backup)
    assert gone.value.code == "not_found"
    assert sorted(i.id for i in client.images.get_all(type=["snapshot"])) == sorted([snapshot.image.id, kept_backup])
    assert isinstance(emulator.backend, RecordingBackend)
    assert disks_dropped(emulator.backend) == [backup]
    client.images.delete(Image(id=kept_backup))
    assert [i.id for i in client.images.get_all(type=["snapshot"])] == [snapshot.image.id]
    # Hetzner answers at once; the disk goes right after.
    deadline = time.monotonic() + 10
    while kept_backup not in disks_dropped(emulator.backend):
        assert time.monotonic() < deadline, "the deleted image's disk was never removed"
        time.sleep(0.02)


def test_a_rebuild_from_a_backup_keeps_the_server_and_its_addresses(emulator: Emulator, client: Client) -> None:
    server = backups_on(client, "restored")
    backup = take_backup(client, server)
    response = client.servers.rebuild(server, Image(id=backup))
    assert response.action.command == "rebuild_server"
    response.action.wait_until_finished()
    rebuilt = client.servers.get_by_id(server.id)
    assert (rebuilt.status, rebuilt.image.id, rebuilt.image.type) == ("running", backup, "backup")
    assert (rebuilt.public_net.ipv4.ip, rebuilt.public_net.ipv6.ip) == (
        server.public_net.ipv4.ip,
        server.public_net.ipv6.ip,
    )
    assert isinstance(emulator.backend, RecordingBackend)
    hooks = [hook for hook, called in emulator.backend.calls if called == server.id]
    assert hooks[-3:] == ["power_off", "rebuild", "power_on"]
    # A backup also makes a new server, as Hetzner's console offers.
    copy = client.servers.create(name="from-backup", server_type=rebuilt.server_type, image=Image(id=backup))
    copy.action.wait_until_finished()
    assert client.servers.get_by_id(copy.server.id).image.id == backup


def test_the_lab_takes_the_daily_backups_when_told(
    start_emulator: Callable[..., Emulator],
) -> None:
    emulator = start_emulator()
    client = emulator.client()
    with_backups, without = backups_on(client, "nightly"), create_server(client, "never")
    taken = requests.post(f"{emulator.url}/_lab/backup_window", timeout=10).json()["backups"]
    assert [entry["server"] for entry in taken] == [with_backups.id]
    client.actions.get_by_id(taken[0]["action"]).wait_until_finished()
    assert client.images.get_by_id(taken[0]["image"]).bound_to.id == with_backups.id
    assert client.images.get_all(bound_to=[str(without.id)]) == []
    # Kept across a restart, like everything else.
    emulator.restart()
    client = emulator.client()
    assert client.servers.get_by_id(with_backups.id).backup_window == with_backups.backup_window
    assert client.images.get_by_id(taken[0]["image"]).type == "backup"
