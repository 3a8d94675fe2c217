"""Servers and their actions, driven by hcloud-python as a program would."""

from __future__ import annotations

import ipaddress

import pytest
from hcloud import APIException, Client
from hcloud.images import Image
from hcloud.locations import Location
from hcloud.server_types import ServerType
from hcloud.ssh_keys import SSHKey

from lab import topology
from tests.hcloud_api.conftest import OTHER, Emulator, create_server
from tests.keys import public_key


def api_error(call: object, *args: object, **kwargs: object) -> APIException:
    assert callable(call)
    with pytest.raises(APIException) as caught:
        call(*args, **kwargs)
    return caught.value


def test_create_answers_server_action_and_next_actions(client: Client) -> None:
    key = client.ssh_keys.create(name="provisioning", public_key=public_key(comment="prov"))
    response = client.servers.create(
        name="claw-acme",
        server_type=ServerType(name="cx23"),
        image=Image(name="debian-12"),
        location=Location(name="nbg1"),
        ssh_keys=[key],
        user_data="#cloud-config\n",
        labels={"customer": "acme", "managed-by": "clawhosters"},
    )
    assert response.server.status == "initializing"
    assert response.action.command == "create_server" and response.action.status == "running"
    assert [a.command for a in response.next_actions] == ["start_server"]
    assert response.root_password is None
    response.action.wait_until_finished()
    response.next_actions[0].wait_until_finished()
    server = client.servers.get_by_id(response.server.id)
    assert server.status == "running"
    assert (server.location.name, server.server_type.name, server.image.name) == ("nbg1", "cx23", "debian-12")
    assert server.image.architecture == "x86" and server.primary_disk_size == 40
    assert server.labels == {"customer": "acme", "managed-by": "clawhosters"}
    assert ipaddress.ip_address(server.public_net.ipv4.ip) in ipaddress.ip_network(topology.CLOUD_POOL_V4)
    assert ipaddress.ip_network(server.public_net.ipv6.ip).subnet_of(ipaddress.ip_network(topology.CLOUD_POOL_V6))
    assert server.protection == {"delete": False, "rebuild": False}


def test_without_ssh_keys_a_root_password_and_start_after_create_false(client: Client) -> None:
    response = client.servers.create(
        name="bare", server_type=ServerType(name="cpx22"), image=Image(name="ubuntu-24.04"), start_after_create=False
    )
    assert response.root_password and response.next_actions == []
    response.action.wait_until_finished()
    assert client.servers.get_by_id(response.server.id).status == "off"


def test_addresses_are_unique_and_arm_types_get_the_arm_image(client: Client) -> None:
    first = create_server(client, "one")
    second = create_server(client, "two", server_type="cax11")
    assert first.public_net.ipv4.ip != second.public_net.ipv4.ip
    assert first.public_net.ipv6.ip != second.public_net.ipv6.ip
    assert (second.image.name, second.image.architecture) == ("debian-12", "arm")
    assert second.image.id != first.image.id


def test_list_by_name_label_selector_and_status(client: Client) -> None:
    create_server(client, "a1", labels={"customer": "a", "managed-by": "clawhosters"})
    create_server(client, "b1", labels={"customer": "b", "managed-by": "clawhosters"})
    create_server(client, "c1", labels={"customer": "c"}, start_after_create=False)
    assert [s.name for s in client.servers.get_all(name="b1")] == ["b1"]
    assert [s.name for s in client.servers.get_all(label_selector="customer=a,managed-by=clawhosters")] == ["a1"]
    assert sorted(s.name for s in client.servers.get_all(label_selector="managed-by")) == ["a1", "b1"]
    assert [s.name for s in client.servers.get_all(label_selector="!managed-by")] == ["c1"]
    assert [s.name for s in client.servers.get_all(label_selector="customer in (b,c),customer!=c")] == ["b1"]
    assert sorted(s.name for s in client.servers.get_all(label_selector="customer notin (a)")) == ["b1", "c1"]
    assert [s.name for s in client.servers.get_all(status=["off"])] == ["c1"]
    assert client.servers.get_all(label_selector="customer=nobody") == []
    error = api_error(client.servers.get_all, label_selector="customer in (a")
    assert error.code == "invalid_input" and error.details["fields"][0]["name"] == "label_selector"


def test_pagination_beyond_per_page(client: Client) -> None:
    for number in range(7):
        client.servers.create(name=f"page-{number}", server_type=ServerType(name="cx23"), image=Image(name="debian-12"))
    servers, meta = client.servers.get_list(page=2, per_page=3)
    assert [s.name for s in servers] == ["page-3", "page-4", "page-5"]
    pagination = meta.pagination
    assert (pagination.page, pagination.per_page, pagination.previous_page, pagination.next_page) == (2, 3, 1, 3)
    assert (pagination.last_page, pagination.total_entries) == (3, 7)
    last, meta = client.servers.get_list(page=3, per_page=3)
    assert [s.name for s in last] == ["page-6"] and meta.pagination.next_page is None
    client.servers.max_per_page = 2  # get_all follows next_page through four pages
    assert [s.name for s in client.servers.get_all()] == [f"page-{n}" for n in range(7)]


