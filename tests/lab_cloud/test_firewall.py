"""Hetzner's cloud firewalls act on the lab cloud's servers: enforced on the router for each
server's link, with Hetzner's semantics, set through Hetzner's client. The machine image has no
packet filter of its own, so what is dropped here is dropped by the cloud layer alone."""

from __future__ import annotations

import ipaddress
import json
import shlex
from typing import Literal

from hcloud.actions import BoundAction
from hcloud.firewalls import BoundFirewall, FirewallResource, FirewallResourceLabelSelector, FirewallRule
from hcloud.servers import BoundServer, Server

from lab import cloud_firewall, topology
from lab.netns import connect_from
from lab.topology import ATTACKER, CLIENT
from tests.lab_cloud.conftest import Cloud, KeyPair, Shell, shell

PROBE_SECONDS = 3
EVERYWHERE = ["0.0.0.0/0", "::/0"]
BASELINE = [
    FirewallRule(direction="in", protocol="tcp", port="22", source_ips=EVERYWHERE),
    FirewallRule(direction="in", protocol="tcp", port="8080", source_ips=EVERYWHERE),
]
# Outbound: HTTPS anywhere, nothing else (so the sinks' SMTP port is not allowed).
HTTPS_OUT = FirewallRule(direction="out", protocol="tcp", port="443", destination_ips=EVERYWHERE)
Outcome = Literal["open", "dropped", "refused"]

# Inside the machine: accept and close on 8080 and 9090, over IPv4 and IPv6.
LISTENER = """
import socket, threading
def serve(port):
    server = socket.create_server(("::", port), family=socket.AF_INET6, dualstack_ipv6=True)
    while True:
        server.accept()[0].close()
for port in (8080, 9090):
    threading.Thread(target=serve, args=(port,)).start()
"""
# Inside the machine: try each (host, port) of argv[1] once, PROBE_SECONDS each.
DIALER = f"""
import json, socket, sys
outcomes = []
for host, port in json.loads(sys.argv[1]):
    try:
        socket.create_connection((host, port), timeout={PROBE_SECONDS}).close()
        outcomes.append("open")
    except TimeoutError:
        outcomes.append("dropped")
    except ConnectionRefusedError:
        outcomes.append("refused")
print(json.dumps(outcomes))
"""


def reach(namespace: str, host: str, port: int) -> Outcome:
    """How a TCP connection from `namespace` to `host:port` fares: no answer at all is `dropped`."""
    try:
        connect_from(namespace, host, port, PROBE_SECONDS).close()
    except TimeoutError:
        return "dropped"
    except ConnectionRefusedError:
        return "refused"
    return "open"


def dial_out(ssh: Shell, targets: list[tuple[str, int]]) -> list[Outcome]:
    """The same, from inside the machine."""
    command = f"python3 -c {shlex.quote(DIALER)} {shlex.quote(json.dumps(targets))}"
    outcomes: list[Outcome] = json.loads(ssh.run(command, timeout=PROBE_SECONDS * len(targets) + 30))
    return outcomes


def addresses(server: BoundServer) -> tuple[str, str]:
    return server.public_net.ipv4.ip, str(ipaddress.IPv6Network(server.public_net.ipv6.ip)[1])


def wait(actions: list[BoundAction]) -> None:
    for action in actions:
        action.wait_until_finished()


def boot(cloud: Cloud, keys: KeyPair, name: str, **options: object) -> tuple[BoundServer, Shell]:
    key = cloud.client.ssh_keys.get_by_name("provisioning") or cloud.client.ssh_keys.create(
        name="provisioning", public_key=keys.public
    )
    server = cloud.create(name, ssh_keys=[key], **options)
    console = cloud.backend.machine(server.id).console_log
    return server, shell(CLIENT.namespace, server.public_net.ipv4.ip, keys.private, console)


