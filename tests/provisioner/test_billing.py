"""Billing as Stripe means it: real serve and worker processes, events shaped as Stripe's and signed as
Stripe signs them (tests/provisioner/events.py), the stand-in pulumi CLI recording each operation.

An event that changes nothing is answered `noted` and stored as a job that never runs: that a noted
event ran nothing is therefore known at once, without waiting for a timer."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provisioner import billing
from provisioner.store import JobStore, key_value
from provisioner.webhook import parse
from tests.hcloud_api.conftest import Emulator
from tests.provisioner.conftest import Provisioner, running, sold_out, wait_for
from tests.provisioner.events import LARGE, SMALL, Subscription, subscription
from tests.provisioner.standin import records


def _plan(price: str, server_type: str) -> dict[str, Any]:
    return {
        "prices": [price],
        "choices": [{"server_type": server_type, "location": where} for where in ("fsn1", "nbg1")],
    }


PLANS = json.dumps({"small": _plan(SMALL, "cx23"), "large": _plan(LARGE, "cx33")})


@pytest.fixture
def billed(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Provisioner]:
    """A provisioner selling two plans, with a worker."""
    with running(request, tmp_path, "sqlite", settings={"CLAW_PLANS": PLANS}) as deployment:
        deployment.start("worker")
        yield deployment


def _post(provisioner: Provisioner, body: bytes) -> str:
    """Deliver a signed event; the answer's outcome (always a 200: Stripe must not deliver it again)."""
    code, answer = provisioner.post(body)
    assert code == 200, answer
    [(outcome, event_id)] = answer.items()
    assert event_id == json.loads(body)["id"]
    return str(outcome)


def _ready(provisioner: Provisioner, customer: str) -> dict[str, Any]:
    wait_for(f"{customer} ready", lambda: provisioner.status(customer) == "ready", timeout=60)
    return provisioner.get(f"/customers/{customer}")[1]


def _ups(provisioner: Provisioner, customer: str) -> list[dict[str, Any]]:
    return [record for record in records(provisioner.records, "up") if record["customer"] == customer]


def _gated(provisioner: Provisioner, up: dict[str, Any]) -> bool:
    """Whether an `up` was a gated deploy's: held to the plan its reviewed preview saved in the
    provisioner's plans directory (a first `up` previews into a scratch directory of its own)."""
    plan = Path(up["argv"][up["argv"].index("--plan") + 1])
    return plan.is_relative_to(Path(provisioner.env["CLAW_STATE_DIR"]) / "plans")


def _decommissioned(provisioner: Provisioner, customer: str) -> list[str]:
    wait_for(f"{customer} gone", lambda: provisioner.status(customer) == "deprovisioned", timeout=60)
    return [record["action"] for record in records(provisioner.records) if record["customer"] == customer]


def test_a_server_only_for_a_subscription_in_good_standing_kept_while_stripe_collects(billed: Provisioner) -> None:
    """incomplete: nothing; active: a server; past_due, unpaid, paused and back: the server as it is;
    canceled: decommissioned after the grace period."""
    acme = subscription("acme")
    assert _post(billed, acme.event("created", "incomplete")) == "noted"
    assert billed.status("acme") is None and records(billed.records) == [], "no server before the first payment"
    assert _post(billed, acme.event("updated", "active", previous={"status": "incomplete"})) == "accepted"
    view = _ready(billed, "acme")
    assert view["billing"] == {
        "stripe_customer": acme.stripe_customer,
        "subscription": acme.id,
        "subscriptions": {acme.id: "active"},
    }
    [up] = _ups(billed, "acme")
    assert up["config"]["clawhosters:server_type"] == "cx23", "the plan's server type"

    for kind, status, was in [
        ("updated", "past_due", "active"),
        ("updated", "active", "past_due"),
        ("updated", "past_due", "active"),
        ("updated", "unpaid", "past_due"),
        ("updated", "active", "unpaid"),
        ("paused", "paused", "active"),
        ("resumed", "active", "paused"),
    ]:
        assert _post(billed, acme.event(kind, status, previous={"status": was})) == "noted", status
        assert billed.get("/customers/acme")[1]["billing"]["subscriptions"] == {acme.id: status}
    assert billed.status("acme") == "ready" and len(records(billed.records)) == 1, "nothing ran, nothing stopped"

    assert _post(billed, acme.event("deleted", "canceled")) == "accepted"
    assert _decommissioned(billed, "acme") == ["up", "up", "destroy", "remove"]