def test_update_name_and_labels_and_uniqueness(client: Client) -> None:
    server = create_server(client, "old-name")
    create_server(client, "taken")
    updated = client.servers.update(server, name="new-name", labels={"k": "v"})
    assert (updated.name, updated.labels) == ("new-name", {"k": "v"})
    error = api_error(client.servers.update, server, name="taken")
    assert error.code == "uniqueness_error" and error.details["fields"] == [{"name": "name"}]
    error = api_error(
        client.servers.create, name="taken", server_type=ServerType(name="cx23"), image=Image(name="debian-12")
    )
    assert error.code == "uniqueness_error"


def test_invalid_input_names_the_field(client: Client) -> None:
    error = api_error(
        client.servers.create, name="no_underscores", server_type=ServerType(name="cx23"), image=Image(name="debian-12")
    )
    assert error.code == "invalid_input" and error.details["fields"][0]["name"] == "name"
    error = api_error(client.servers.create, name="x", server_type=ServerType(name="cx23"), image=Image(name="nope-1"))
    assert error.details["fields"][0]["name"] == "image"
    error = api_error(
        client.servers.create, name="x", server_type=ServerType(name="zz99"), image=Image(name="debian-12")
    )
    assert error.details["fields"][0]["name"] == "server_type"
    error = api_error(
        client.servers.create,
        name="x",
        server_type=ServerType(name="cx23"),
        image=Image(name="debian-12"),
        labels={"bad key": "v"},
    )
    assert error.details["fields"][0]["name"] == "labels"
    error = api_error(
        client.servers.create,
        name="x",
        server_type=ServerType(name="cx23"),
        image=Image(name="debian-12"),
        ssh_keys=[SSHKey(name="missing")],
    )
    assert error.details["fields"][0]["name"] == "ssh_keys"
    error = api_error(
        client.servers.create,
        name="x",
        server_type=ServerType(name="cx23"),
        image=Image(name="debian-12"),
        user_data="x" * (32 * 1024 + 1),
    )
    assert error.details["fields"][0]["name"] == "user_data"
    error = api_error(
        client.servers.create,
        name="x",
        server_type=ServerType(name="cx23"),
        image=Image(name="debian-12"),
        location=Location(name="mars1"),
    )
    assert (
        error.code == "invalid_input"
        and error.message == "invalid input in field 'location': location 'mars1' not found"
    )


def test_get_and_delete(client: Client) -> None:
    server = create_server(client, "short-lived")
    action = client.servers.delete(server)
    assert action.command == "delete_server"
    assert api_error(client.servers.get_by_id, server.id).code == "not_found"
    action.wait_until_finished()
    assert client.servers.get_all() == []
    assert api_error(client.servers.delete, server).code == "not_found"


def test_projects_do_not_see_each_other(emulator: Emulator, client: Client) -> None:
    server = create_server(client, "mine")
    other = emulator.client(OTHER)
    assert other.servers.get_all() == []
    assert api_error(other.servers.get_by_id, server.id).code == "not_found"
    assert api_error(other.servers.power_off, server).code == "not_found"
    create_server(other, "mine")  # names are unique per project only


def test_power_actions_change_status_when_done(client: Client) -> None:
    server = create_server(client, "power")
    for method, command, status in (
        (client.servers.shutdown, "shutdown_server", "off"),
        (client.servers.power_on, "start_server", "running"),
        (client.servers.power_off, "stop_server", "off"),
        (client.servers.power_on, "start_server", "running"),
        (client.servers.reboot, "reboot_server", "running"),
        (client.servers.reset, "reset_server", "running"),
    ):
        action = method(server)
        assert (action.command, action.status) == (command, "running")
        action.wait_until_finished()
        assert action.status == "success" and action.progress == 100 and action.finished is not None
        assert client.servers.get_by_id(server.id).status == status
    commands = [a.command for a in client.servers.get_actions(server, sort=["id"])]
    assert commands[:2] == ["create_server", "start_server"] and commands[-1] == "reset_server"


def test_a_server_with_a_running_action_is_locked(client: Client) -> None:
    server = create_server(client, "busy")
    action = client.servers.power_off(server)
    assert api_error(client.servers.power_on, server).code == "locked"
    action.wait_until_finished()
    client.servers.power_on(server).wait_until_finished()


