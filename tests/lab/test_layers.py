"""Each layer of the baseline alone: with the host's packet filter flushed, the cloud firewall at
Hetzner (the lab's router) still drops the metrics port and SMTP/IRC egress; with the cloud
firewall detached, the host's baseline still holds."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hcloud.firewalls import FirewallResource

from components.drift import DRIFT_TIMER
from lab import topology
from lab.topology import ATTACKER, CLIENT
from lab.world import Lab, in_ns, run, wait_until
from tests.lab.helpers import connect
from tests.lab.test_scan import scan_finds_only_ssh_and_gateway

TOOLS = ("iptables", "ip6tables")


def _egress_reaches_the_sink(lab: Lab, address: str, port: int) -> bool:
    result = run(in_ns(lab.namespace, "nc", "-w", "3", address, str(port)), check=False, timeout=10, stdin="")
    return "sink" in result.stdout


@pytest.fixture
def host_filter_flushed(lab: Lab) -> Iterator[None]:
    """The host's filter open in both directions, as after `iptables -F` by hand; re-applied after.
    The drift timer, which would repair it, waits meanwhile."""
    before = lab.ruleset()
    lab.host("systemctl", "stop", DRIFT_TIMER)
    for tool in TOOLS:
        for chain in ("INPUT", "OUTPUT"):
            lab.host(tool, "-P", chain, "ACCEPT")
            lab.host(tool, "-F", chain)
    try:
        yield
    finally:
        lab.apply_firewall()
        lab.host("systemctl", "start", DRIFT_TIMER)
        assert lab.ruleset() == before


@pytest.fixture
def metrics_port_listener(lab: Lab, host_filter_flushed: None) -> Iterator[int]:
    """Something answering on the metrics port at the host's public addresses (the gateway's own
    metrics listener is on 127.0.0.1 only)."""
    port = lab.policy.inbound.metrics_port
    listeners = [
        lab.host_process("python3", "-m", "http.server", str(port), "--bind", address)
        for address in (lab.ipv4, lab.ipv6)
    ]
    try:
        for family in (4, 6):
            address = lab.address(family)
            wait_until(f"the listener on {address}", lambda a=address: connect(lab.namespace, a, port)[0], timeout=20)
        yield port
    finally:
        for listener in listeners:
            listener.kill()
            listener.wait(timeout=10)
        lab.host("pkill", "-f", f"http.server {port}", check=False)


@pytest.mark.parametrize("family", [4, 6])
def test_with_the_host_filter_flushed_the_cloud_firewall_still_drops_metrics_and_smtp(
    lab: Lab, metrics_port_listener: int, family: int
) -> None:
    address = lab.address(family)
    for tool in TOOLS:
        assert lab.host(tool, "-S", "INPUT").stdout.splitlines() == ["-P INPUT ACCEPT"]
    # The host itself would answer: the listener is up on its public address.
    assert connect(lab.namespace, address, metrics_port_listener)[0]
    connected, seconds = connect(ATTACKER.namespace, address, metrics_port_listener, timeout=3)
    assert not connected and seconds >= 2.5, "the metrics port answered, or was refused rather than dropped"
    assert connect(CLIENT.namespace, address, lab.policy.inbound.gateway_port)[0]
    sink = topology.SINK_V4 if family == 4 else topology.SINK_V6
    for port in lab.policy.egress.blocked_tcp_ports:
        assert not _egress_reaches_the_sink(lab, sink, port), f"tcp/{port} left through the cloud firewall"
    assert _egress_reaches_the_sink(lab, sink, 443)


@pytest.fixture
def cloud_firewall_detached(lab: Lab) -> Iterator[None]:
    hetzner = lab.hetzner()
    firewall = hetzner.firewalls.get_by_id(int(lab.outputs["firewall_id"]))
    server = FirewallResource(type="server", server=hetzner.servers.get_by_id(lab.server_id))
    for action in hetzner.firewalls.remove_from_resources(firewall, [server]):
        action.wait_until_finished()
    try:
        yield
    finally:
        for action in hetzner.firewalls.apply_to_resources(firewall, [server]):
            action.wait_until_finished()
        attached = hetzner.servers.get_by_id(lab.server_id).public_net.firewalls
        assert [entry.firewall.id for entry in attached] == [firewall.id]


@pytest.mark.usefixtures("cloud_firewall_detached")
def test_with_the_cloud_firewall_detached_the_host_baseline_alone_holds(lab: Lab) -> None:
    assert lab.hetzner().servers.get_by_id(lab.server_id).public_net.firewalls == []
    scan_finds_only_ssh_and_gateway(lab)
    for sink in (topology.SINK_V4, topology.SINK_V6):
        for port in lab.policy.egress.blocked_tcp_ports:
            assert not _egress_reaches_the_sink(lab, sink, port), f"tcp/{port} reached {sink}"
