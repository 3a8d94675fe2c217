"""The platform's control plane end to end: billing's events through the provisioner's API, the jobs
in Redis, the stacks' state in an S3-compatible object store, and workers on two hosts that drive the
real CLI and providers against the lab's Hetzner."""

from __future__ import annotations

from typing import Any

import pytest
from hcloud.servers import BoundServer

from lab import servers
from lab.control_plane import ControlPlane
from lab.topology import CLIENT, WORKER_HOSTS, Peer
from lab.world import Lab, in_ns, run, wait_until
from tests.provisioner.events import cancellation, signup

CUSTOMER = "acme"


@pytest.fixture(scope="module")
def plane(lab: Lab) -> ControlPlane:
    """Started once; its processes are the lab's and stop with it."""
    control = ControlPlane(lab)
    control.start()
    return control


def _servers(lab: Lab, customer: str) -> list[BoundServer]:
    return [server for server in lab.hetzner().servers.get_all() if server.labels.get("customer") == customer]


def _ssh_session_from(host: Peer, server_id: int) -> bool:
    established = ["ss", "-Htn", "state", "established", "( sport = :22 )"]
    return f"{host.ipv4}:" in run(in_ns(servers.namespace(server_id), *established), check=False).stdout


def _status(plane: ControlPlane, customer: str, wanted: str, timeout: float) -> dict[str, Any]:
    views: list[dict[str, Any]] = []

    def reached() -> bool:
        views.append(plane.customer(customer))
        return views[-1].get("status") in (wanted, "failed")

    wait_until(f"{customer} to be {wanted}", reached, timeout=timeout, interval=2)
    assert views[-1]["status"] == wanted, views[-1]
    return views[-1]


def test_a_signup_outlives_its_worker_host_and_a_cancellation_leaves_only_the_snapshot(
    lab: Lab, plane: ControlPlane
) -> None:
    first, second = WORKER_HOSTS
    plane.start_worker(first)
    status, answer = plane.post_event(signup(CUSTOMER, gateway_image=lab.gateway_image()))
    assert (status, list(answer)) == (200, ["accepted"])

    # The first host dies while its CLI runs the new server's first remote command over SSH.
    def running_a_command() -> bool:
        made = _servers(lab, CUSTOMER)
        return bool(made) and _ssh_session_from(first, made[0].id)

    wait_until("the first host's SSH session to the new server", running_a_command, timeout=180)
    plane.kill_host(first)
    plane.start_worker(second)

    # Its lease lapses, the sweep queues the job again, and the second host clears the stack lock
    # the dead CLI left in the object store, then finishes the signup.
    view = _status(plane, CUSTOMER, "ready", timeout=360)
    takeover = next(entry for entry in view["history"] if entry["event"] == "took over")
    assert takeover["worker"].startswith(f"{second.link}:"), takeover
    assert "stack lock" in takeover["detail"], takeover
    assert view["worker"].startswith(f"{second.link}:")
    # One server, the one the first host created: the state in the object store kept it.
    [server] = _servers(lab, CUSTOMER)
    assert view["outputs"]["server_id"] == str(server.id)
    assert lab.http_status(view["outputs"]["ipv4_address"], 8080, namespace=CLIENT.namespace) == 401
    assert plane.stack_names() == [f"organization/clawhosters/customer-{CUSTOMER}"]

    status, answer = plane.post_event(cancellation(CUSTOMER))
    assert (status, list(answer)) == (200, ["accepted"])
    _status(plane, CUSTOMER, "deprovisioned", timeout=300)
    assert _servers(lab, CUSTOMER) == []
    snapshots = [
        image for image in lab.hetzner().images.get_all(type="snapshot") if image.labels.get("customer") == CUSTOMER
    ]
    assert [image.created_from.id for image in snapshots] == [server.id]
    assert plane.stack_names() == []
