"""Signups, a rollout and a pull-request preview through the whole control plane on the lab, by
number of worker hosts: the provisioner's API, Redis, the object store as the state backend, workers
driving the real CLI onto booted servers.

Prints (and writes to RESULTS.md) the wall time for a batch of signups, for a rollout in waves of
those stacks (each deploy a job on the workers), for a fleet preview of them (as the pull-request
workflow runs it) and for their cancellations; each operation's own time from the job history, and
the Hetzner requests per signup, per deploy and per preview; then projects the workers and projects
5,000 signups, and a 5,000-stack rollout, need within one hour.

    python -m bench.control_plane [--stacks 4]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import spread, table, write_section
from lab.control_plane import ControlPlane
from lab.topology import WORKER_HOSTS
from lab.world import HETZNER_PROJECTS, REPO, Lab, LabError, down, wait_until
from tests.provisioner.events import cancellation, signup

FLEET = 5_000
HOUR = 3600.0


def _requests(lab: Lab, *, read_only: bool = False) -> int:
    return sum(int(lab.hetzner_usage(project, read_only=read_only)["requests"]) for project in HETZNER_PROJECTS)


def _rollout(plane: ControlPlane, customers: Sequence[str], state: Path) -> float:
    """A rollout of the customers' stacks in waves (canary, then the rest at once); its wall time."""
    stacks = [argument for customer in customers for argument in ("--stack", f"customer-{customer}")]
    started = time.monotonic()
    plane.start_rollout(state, *stacks, "--first-batch", str(len(customers)), "--concurrency", str(len(customers)))
    if plane.rollout_exit(timeout=1800) != 0:
        raise LabError(f"the rollout failed: {plane.log('rollout')[-2000:]}")
    return time.monotonic() - started


def _deploy_seconds(plane: ControlPlane, customers: Sequence[str]) -> list[float]:
    status, answer = plane.get("/jobs")
    if status != 200:
        raise LabError(f"/jobs answered {status}")
    deploys = [job for job in answer["jobs"] if job["kind"] == "deploy" and job["customer_id"] in customers]
    return [entry["seconds"] for job in deploys for entry in job["history"] if entry["event"] == "done"]


def _preview(plane: ControlPlane, out: Path) -> float:
    started = time.monotonic()
    result = plane.preview_fleet(REPO, out, "--concurrency", "2")
    if result.returncode != 0:
        raise LabError(f"the fleet preview failed: {result.stdout[-2000:]}{result.stderr[-2000:]}")
    return time.monotonic() - started


def _batch(plane: ControlPlane, customers: Sequence[str], bodies: Sequence[bytes], wanted: str) -> float:
    """Post every event at once; the seconds until every customer reached `wanted`."""
    started = time.monotonic()
    for body in bodies:
        status, answer = plane.post_event(body)
        if status != 200:
            raise LabError(f"the webhook answered {status}: {answer}")

    def reached() -> bool:
        statuses = [plane.customer(customer).get("status") for customer in customers]
        if "failed" in statuses:
            raise LabError(f"a job failed: {statuses}")
        return all(status == wanted for status in statuses)

    wait_until(f"{len(customers)} customers to be {wanted}", reached, timeout=1800, interval=1)
    return time.monotonic() - started