def test_protection_refuses_delete_and_rebuild(client: Client) -> None:
    server = create_server(client, "precious")
    action = client.servers.change_protection(server, delete=True, rebuild=True)
    assert (action.command, action.status) == ("change_protection", "success")
    assert client.servers.get_by_id(server.id).protection == {"delete": True, "rebuild": True}
    assert api_error(client.servers.delete, server).code == "protected"
    assert api_error(client.servers.rebuild, server, Image(name="debian-12")).code == "protected"
    error = api_error(client.servers.change_protection, server, delete=False)
    assert error.code == "invalid_input"
    client.servers.change_protection(server, delete=False, rebuild=False)
    client.servers.delete(server).wait_until_finished()


def test_change_type_needs_a_stopped_server_and_keeps_or_grows_the_disk(client: Client) -> None:
    server = create_server(client, "resize")
    error = api_error(client.servers.change_type, server, ServerType(name="cx33"), upgrade_disk=False)
    assert (error.code, error.message) == ("server_not_stopped", "server must be stopped before changing type")
    client.servers.power_off(server).wait_until_finished()
    # Keeping the disk: up to cx33 and back down to cx23 again.
    action = client.servers.change_type(server, ServerType(name="cx33"), upgrade_disk=False)
    assert action.command == "change_server_type"
    action.wait_until_finished()
    resized = client.servers.get_by_id(server.id)
    assert (resized.server_type.name, resized.primary_disk_size, resized.status) == ("cx33", 40, "running")
    client.servers.power_off(server).wait_until_finished()
    client.servers.change_type(server, ServerType(name="cx23"), upgrade_disk=False).wait_until_finished()
    # Growing the disk rules the smaller type out afterwards.
    client.servers.power_off(server).wait_until_finished()
    client.servers.change_type(server, ServerType(name="cx43"), upgrade_disk=True).wait_until_finished()
    assert client.servers.get_by_id(server.id).primary_disk_size == 160
    client.servers.power_off(server).wait_until_finished()
    error = api_error(client.servers.change_type, server, ServerType(name="cx33"), upgrade_disk=False)
    assert error.code == "invalid_server_type" and "smaller" in error.message


@pytest.mark.parametrize(
    ("target", "reason"),
    [("cax21", "x86 to arm"), ("cx32", "deprecated"), ("cx23", "already")],
)
def test_change_type_refusals(client: Client, target: str, reason: str) -> None:
    server = create_server(client, "refuse")
    client.servers.power_off(server).wait_until_finished()
    error = api_error(client.servers.change_type, server, ServerType(name=target), upgrade_disk=False)
    assert error.code == "invalid_server_type" and reason in error.message


def test_change_type_to_a_type_the_location_lacks(client: Client) -> None:
    server = create_server(client, "overseas", server_type="ccx13", location=Location(name="ash"))
    client.servers.power_off(server).wait_until_finished()
    error = api_error(client.servers.change_type, server, ServerType(name="cx43"), upgrade_disk=False)
    assert error.code == "invalid_server_type" and "not available in ash" in error.message


def test_snapshot_survives_the_server_and_a_server_starts_from_it(client: Client) -> None:
    server = create_server(client, "decommissioned", labels={"customer": "acme"})
    response = client.servers.create_image(
        server, description="final", labels={"customer": "acme", "expires-on": "2027-01-01"}
    )
    assert (response.image.type, response.image.status, response.action.command) == (
        "snapshot",
        "creating",
        "create_image",
    )
    response.action.wait_until_finished()
    client.servers.delete(server).wait_until_finished()
    image = client.images.get_by_id(response.image.id)
    assert (image.status, image.description, image.created_from.id, image.bound_to) == (
        "available",
        "final",
        server.id,
        None,
    )
    assert (image.disk_size, image.os_flavor, image.architecture) == (40, "debian", "x86") and image.image_size
    snapshots = client.images.get_all(type=["snapshot"], label_selector="customer=acme")
    assert [i.id for i in snapshots] == [image.id]
    restored = client.servers.create(name="restored", server_type=ServerType(name="cx33"), image=Image(id=image.id))
    restored.action.wait_until_finished()
    assert client.servers.get_by_id(restored.server.id).image.id == image.id
    error = api_error(client.servers.create, name="arm", server_type=ServerType(name="cax11"), image=Image(id=image.id))
    assert error.code == "invalid_input" and "architecture" in error.message


def test_rebuild_overwrites_from_an_image(client: Client) -> None:
    server = create_server(client, "rebuild-me")
    response = client.servers.rebuild(server, Image(name="debian-13"))
    assert response.action.command == "rebuild_server" and response.root_password
    response.action.wait_until_finished()
    rebuilt = client.servers.get_by_id(server.id)
    assert (rebuilt.image.name, rebuilt.status) == ("debian-13", "running")