def test_a_plan_change_resizes_through_the_gated_deploy_once_paid_for(billed: Provisioner) -> None:
    acme = subscription("acme")
    _post(billed, acme.event("created", "active"))
    _ready(billed, "acme")
    larger = dataclasses.replace(acme, price=LARGE)
    assert _post(billed, larger.event("updated", "active", previous={"items": {}})) == "accepted"
    _ready(billed, "acme")
    first, resized = _ups(billed, "acme")
    assert resized["config"]["clawhosters:server_type"] == "cx33"
    assert {key: value for key, value in resized["config"].items() if key != "clawhosters:server_type"} == {
        key: value for key, value in first["config"].items() if key != "clawhosters:server_type"
    }, "only the server type changes"
    assert not _gated(billed, first) and _gated(billed, resized), "the change of a running server is reviewed"

    # Back to the small plan while a payment is due: applied once the subscription is paid again.
    assert _post(billed, acme.event("updated", "past_due", previous={"items": {}})) == "noted"
    assert len(_ups(billed, "acme")) == 2
    assert _post(billed, acme.event("updated", "active", previous={"status": "past_due"})) == "accepted"
    _ready(billed, "acme")
    assert [up["config"]["clawhosters:server_type"] for up in _ups(billed, "acme")] == ["cx23", "cx33", "cx23"]


def test_a_plan_change_keeps_the_servers_location_or_is_refused_changing_nothing(
    billed: Provisioner, hetzner_api: Emulator
) -> None:
    store = JobStore(key_value(billed.env["CLAW_QUEUE_URL"]))
    acme = subscription("acme")
    with sold_out(hetzner_api, ("cx23", "fsn1")):
        _post(billed, acme.event("created", "active"))
        _ready(billed, "acme")
    [signup] = _ups(billed, "acme")
    assert (signup["config"]["clawhosters:server_type"], signup["config"]["clawhosters:location"]) == ("cx23", "nbg1")

    # The large plan's first choice is in fsn1, available again: the server stays in nbg1.
    larger = dataclasses.replace(acme, price=LARGE)
    _post(billed, larger.event("updated", "active", previous={"items": {}}))
    _ready(billed, "acme")
    resized = _ups(billed, "acme")[-1]
    assert (resized["config"]["clawhosters:server_type"], resized["config"]["clawhosters:location"]) == ("cx33", "nbg1")
    placed = store.placement("acme")
    assert placed is not None and (placed.server_type, placed.location, placed.plan) == ("cx33", "nbg1", "large")

    # Back to the small plan while Hetzner has no cx23 in nbg1: refused, and nothing changes.
    operations = records(billed.records)
    with sold_out(hetzner_api, ("cx23", "nbg1")):
        refused = acme.event("updated", "active", previous={"items": {}})
        _post(billed, refused)
        wait_for("the change to fail", lambda: billed.status("acme") == "failed", timeout=60)
    job = billed.job(json.loads(refused)["id"])
    assert job["attempts"] == 1 and str(job["last_error"]).startswith(
        "NoPlacement: plan 'small' cannot run claw-acme (cx33 in nbg1, which a change of plan never moves): "
        "cx23 in nbg1: Hetzner does not sell cx23 in nbg1"
    )
    assert records(billed.records) == operations, "no stack operation ran"
    assert store.placement("acme") == placed


def test_a_plan_switch_through_a_second_subscription_keeps_the_server(billed: Provisioner) -> None:
    old, new = subscription("acme"), subscription("acme", 2, price=LARGE)
    _post(billed, old.event("created", "active"))
    _ready(billed, "acme")
    assert _post(billed, new.event("created", "incomplete")) == "noted", "not until it is paid for"
    assert _post(billed, new.event("updated", "active", previous={"status": "incomplete"})) == "accepted"
    view = _ready(billed, "acme")
    assert view["billing"]["subscription"] == new.id, "the instance moved to the new subscription"
    assert _gated(billed, _ups(billed, "acme")[-1])
    assert _ups(billed, "acme")[-1]["config"]["clawhosters:server_type"] == "cx33"

    cancelled = old.event("deleted", "canceled")
    assert _post(billed, cancelled) == "noted", "the old subscription carries nothing any more"
    assert billed.job(json.loads(cancelled)["id"])["status"] == "noted"
    view = billed.get("/customers/acme")[1]
    assert view["status"] == "ready" and view["billing"]["subscriptions"] == {old.id: "canceled", new.id: "active"}
    assert [record["action"] for record in records(billed.records)] == ["up", "up"], "no decommission"


def test_a_duplicate_subscription_cancelled_keeps_the_server(billed: Provisioner) -> None:
    first, duplicate = subscription("globex"), subscription("globex", 2)
    _post(billed, first.event("created", "active"))
    _ready(billed, "globex")
    assert _post(billed, duplicate.event("created", "active")) == "noted", "the same settings: nothing to do"
    assert billed.get("/customers/globex")[1]["billing"]["subscription"] == duplicate.id
    assert _post(billed, duplicate.event("deleted", "canceled")) == "noted"
    view = billed.get("/customers/globex")[1]
    assert view["status"] == "ready" and view["billing"]["subscription"] == first.id, "carried by the first again"
    assert len(records(billed.records)) == 1