def _operation_seconds(plane: ControlPlane, customers: Sequence[str]) -> list[float]:
    views: list[dict[str, Any]] = [plane.customer(customer) for customer in customers]
    return [entry["seconds"] for view in views for entry in view["history"] if entry["event"] == "done"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.control_plane")
    parser.add_argument("--stacks", type=int, default=4, help="signups per batch (each boots a server)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root (it builds the lab)")
    lab = Lab()
    rows: list[list[str]] = []
    per_signup: list[float] = []
    per_deploy: list[float] = []
    per_preview: list[float] = []
    throughput: dict[int, float] = {}
    deploy_rate: dict[int, float] = {}
    scratch = Path(tempfile.mkdtemp(prefix="bench-control-plane-"))
    try:
        lab.up(deploy=False)
        plane = ControlPlane(lab)
        plane.start()
        image = lab.gateway_image()
        for hosts in range(1, len(WORKER_HOSTS) + 1):
            for host in WORKER_HOSTS[:hosts]:
                plane.start_worker(host)
            customers = [f"bench{hosts}x{index}" for index in range(args.stacks)]
            before = _requests(lab)
            up_wall = _batch(plane, customers, [signup(c, gateway_image=image) for c in customers], "ready")
            per_signup.append((_requests(lab) - before) / len(customers))
            ups = _operation_seconds(plane, customers)
            before = _requests(lab)
            rollout_wall = _rollout(plane, customers, scratch / f"rollout-{hosts}.json")
            per_deploy.append((_requests(lab) - before) / len(customers))
            deploys = _deploy_seconds(plane, customers)
            deploy_rate[hosts] = len(customers) / rollout_wall
            before = _requests(lab, read_only=True)
            preview_wall = _preview(plane, scratch / f"preview-{hosts}")
            per_preview.append((_requests(lab, read_only=True) - before) / len(customers))
            down_wall = _batch(plane, customers, [cancellation(c) for c in customers], "deprovisioned")
            downs = _operation_seconds(plane, customers)
            throughput[hosts] = len(customers) / up_wall
            rows.append(
                [
                    str(hosts),
                    str(len(customers)),
                    f"{up_wall:.0f} s",
                    spread(ups, " s", 0),
                    f"{rollout_wall:.0f} s",
                    spread(deploys, " s", 0),
                    f"{preview_wall:.0f} s",
                    f"{down_wall:.0f} s",
                    spread(downs, " s", 0),
                    f"{throughput[hosts] * 60:.2f}",
                ]
            )
            for host in WORKER_HOSTS[:hosts]:
                plane.kill_host(host)
    finally:
        lab.close()
        down(lab.state_dir)
    one_worker = throughput[1]
    workers_for_an_hour = math.ceil(FLEET / (one_worker * HOUR))
    requests = statistics.mean(per_signup)
    deploy_requests = statistics.mean(per_deploy)
    rollout_workers = math.ceil(FLEET / (deploy_rate[1] * HOUR))
    body = (
        f"Batches of {args.stacks} signups posted at once to the provisioner's API in the lab (Redis and an "
        "S3-compatible object store on the provisioner's host, one worker process on each worker host, "
        "the real CLI and providers, each signup a booted server with its baseline and gateway), then "
        "their cancellations (snapshot, destroy, stack removed). Wall time from the first post until every "
        "customer is ready (or deprovisioned); the operation's own time from its job history, median "
        "[min, max]. Between them, a rollout of the batch's stacks (`fleet rollout --provisioner`: the "
        "canary, then the rest at once; each deploy a preview with the pack, `up --plan` held to it and "
        "the health gate, run by the workers) until it exits, and a fleet preview of them as the "
        "pull-request workflow runs it (review token, each project's read-only token, 2 previews at "
        "once, on the runner, not on the workers). The worker hosts share this machine's 2 cores, so a "
        "second host adds less than it would on a machine of its own.\n\n"
        + table(
            [
                "worker hosts",
                "signups",
                "all ready",
                "one signup",
                "rollout, all deployed",
                "one deploy",
                "fleet preview",
                "all cancelled",
                "one cancellation",
                "signups per minute",
            ],
            rows,
        )
        + f"\n\nHetzner requests per signup: {requests:.0f}. Projection: at one worker's measured rate, "
        f"{FLEET:,} signups within one hour need {workers_for_an_hour} worker processes (on hosts of their "
        f"own), and {math.ceil(FLEET * requests / (2 * 3600))} Hetzner projects (a full bucket of 3,600 "
        "plus an hour of refill each). "
        f"Hetzner requests per deploy: {deploy_requests:.0f}, per stack's preview: {statistics.mean(per_preview):.0f}. "
        f"A rollout of {FLEET:,} stacks within one hour, at one worker's measured deploy rate (the canary's "
        f"wave included), needs {rollout_workers} worker processes and "
        f"{math.ceil(FLEET * deploy_requests / (2 * 3600))} Hetzner projects."
    )
    print(write_section("Control plane: signups, a rollout and a fleet preview by worker hosts", body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
