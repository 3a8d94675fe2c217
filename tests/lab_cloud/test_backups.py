"""Backups of the lab cloud's servers are copies of their disks, and a rebuild puts one back: a file
written before a backup is there again after a rebuild from it, on the same server, addresses and
firewall, booted afresh from the copy as the same cloud-init instance."""

from __future__ import annotations

import secrets
import shlex

import pytest
from hcloud import APIException
from hcloud.firewalls import FirewallRule
from hcloud.images import Image

from lab.topology import ATTACKER
from tests.lab_cloud.conftest import Cloud, KeyPair
from tests.lab_cloud.test_firewall import reach
from tests.lab_cloud.test_servers import session, user_data

SSH_ONLY = [FirewallRule(direction="in", protocol="tcp", port="22", source_ips=["0.0.0.0/0", "::/0"])]
# Each count replaces the file whole; /root comes early in a copy of the disk, /var late.
COUNTER = (
    "n=0; while :; do n=$((n+1)); for f in /root/count /var/tmp/count; do echo $n > $f.new; mv $f.new $f; done; "
    "sleep 0.01; done"
)


def test_a_backup_of_a_running_server_comes_back_by_a_rebuild_and_goes_with_the_server(
    cloud: Cloud, keys: KeyPair
) -> None:
    key = cloud.client.ssh_keys.create(name="provisioning", public_key=keys.public)
    firewall = cloud.client.firewalls.create(name="ssh-only", rules=SSH_ONLY).firewall
    server = cloud.create("kept", ssh_keys=[key], user_data=user_data("first boot"), firewalls=[firewall])
    server.enable_backup().wait_until_finished()
    before, after = secrets.token_hex(8), secrets.token_hex(8)
    ssh = session(cloud, server, keys)
    ssh.run(f"echo {before} > /root/data")
    boot = ssh.run("cat /proc/sys/kernel/random/boot_id")

    # Taken while the server runs: its processes are held for the copy and go on afterwards. A writer
    # that never stops counts into a file the copy reads early and one it reads seconds later.
    writer = ssh.run(f"nohup sh -c {shlex.quote(COUNTER)} >/dev/null 2>&1 & echo $!")
    backup = server.create_image(type="backup")
    backup.action.wait_until_finished()
    ssh.run(f"kill {writer}")
    assert ssh.run("cat /proc/sys/kernel/random/boot_id") == boot
    copy = cloud.backend.images / str(backup.image.id) / "rootfs"
    first, last = (int((copy / path).read_text()) for path in ("root/count", "var/tmp/count"))
    assert first - last in (0, 1), f"the copy holds {first} and {last}: not the disk at one moment"
    ssh.run(f"echo {after} > /root/data")
    snapshot = server.create_image(description="kept", type="snapshot")
    snapshot.action.wait_until_finished()
    ssh.close()

    rebuild = server.rebuild(Image(id=backup.image.id))
    rebuild.action.wait_until_finished()
    rebuilt = cloud.client.servers.get_by_id(server.id)
    assert (rebuilt.status, rebuilt.image.id) == ("running", backup.image.id)
    assert (rebuilt.public_net.ipv4.ip, rebuilt.public_net.ipv6.ip) == (
        server.public_net.ipv4.ip,
        server.public_net.ipv6.ip,
    )
    assert [applied.firewall.id for applied in rebuilt.public_net.firewalls] == [firewall.id]
    assert reach(ATTACKER.namespace, server.public_net.ipv4.ip, 8080) == "dropped"
    # The host key cloud-init printed at the first boot still answers: the same instance, not a new one.
    ssh = session(cloud, rebuilt, keys)
    assert ssh.run("cat /root/data") == before
    assert ssh.run("cat /proc/sys/kernel/random/boot_id") != boot
    assert ssh.run("cloud-init query v1.instance_id") == str(server.id)
    assert ssh.run("cat /var/lib/cloud/data/previous-instance-id") == str(server.id)
    ssh.close()

    # Hetzner deletes a server's backups with it and keeps its snapshots, disks included.
    images = cloud.backend.images
    assert (images / str(backup.image.id) / "complete").exists()
    rebuilt.delete().wait_until_finished()
    with pytest.raises(APIException) as gone:
        cloud.client.images.get_by_id(backup.image.id)
    assert gone.value.code == "not_found"
    assert not (images / str(backup.image.id)).exists()
    assert cloud.client.images.get_by_id(snapshot.image.id).type == "snapshot"
    assert (images / str(snapshot.image.id) / "complete").exists()
