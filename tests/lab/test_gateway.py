"""The gateway answers on its port behind basic auth; its metrics are reachable from inside only."""

from __future__ import annotations

import pytest

from lab.topology import ATTACKER, CLIENT
from lab.world import Lab


@pytest.mark.parametrize("family", [4, 6])
def test_gateway_needs_credentials(lab: Lab, family: int) -> None:
    address = lab.address(family)
    port = lab.policy.inbound.gateway_port
    assert lab.http_status(address, port, CLIENT.namespace) == 401
    assert lab.http_status(address, port, CLIENT.namespace, auth=True) == 200


@pytest.mark.parametrize("family", [4, 6])
def test_metrics_are_not_reachable_from_outside(lab: Lab, family: int) -> None:
    assert lab.http_status(lab.address(family), lab.policy.inbound.metrics_port, ATTACKER.namespace) == 0


def test_metrics_are_reachable_inside_the_vps(lab: Lab) -> None:
    assert lab.http_status("127.0.0.1", lab.policy.inbound.metrics_port) == 200
