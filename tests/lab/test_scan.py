"""An attacker's port scan finds only SSH and the gateway; every other probe gets no answer."""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET

from lab.topology import ATTACKER
from lab.world import Lab, in_ns

DOCKER_API_PORTS = (2375, 2376)


def _scan(target: str, ports: str, ipv6: bool) -> subprocess.Popen[str]:
    # Below the per-source SYN budget, so the guard itself does not hide open ports.
    command = ["nmap", "-sS", "-Pn", "-n", "--reason", "--max-retries", "0", "--max-rate", "25"]
    command += ["--max-rtt-timeout", "500ms", "-p", ports, "-oX", "-", target]
    if ipv6:
        command.insert(1, "-6")
    return subprocess.Popen(in_ns(ATTACKER.namespace, *command), stdout=subprocess.PIPE, text=True)


def _states(report: str) -> tuple[set[int], dict[str, int]]:
    """Open ports, and how many of the others got which kind of answer (nmap's 'reason')."""
    host = ET.fromstring(report).find("host")  # noqa: S314 (our own nmap run)
    assert host is not None, report
    ports = host.find("ports")
    assert ports is not None
    opened = {int(p.get("portid", 0)) for p in ports.findall("port") if p.find("state").get("state") == "open"}
    reasons: dict[str, int] = {}
    for port in ports.findall("port"):
        state = port.find("state")
        if state.get("state") != "open":
            reasons[state.get("reason", "")] = reasons.get(state.get("reason", ""), 0) + 1
    for extra in ports.findall("extraports"):
        for reason in extra.findall("extrareasons"):
            reasons[reason.get("reason", "")] = reasons.get(reason.get("reason", ""), 0) + int(reason.get("count", 0))
    return opened, reasons


def scan_finds_only_ssh_and_gateway(lab: Lab) -> None:
    inbound = lab.policy.inbound
    probe_ports = set(range(1, 1025)) | set(inbound.open_tcp_ports) | {inbound.metrics_port, *DOCKER_API_PORTS}
    ports = ",".join(str(port) for port in sorted(probe_ports))
    probed = len(probe_ports)
    scans = {family: _scan(address, ports, family == 6) for family, address in ((4, lab.ipv4), (6, lab.ipv6))}
    for family, scan in scans.items():
        report, _ = scan.communicate(timeout=180)
        assert scan.returncode == 0
        opened, reasons = _states(report)
        assert opened == set(inbound.open_tcp_ports), f"IPv{family}"
        # 'no-response': no RST, no ICMP unreachable, nothing at all.
        assert reasons == {"no-response": probed - len(opened)}, f"IPv{family}: {reasons}"


def test_scan_finds_only_ssh_and_gateway_and_nothing_else_answers(lab: Lab) -> None:
    scan_finds_only_ssh_and_gateway(lab)
