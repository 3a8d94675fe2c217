"""The platform's own scheduled snapshots (`platform:backups` mode "snapshots"), against the lab's
emulation of Hetzner's API with Hetzner's own client: a snapshot of the customer's server with its
labels, the oldest scheduled ones beyond the retention deleted and nothing else; and the same as daily
jobs of real workers, once a day a stack, deleted by a cancellation."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hcloud import Client
from hcloud.images import Image
from hcloud.server_types import ServerType

from config.customer import Backups, customer_labels
from provisioner.snapshots import SnapshotFailed, job_id, prune, take
from tests.conftest import PROJECT_TOKEN
from tests.hcloud_api.conftest import Emulator
from tests.provisioner.conftest import PLATFORM, running, wait_for
from tests.provisioner.events import cancellation, signup

BACKUPS = Backups(mode="snapshots", retention=2, labels={"tier": "gold"})


def _server(client: Client, customer: str) -> int:
    """The customer's server, as the program makes it (the stand-in CLI of the worker tests makes none)."""
    response = client.servers.create(
        name=f"claw-{customer}",
        server_type=ServerType(name="cpx22"),
        image=Image(name="debian-12"),
        labels=customer_labels(customer),
    )
    response.action.wait_until_finished()
    server_id: int = response.server.id
    return server_id


def _snapshots(client: Client, customer: str) -> list[Image]:
    return sorted(client.images.get_all(type=["snapshot"], label_selector=f"customer={customer}"), key=lambda i: i.id)


def test_a_scheduled_snapshot_is_labelled_and_only_the_newest_scheduled_ones_are_kept(hetzner_api: Emulator) -> None:
    client = hetzner_api.client(PROJECT_TOKEN)
    server_id = _server(client, "snapper")
    other = _server(client, "snapper-other")
    # What the retention must never touch: the decommission snapshot, a snapshot taken by hand, another
    # customer's scheduled one.
    final = client.servers.create_image(
        client.servers.get_by_id(server_id), labels={**customer_labels("snapper"), "expires-on": "2027-01-01"}
    )
    final.action.wait_until_finished()
    neighbour = take(client, "snapper-other", BACKUPS, lambda: False)

    taken = [take(client, "snapper", BACKUPS, lambda: False) for _ in range(3)]
    assert [outcome["deleted"] for outcome in taken] == [[], [], [taken[0]["snapshot_id"]]]
    kept = _snapshots(client, "snapper")
    assert [image.id for image in kept] == [final.image.id, taken[1]["snapshot_id"], taken[2]["snapshot_id"]]
    newest = kept[-1]
    assert newest.labels == {"customer": "snapper", "managed-by": "clawhosters", "backup": "scheduled", "tier": "gold"}
    assert newest.created_from.id == server_id and newest.description.startswith("claw-snapper scheduled ")
    assert [image.id for image in _snapshots(client, "snapper-other")] == [neighbour["snapshot_id"]]

    # A cancellation keeps none of them, only the final one.
    assert prune(client, "snapper", keep=0) == [taken[1]["snapshot_id"], taken[2]["snapshot_id"]]
    assert [image.id for image in _snapshots(client, "snapper")] == [final.image.id]
    client.servers.delete(client.servers.get_by_id(other)).wait_until_finished()
    with pytest.raises(SnapshotFailed, match="customer snapper-other has 0 servers at Hetzner; a stack has one"):
        take(client, "snapper-other", BACKUPS, lambda: False)


def test_the_workers_take_each_stack_s_snapshot_once_a_day(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, hetzner_api: Emulator
) -> None:
    client = hetzner_api.client(PROJECT_TOKEN)
    with running(request, tmp_path_factory.mktemp("hetzner-mode"), "sqlite") as provisioner:
        # Hetzner's backups (the default): no job of the platform's.
        assert json.loads(provisioner.cli("snapshots").stdout) == {"accepted": []}

    platform = json.dumps({**json.loads(PLATFORM), "backups": BACKUPS.model_dump()})
    with running(request, tmp_path_factory.mktemp("snapshots"), "sqlite", platform=platform) as provisioner:
        provisioner.start("worker")
        provisioner.post(signup("dailysnap", "evt_dailysnap"))
        wait_for("dailysnap ready", lambda: provisioner.status("dailysnap") == "ready", timeout=60)
        server_id = _server(client, "dailysnap")

        today = job_id("dailysnap", datetime.now(UTC).date())
        submitted = provisioner.cli("snapshots")
        assert json.loads(submitted.stdout) == {"accepted": [today]}, submitted.stderr
        assert json.loads(provisioner.cli("snapshots").stdout) == {"accepted": []}, "once a day"
        wait_for("the snapshot", lambda: provisioner.job(today)["status"] == "snapshotted", timeout=60)
        [snapshot] = _snapshots(client, "dailysnap")
        assert snapshot.created_from.id == server_id and snapshot.labels["tier"] == "gold"
        assert provisioner.job(today)["outputs"] == {"snapshot_id": snapshot.id, "deleted": []}
        assert provisioner.status("dailysnap") == "ready", "a snapshot is no billing event"

        provisioner.post(cancellation("dailysnap"))
        wait_for("dailysnap deprovisioned", lambda: provisioner.status("dailysnap") == "deprovisioned", timeout=60)
        assert _snapshots(client, "dailysnap") == []
        history = provisioner.get("/customers/dailysnap")[1]["history"]
        deleted = next(entry for entry in history if entry["event"] == "scheduled snapshots deleted")
        assert deleted["detail"] == str(snapshot.id)