def test_inbound_is_dropped_unless_allowed_outbound_once_an_out_rule_exists_and_removal_opens_it(
    cloud: Cloud, keys: KeyPair
) -> None:
    response = cloud.client.firewalls.create(name="baseline", rules=BASELINE)
    firewall: BoundFirewall = response.firewall
    wait(response.actions)
    server, ssh = boot(cloud, keys, "guarded", firewalls=[firewall])
    ipv4, ipv6 = addresses(server)
    ssh.run(f"systemd-run --unit=claw-listen python3 -c {shlex.quote(LISTENER)}")
    ssh.run("for i in $(seq 100); do ss -Hltn 'sport = :9090' | grep -q . && exit 0; sleep 0.1; done; exit 1")
    assert ssh.run("python3 -c 'import socket; socket.create_connection((\"::1\", 9090), timeout=3)'") == ""

    # Inbound: 22 and 8080 answer on both families; 9090 listens, yet gets no reply at all.
    for address in (ipv4, ipv6):
        assert [reach(CLIENT.namespace, address, port) for port in (22, 8080, 9090)] == ["open", "open", "dropped"]
    # Outbound without an out rule: everything, SMTP to the sinks included.
    sinks = [(topology.SINK_V4, 25), (topology.SINK_V6, 25), (topology.SINK_V4, 443), (topology.SINK_V6, 443)]
    assert dial_out(ssh, sinks) == ["open"] * 4
    # The lab's other namespaces, on the same router, are not filtered.
    assert reach(CLIENT.namespace, topology.SINK_V4, 25) == "open"

    # Restarted, the emulator puts the same rules in force again, no more and no less.
    ruleset = cloud_firewall.ruleset()
    cloud.emulator.restart()
    assert cloud_firewall.ruleset() == ruleset
    assert reach(CLIENT.namespace, ipv6, 9090) == "dropped"

    # One out rule: the rest of the outbound traffic is dropped, on both families.
    wait(cloud.client.firewalls.set_rules(firewall, [*BASELINE, HTTPS_OUT]))
    assert dial_out(ssh, sinks) == ["dropped", "dropped", "open", "open"]
    # Stateful: the session opened before still works; Hetzner's services are always reachable.
    metadata = f"http://{topology.METADATA_V4}/hetzner/v1/metadata/instance-id"
    assert ssh.run(f"curl -fsS --max-time {PROBE_SECONDS} {metadata}") == str(server.id)
    assert ssh.run(f"getent ahostsv4 {topology.ARCHIVE_NAME}").split()[0] == topology.MIRROR_V4
    assert reach(CLIENT.namespace, topology.SINK_V4, 25) == "open"
    ruleset = cloud_firewall.ruleset()
    assert f"chain cs{server.id}-in" in ruleset and f"chain cs{server.id}-out" in ruleset

    # Removed from the server: unfiltered again, both ways.
    on_server = FirewallResource(type="server", server=Server(id=server.id))
    wait(cloud.client.firewalls.remove_from_resources(firewall, [on_server]))
    assert [reach(CLIENT.namespace, address, 9090) for address in (ipv4, ipv6)] == ["open", "open"]
    assert dial_out(ssh, sinks) == ["open"] * 4
    assert f"cs{server.id}" not in cloud_firewall.ruleset()
    ssh.close()


def test_a_label_selector_firewall_filters_by_source_and_follows_the_labels(cloud: Cloud, keys: KeyPair) -> None:
    # SSH only from the client's networks: the attacker's packets are dropped.
    networks = [ipaddress.ip_interface(f"{CLIENT.ipv4}/{CLIENT.prefix4}"), ipaddress.ip_interface(f"{CLIENT.ipv6}/64")]
    from_client = FirewallRule(direction="in", protocol="tcp", port="22", source_ips=[str(n.network) for n in networks])
    selector = FirewallResource(type="label_selector", label_selector=FirewallResourceLabelSelector("role=web"))
    response = cloud.client.firewalls.create(name="web", rules=[from_client], resources=[selector])
    wait(response.actions)
    server, ssh = boot(cloud, keys, "web1", labels={"role": "web"})
    ipv4, ipv6 = addresses(server)
    for address in (ipv4, ipv6):
        assert reach(CLIENT.namespace, address, 22) == "open"
        assert reach(ATTACKER.namespace, address, 22) == "dropped"

    # Without the label, the selector no longer covers it: the firewall's action opens it.
    cloud.client.servers.update(server, labels={"role": "db"})
    wait(cloud.client.firewalls.get_actions(response.firewall))
    assert [reach(ATTACKER.namespace, address, 22) for address in (ipv4, ipv6)] == ["open", "open"]
    ssh.close()

    # Covered again, then deleted: its chains go with it.
    cloud.client.servers.update(server, labels={"role": "web"})
    wait(cloud.client.firewalls.get_actions(response.firewall))
    assert reach(ATTACKER.namespace, ipv4, 22) == "dropped"
    server.delete().wait_until_finished()
    assert f"cs{server.id}" not in cloud_firewall.ruleset()