def test_an_event_of_another_stripe_customer_naming_the_customer_is_refused(billed: Provisioner) -> None:
    acme = subscription("acme")
    _post(billed, acme.event("created", "active"))
    _ready(billed, "acme")
    stranger = subscription("acme", 7, stripe_customer="cus_Stranger0000000000000")
    forged = dataclasses.replace(acme, stripe_customer=stranger.stripe_customer)
    for body in (
        stranger.event("created", "active", ssh_enabled=False),
        stranger.event("deleted", "canceled"),
        forged.event("deleted", "canceled"),  # the owner's subscription id, another Stripe customer
    ):
        assert _post(billed, body) == "refused"
        assert _post(billed, body) == "refused", "a redelivery is refused again"
        assert billed.get(f"/jobs/{json.loads(body)['id']}")[0] == 404, "nothing is stored"
    view = billed.get("/customers/acme")[1]
    assert view["status"] == "ready"
    assert view["billing"] == {
        "stripe_customer": acme.stripe_customer,
        "subscription": acme.id,
        "subscriptions": {acme.id: "active"},
    }
    assert len(records(billed.records)) == 1
    refusals = [json.loads(line) for line in billed.logs.splitlines() if '"refused"' in line]
    assert {line.get("stripe_customer") for line in refusals} == {stranger.stripe_customer}


def test_out_of_order_and_replayed_deliveries_end_where_stripe_did(billed: Provisioner) -> None:
    initech = subscription("initech")
    now = int(time.time())
    # `created` (incomplete) delivered after the `updated` that made the subscription active.
    paid, created = (
        initech.event("updated", "active", created=now + 1),
        initech.event("created", "incomplete", created=now),
    )
    assert [_post(billed, body) for body in (paid, paid, created, created)] == [
        "accepted",
        "duplicate",
        "stale",
        "duplicate",
    ]
    _ready(billed, "initech")
    overdue = initech.event("updated", "past_due", created=now + 2)
    assert [_post(billed, body) for body in (overdue, overdue, paid)] == ["noted", "duplicate", "duplicate"]
    # `updated` delivered after the `deleted` that followed it, one of the same second, and a later one.
    cancel = initech.event("deleted", "canceled", created=now + 4)
    assert [_post(billed, body) for body in (cancel, cancel)] == ["accepted", "duplicate"]
    for late in (
        initech.event("updated", "active", created=now + 3),
        initech.event("updated", "active", "evt_zzzzzzzzzzzzzzzz", created=now + 4),
        initech.event("updated", "active", created=now + 9),  # an ended subscription stays ended
    ):
        assert _post(billed, late) == "stale"
    assert _decommissioned(billed, "initech") == ["up", "up", "destroy", "remove"]
    assert [_post(billed, body) for body in (paid, overdue, cancel)] == ["duplicate"] * 3
    assert billed.status("initech") == "deprovisioned", "a replayed signup does not bring the server back"
    assert sorted(job["status"] for job in billed.get("/jobs")[1]["jobs"]) == [
        "deprovisioned", "noted", "ready", "stale", "stale", "stale", "stale",
    ]  # fmt: skip


def _accept(store: JobStore, body: bytes, now: float) -> tuple[str, Any]:
    outcome, job, _ = billing.accept(store, parse(body, {}), 60, now)
    return outcome, job


def test_ownership_and_jobs_are_one_transaction_on_sqlite_and_redis(stores: tuple[JobStore, JobStore]) -> None:
    store, other = stores
    first, second = subscription("acme"), subscription("acme", 2)
    stranger: Subscription = subscription("acme", 3, stripe_customer="cus_Stranger0000000000000")
    now = time.time()
    outcome, provision = _accept(store, first.event("created", "active"), now)
    assert outcome == "accepted" and provision.kind == "provision" and provision.state == "queued"
    assert _accept(other, stranger.event("created", "active"), now) == ("refused", None)
    assert _accept(other, second.event("created", "active"), now)[0] == "noted"
    assert _accept(store, first.event("deleted", "canceled"), now)[0] == "noted"
    record = billing.record_of(other, "acme")
    assert record is not None and record.stripe_customer == first.stripe_customer and record.owner == second.id
    outcome, deprovision = _accept(other, second.event("deleted", "canceled"), now)
    assert outcome == "accepted" and deprovision.kind == "deprovision" and deprovision.run_after == now + 60
    assert deprovision.created > provision.created, "a customer's jobs are ordered as they were accepted"
    superseded = store.get(provision.event_id)
    assert superseded is not None and superseded.state == "superseded", "the queued signup never runs"
    latest = store.latest("acme")
    assert latest is not None and latest.event_id == deprovision.event_id
