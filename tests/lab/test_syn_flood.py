"""A SYN flood from one source is cut down to the per-source budget and logged; a legitimate
client at the same time does not notice."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from lab.flood import command as flood_command
from lab.topology import ATTACKER, CLIENT
from lab.world import REPO, Lab
from tests.lab.helpers import Kernel

FLOOD_RATE = 1000
FLOOD_SECONDS = 5
MAX_CLIENT_REQUESTS = 50
MIN_CLIENT_REQUESTS = 20
REQUIRED_SUCCESS = 0.95


@pytest.mark.parametrize("family,source", [(4, "203.0.113.18"), (6, "2001:0db8:0030:")])
def test_flood_is_logged_and_dropped_while_a_client_gets_through(
    lab: Lab, kernel_log: Kernel, family: int, source: str
) -> None:
    address = lab.address(family)
    port = lab.policy.inbound.gateway_port
    flood = subprocess.Popen(
        flood_command(ATTACKER.namespace, address, port, FLOOD_RATE, FLOOD_SECONDS),
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)  # let the flood exhaust the attacker's budget first
        answers = []
        # Only requests made while the flood runs count.
        while len(answers) < MAX_CLIENT_REQUESTS:
            answer = lab.http_status(address, port, CLIENT.namespace, auth=True)
            if flood.poll() is not None:
                break
            answers.append(answer)
            time.sleep(0.05)
        report = json.loads(flood.communicate(timeout=FLOOD_SECONDS + 10)[0])
    finally:
        flood.kill()
        flood.wait()

    assert report["rate"] >= FLOOD_RATE * 0.95 and report["seconds"] >= FLOOD_SECONDS
    assert len(answers) >= MIN_CLIENT_REQUESTS
    assert answers.count(200) >= REQUIRED_SUCCESS * len(answers), answers
    logged = kernel_log.since(lab.policy.syn_guard.log_prefix)
    assert any(f"SRC={source}" in line for line in logged), "no PORTSCAN_BLOCKED line for the attacker"
    client_source = CLIENT.ipv4 if "." in source else "2001:0db8:0020:"
    assert not any(f"SRC={client_source}" in line for line in logged), "the legitimate client was limited"
