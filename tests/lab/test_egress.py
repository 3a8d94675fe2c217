"""SMTP and IRC are refused at once for the host and its containers; other egress works."""

from __future__ import annotations

import re

import pytest

from lab import topology
from lab.world import Lab, in_ns, run
from tests.lab.helpers import Kernel

HTTPS = 443


def _from_host(lab: Lab, address: str, port: int) -> tuple[int, str]:
    result = run(in_ns(lab.namespace, "nc", "-w", "3", address, str(port)), check=False, timeout=10, stdin="")
    return result.returncode, result.stdout


def _from_container(lab: Lab, port: int) -> tuple[int, str]:
    result = lab.docker("exec", "openclaw-gateway", "nc", "-w", "3", topology.SINK_V4, str(port), check=False)
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize("address", [topology.SINK_V4, topology.SINK_V6])
def test_host_cannot_reach_smtp_or_irc_but_reaches_https(lab: Lab, address: str, kernel_log: Kernel) -> None:
    for port in lab.policy.egress.blocked_tcp_ports:
        code, output = _from_host(lab, address, port)
        assert code != 0 and "sink" not in output, f"tcp/{port} reached from the host"
    code, output = _from_host(lab, address, HTTPS)
    assert code == 0 and "sink" in output
    assert kernel_log.since(lab.policy.egress.log_prefix)


def _container_egress_hits(lab: Lab) -> int:
    """Packets the container-egress block has refused so far (the LOG itself is rate-limited)."""
    saved = lab.vps("iptables-save", "-c", "-t", "filter").stdout
    counted = re.findall(r"^\[(\d+):\d+\] -A CLAW-DOCKER -i docker0 .*-j CLAW-EGRESS$", saved, re.MULTILINE)
    assert counted, "the container egress rule is missing"
    return sum(int(packets) for packets in counted)


def test_container_cannot_reach_smtp_or_irc_but_reaches_https(lab: Lab) -> None:
    before = _container_egress_hits(lab)
    for port in lab.policy.egress.blocked_tcp_ports:
        code, output = _from_container(lab, port)
        # Refused by a reset, not left hanging: the customer's app fails at once.
        assert code != 0 and "refused" in output, f"tcp/{port} from the container: {output!r}"
    code, output = _from_container(lab, HTTPS)
    assert code == 0 and "sink" in output
    assert _container_egress_hits(lab) - before == len(lab.policy.egress.blocked_tcp_ports)


def test_the_container_cannot_reach_the_metadata_service(lab: Lab) -> None:
    """Hetzner's metadata service serves user_data for the server's life; from a container the
    connection is reset by the baseline before it leaves the VPS. (Nothing in the lab listens
    there: without the rule the lab's internet would answer "unreachable", not a reset.)"""
    (address,) = lab.policy.metadata.addresses_of(4)

    def refused() -> int:
        saved = lab.vps("iptables-save", "-c", "-t", "filter").stdout
        counted = re.findall(rf"^\[(\d+):\d+\] -A CLAW-DOCKER -d {address}/32 -j CLAW-METADATA$", saved, re.MULTILINE)
        assert counted, "the container metadata rule is missing"
        return int(counted[0])

    before = refused()
    result = lab.docker("exec", "openclaw-gateway", "nc", "-w", "3", address, "80", check=False)
    assert result.returncode != 0 and "refused" in result.stdout + result.stderr, result
    assert refused() > before
