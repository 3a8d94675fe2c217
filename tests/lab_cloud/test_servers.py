"""Servers of the lab's Hetzner Cloud are booted machines: created, powered and resized through
Hetzner's API with Hetzner's client, configured by cloud-init's Hetzner datasource from the
metadata service, reached over SSH at their public addresses from elsewhere on the lab's internet."""

from __future__ import annotations

import ipaddress
import secrets
import time
from pathlib import Path

import pytest
from hcloud import APIException
from hcloud.images import Image
from hcloud.server_types import ServerType
from hcloud.servers import BoundServer

from lab import servers, topology
from lab.topology import CLIENT
from lab.world import in_ns, run
from tests.lab_cloud.conftest import Cloud, KeyPair, Shell, shell

# Printed by systemd when it powers off cleanly; a machine whose power was cut never logs it.
CLEAN_STOP = "Reached target poweroff.target"


def user_data(marker: str) -> str:
    return f"#cloud-config\nwrite_files:\n- path: /root/marker\n  content: {marker}\n  permissions: '0600'\n"


def ipv6_address(server: BoundServer) -> str:
    return str(ipaddress.IPv6Network(server.public_net.ipv6.ip)[1])


def session(cloud: Cloud, server: BoundServer, keys: KeyPair, address: str | None = None) -> Shell:
    console = cloud.backend.machine(server.id).console_log
    return shell(CLIENT.namespace, address or server.public_net.ipv4.ip, keys.private, console)


