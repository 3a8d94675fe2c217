"""The platform's own scheduled snapshots (`platform:backups` mode "snapshots", in place of Hetzner's
backups): once a day a job per stack snapshots the customer's server and deletes the oldest of its
scheduled snapshots beyond `retention`; a cancellation deletes them once its final snapshot is taken.

A scheduled snapshot carries the customer's labels, `backup=scheduled` and the setting's own labels;
only those count towards the retention, so the decommission snapshot and anything an operator took
by hand are never deleted here. Each runs as a job under the stack's lease, like a deploy, with the
customer's project's token, through Hetzner's own client.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import date, datetime

from hcloud import Client
from hcloud.actions import BoundAction

from config.customer import SCHEDULED_SNAPSHOT, Backups, customer_labels

# A snapshot of a big disk takes Hetzner minutes; past this the job fails and is retried.
SNAPSHOT_SECONDS = 3600
# What a scheduled snapshot takes from its project's request budget: the server, the create, its action
# polled less and less often for a few minutes, the list, a deletion.
REQUESTS = 12
LONGEST_POLL_SECONDS = 30


class SnapshotFailed(RuntimeError):
    """The snapshot could not be taken; the job's error says why."""


def job_id(customer_id: str, day: date) -> str:
    """One scheduled snapshot a stack a day: the job's id names the day."""
    return f"snapshot-{day.isoformat()}-{customer_id}"


def labels(customer_id: str, backups: Backups) -> dict[str, str]:
    return {**backups.labels, **SCHEDULED_SNAPSHOT, **customer_labels(customer_id)}


def _selector(mapping: dict[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in mapping.items())


def take(client: Client, customer_id: str, backups: Backups, stopped: Callable[[], bool]) -> dict[str, object]:
    """Snapshot the customer's server, then keep its newest `retention` scheduled snapshots; what was
    taken and deleted."""
    servers = client.servers.get_all(label_selector=_selector(customer_labels(customer_id)))
    if len(servers) != 1:
        raise SnapshotFailed(f"customer {customer_id} has {len(servers)} servers at Hetzner; a stack has one")
    server = servers[0]
    response = client.servers.create_image(
        server,
        type="snapshot",
        description=f"{server.name} scheduled {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
        labels=labels(customer_id, backups),
    )
    _wait(client, response.action, stopped)
    return {"snapshot_id": response.image.id, "deleted": prune(client, customer_id, backups.retention)}


def prune(client: Client, customer_id: str, keep: int) -> list[int]:
    """Delete the customer's scheduled snapshots but the newest `keep` (one still being taken is not
    counted, nor deleted); the ids deleted."""
    scheduled = client.images.get_all(
        type=["snapshot"], label_selector=_selector(SCHEDULED_SNAPSHOT | customer_labels(customer_id))
    )
    taken = sorted((image for image in scheduled if image.status == "available"), key=lambda i: i.created)
    expired = taken[: max(0, len(taken) - keep)]
    for image in expired:
        client.images.delete(image)
    return [image.id for image in expired]


def _wait(client: Client, action: BoundAction, stopped: Callable[[], bool]) -> None:
    """Until Hetzner has taken the snapshot, polling less often as it takes longer."""
    deadline, delay = time.monotonic() + SNAPSHOT_SECONDS, 1.0
    while True:
        current = client.actions.get_by_id(action.id)
        if current.status == "success":
            return
        if current.status == "error":
            raise SnapshotFailed(f"Hetzner's create_image failed: {current.error}")
        if stopped():
            raise SnapshotFailed("stopped while Hetzner was taking the snapshot")
        if time.monotonic() > deadline:
            raise SnapshotFailed(f"Hetzner had not taken the snapshot after {SNAPSHOT_SECONDS} s")
        time.sleep(delay)
        delay = min(delay * 2, LONGEST_POLL_SECONDS)