def test_a_server_boots_with_hetzner_s_datasource_and_is_shut_down_resized_and_powered(
    cloud: Cloud, keys: KeyPair
) -> None:
    key = cloud.client.ssh_keys.create(name="provisioning", public_key=keys.public)
    marker = secrets.token_hex(8)
    server = cloud.create("web1", ssh_keys=[key], user_data=user_data(marker))
    assert server.status == "running"
    assert ipaddress.ip_address(server.public_net.ipv4.ip) in ipaddress.ip_network(topology.CLOUD_POOL_V4)

    ssh = session(cloud, server, keys)
    assert ssh.run("cloud-init query v1.cloud_name") == "hetzner"
    assert ssh.run("cloud-init query v1.instance_id") == str(server.id)
    assert "datasource_list: [ Hetzner, None ]" in ssh.run("cat /run/cloud-init/cloud.cfg")
    assert ssh.run("cat /root/marker") == marker
    assert keys.public in ssh.run("cat /root/.ssh/authorized_keys").splitlines()
    assert ssh.run("hostname") == "web1"
    metadata = "http://169.254.169.254/hetzner/v1/metadata"
    assert ssh.run(f"curl -fsS {metadata}/instance-id") == str(server.id)
    ssh.close()
    # The metadata service answers servers only, each with its own data.
    outsider = run(in_ns(CLIENT.namespace, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", metadata))
    assert outsider.stdout == "404"
    over_ipv6 = session(cloud, server, keys, ipv6_address(server))
    assert over_ipv6.run("ip -6 -o addr show dev eth0 scope global").split()[3] == f"{ipv6_address(server)}/64"
    over_ipv6.close()

    with pytest.raises(APIException) as refused:
        server.change_type(ServerType(name="cx33"), upgrade_disk=False)
    assert refused.value.code == "server_not_stopped"

    server.shutdown().wait_until_finished()
    assert cloud.client.servers.get_by_id(server.id).status == "off"
    assert not cloud.backend.machine(server.id).running

    # Resized while off; Hetzner starts it again.
    server.change_type(ServerType(name="cx33"), upgrade_disk=False).wait_until_finished()
    assert cloud.client.servers.get_by_id(server.id).server_type.name == "cx33"
    hardware = cloud.backend.hardware(server.id)
    assert (hardware.server_type, hardware.cores, hardware.disk_gb) == ("cx33", 4, server.primary_disk_size)
    ssh = session(cloud, server, keys)
    assert CLEAN_STOP in ssh.run("journalctl -b -1 --no-pager -o cat")
    assert ssh.run("cat /root/marker") == marker
    ssh.close()

    server.power_off().wait_until_finished()
    assert not cloud.backend.machine(server.id).running
    server.power_on().wait_until_finished()
    ssh = session(cloud, server, keys)
    assert CLEAN_STOP not in ssh.run("journalctl -b -1 --no-pager -o cat"), "the power was cut, not shut down"
    boots = ssh.run("journalctl --list-boots --no-pager").splitlines()[1:]  # below the column names
    assert len(boots) == 3
    ssh.close()


def test_servers_run_at_once_a_snapshot_becomes_a_server_and_delete_removes_them(cloud: Cloud, keys: KeyPair) -> None:
    key = cloud.client.ssh_keys.create(name="provisioning", public_key=keys.public)
    markers = {"web-a": secrets.token_hex(8), "web-b": secrets.token_hex(8)}
    ordered = [cloud.order(name, ssh_keys=[key], user_data=user_data(marker)) for name, marker in markers.items()]
    pair = [cloud.running(response) for response in ordered]
    assert {server.status for server in pair} == {"running"}
    for server in pair:
        ssh = session(cloud, server, keys)
        assert ssh.run("hostname") == server.name
        assert ssh.run("cat /root/marker") == markers[server.name]
        ssh.close()

    snapshot = pair[0].create_image(description="web-a", type="snapshot")
    snapshot.action.wait_until_finished()
    from_snapshot = cloud.create("web-c", image=Image(id=snapshot.image.id), ssh_keys=[key], user_data="")
    ssh = session(cloud, from_snapshot, keys)
    # web-a's disk, as a new instance: cloud-init ran again, with web-c's name and id.
    assert ssh.run("cat /root/marker") == markers["web-a"]
    assert ssh.run("hostname") == "web-c"
    assert ssh.run("cloud-init query v1.instance_id") == str(from_snapshot.id)
    ssh.close()

    everything = [*pair, from_snapshot]
    pids = {server.id: cloud.backend.machine(server.id).pid for server in everything}
    assert all(pids.values())
    for server in everything:
        server.delete().wait_until_finished()
    links = run(in_ns(topology.ROUTER, "ip", "-o", "link")).stdout
    for server in everything:
        assert not Path(f"/run/netns/{servers.namespace(server.id)}").exists()
        assert not (cloud.backend.servers / str(server.id)).exists()
        assert not Path(f"/proc/{pids[server.id]}").exists()
        assert f" cs{server.id}@" not in links
    assert cloud.client.servers.get_all() == []
    # An address a deleted server had serves the next one (DHCP hands it to the new machine).
    reused = cloud.create("web-d", ssh_keys=[key], user_data=user_data(markers["web-a"]))
    assert reused.public_net.ipv4.ip in {server.public_net.ipv4.ip for server in everything}
    ssh = session(cloud, reused, keys)
    assert ssh.run("cat /root/marker") == markers["web-a"]
    ssh.close()
    reused.delete().wait_until_finished()


def test_reboot_a_shutdown_the_emulator_restarts_in_and_rebuild(cloud: Cloud, keys: KeyPair) -> None:
    key = cloud.client.ssh_keys.create(name="provisioning", public_key=keys.public)
    first, second = secrets.token_hex(8), secrets.token_hex(8)
    server = cloud.create("web1", ssh_keys=[key], user_data=user_data(first))
    session(cloud, server, keys).close()

    server.reboot().wait_until_finished()
    ssh = session(cloud, server, keys)
    assert "Reached target reboot.target" in ssh.run("journalctl -b -1 --no-pager -o cat")
    ssh.close()

    # The emulator stops while the machine shuts down; started again, it runs the action again.
    console = cloud.backend.machine(server.id).console_log
    seen = console.stat().st_size
    shutdown = server.shutdown()
    deadline = time.monotonic() + 30
    while b"Stopping" not in console.read_bytes()[seen:] and time.monotonic() < deadline:
        time.sleep(0.1)
    cloud.emulator.restart()
    assert cloud.client.actions.get_by_id(shutdown.id).wait_until_finished() is None
    assert cloud.client.actions.get_by_id(shutdown.id).status == "success"
    assert cloud.client.servers.get_by_id(server.id).status == "off"
    assert not cloud.backend.machine(server.id).running

    # A new disk from the image, new user data: cloud-init runs as on a new server.
    server.rebuild(Image(name="debian-12"), user_data=user_data(second)).action.wait_until_finished()
    assert cloud.client.servers.get_by_id(server.id).status == "running"
    ssh = session(cloud, server, keys)
    assert ssh.run("cat /root/marker") == second
    assert len(ssh.run("journalctl --list-boots --no-pager").splitlines()[1:]) == 1
    ssh.close()
