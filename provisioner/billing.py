"""What Stripe's subscription events mean for a customer's instance: who owns it, which subscription
carries it, and what has to happen to it.

Ownership. A customer's instance (`metadata.customer_id` of a subscription) belongs to the Stripe
customer whose subscription first named it, for good: an event of another Stripe customer naming it
is refused and changes nothing. Of that Stripe customer's subscriptions naming the instance, the newest
live one (by the subscription's own creation time) carries it, and its settings and plan (the one its
price selects, CLAW_PLANS) are the instance's. So a plan switch through a new subscription moves the
instance to the new one once it is live, and cancelling the old subscription, or a duplicate, leaves
the server alone. The instance is decommissioned (after the grace period) only when no live
subscription carries it any more.

Statuses (Stripe's, `data.object.status`):
- `active`, `trialing`: in good standing. A server is made only for these, and a changed plan or
  setting applies (a provisioned stack changes through the gated deploy; a change of plan changes the
  server's type, never its location: provisioner/placement.py).
- `past_due` (Stripe retries the payment), `unpaid` (retries exhausted, the subscription kept) and
  `paused` (no invoices until resumed): live, so the server keeps running with the settings it has,
  data untouched, until the subscription is in good standing again (then pending changes apply) or
  ends. No new server is made for them, but a decommission still waiting out its grace period is
  called off.
- `incomplete` (first payment not made): nothing happens yet.
- `canceled`, `incomplete_expired`: ended, for good; a later event cannot revive the subscription.

Order. Stripe does not deliver in order. Each subscription's state is that of its newest event (by
Stripe's `created`, then the event's place in a subscription's life: created, then updated, paused
or resumed, then deleted; then the event id); an older one arriving late is stale. The instance's
desired state is computed from every subscription's state, never from the last event alone, so the
order of arrival does not change the outcome.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from config.plans import DEFAULT_PLAN
from provisioner.placement import customer_settings
from provisioner.store import Job, JobStore, Reader, Write

Status = Literal["incomplete", "incomplete_expired", "trialing", "active", "past_due", "canceled", "unpaid", "paused"]
STATUSES: tuple[str, ...] = get_args(Status)
GOOD_STANDING: tuple[Status, ...] = ("active", "trialing")
LIVE: tuple[Status, ...] = (*GOOD_STANDING, "past_due", "unpaid", "paused")
ENDED: tuple[Status, ...] = ("canceled", "incomplete_expired")
# Where each event stands in a subscription's life: orders a subscription's events of the same second.
LIFE = {
    "customer.subscription.created": 0,
    "customer.subscription.updated": 1,
    "customer.subscription.paused": 1,
    "customer.subscription.resumed": 1,
    "customer.subscription.deleted": 2,
}
Outcome = Literal["accepted", "noted", "stale", "refused"]


@dataclass(frozen=True)
class SubscriptionEvent:
    """An authenticated `customer.subscription.*` event, validated: what the provisioner reads of it."""

    event_id: str
    type: str
    # Stripe's `created` of the event (Unix seconds).
    created: int
    stripe_customer: str
    subscription: str
    # The subscription's own creation time: the newest live subscription carries the instance.
    subscription_created: int
    status: Status
    customer_id: str
    # The instance's settings (`clawhosters:*`) from the subscription's metadata, and the plan its price
    # selects; empty and None once the subscription has ended.
    config: dict[str, str]
    plan: str | None

    @property
    def order(self) -> tuple[int, int, str]:
        return (self.created, LIFE[self.type], self.event_id)


class SubscriptionState(BaseModel):
    """A subscription as its newest event showed it."""

    model_config = ConfigDict(extra="forbid")

    status: Status
    created: int
    event_id: str
    event_created: int
    event_life: int
    config: dict[str, str] = Field(default_factory=dict)
    plan: str | None = None

    @property
    def order(self) -> tuple[int, int, str]:
        return (self.event_created, self.event_life, self.event_id)


class BillingRecord(BaseModel):
    """Who owns a customer's instance, and every subscription of theirs that named it."""

    model_config = ConfigDict(extra="forbid")

    stripe_customer: str
    # The subscription that carries the instance; None while none is live.
    owner: str | None = None
    subscriptions: dict[str, SubscriptionState] = Field(default_factory=dict)

    def carrier(self) -> str | None:
        live = [(state.created, name) for name, state in self.subscriptions.items() if state.status in LIVE]
        return max(live)[1] if live else None


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reason: str
    # The record to store (None: nothing changes) and the job the event amounts to.
    record: BillingRecord | None = None
    job: Job | None = None


def decide(
    record: BillingRecord | None, latest: Job | None, event: SubscriptionEvent, grace_seconds: int, now: float
) -> Decision:
    """What `event` does, given the customer's billing record and newest billing job."""
    if record is not None and record.stripe_customer != event.stripe_customer:
        return Decision("refused", f"{event.customer_id} belongs to another Stripe customer")
    record = (
        record.model_copy(deep=True) if record is not None else BillingRecord(stripe_customer=event.stripe_customer)
    )
    known = record.subscriptions.get(event.subscription)
    if known is not None and known.status in ENDED:
        return Decision("stale", f"{event.subscription} has ended ({known.status}, {known.event_id})")
    if known is not None and known.order > event.order:
        return Decision("stale", f"older than {known.event_id}, {event.subscription}'s newest event")
    record.subscriptions[event.subscription] = SubscriptionState(
        status=event.status,
        created=event.subscription_created,
        event_id=event.event_id,
        event_created=event.created,
        event_life=LIFE[event.type],
        config=event.config,
        plan=event.plan,
    )
    record.owner = record.carrier()
    job, reason = _job(record, latest, event, grace_seconds, now)
    return Decision("accepted" if job is not None else "noted", reason, record, job)


def _job(
    record: BillingRecord, latest: Job | None, event: SubscriptionEvent, grace_seconds: int, now: float
) -> tuple[Job | None, str]:
    """The job that brings the instance to what the subscriptions now say, or None and why none."""
    # The instance as the customer's newest billing job left it, or will leave it.
    current = _instance(latest.config, latest.plan) if latest is not None and latest.kind == "provision" else None
    # Jobs follow one another in the order they were accepted, whatever the events' own times.
    created = max(event.created, latest.created + 1) if latest is not None else event.created
    if record.owner is None:
        if current is None:
            return None, "no live subscription, and no instance to decommission"
        deprovision = Job(
            event_id=event.event_id,
            kind="deprovision",
            customer_id=event.customer_id,
            created=created,
            run_after=now + grace_seconds,
        )
        return deprovision, f"no live subscription carries the instance any more ({event.subscription} {event.status})"
    owner = record.subscriptions[record.owner]
    carried = f"{record.owner} ({owner.status}) carries the instance"
    if owner.status in GOOD_STANDING:
        wanted = _instance(owner.config, owner.plan)
    elif current is not None:
        wanted = current  # the server keeps what it has until the subscription is in good standing
    elif latest is not None and latest.kind == "deprovision" and latest.state == "queued":
        wanted = _instance(owner.config, owner.plan)  # the server is still there: the decommission is called off
    else:
        return None, f"{carried}; no server is made while it is {owner.status}"
    if wanted == current:
        return None, f"{carried}; the instance's settings and plan stay as they are"
    provision = Job(
        event_id=event.event_id,
        kind="provision",
        customer_id=event.customer_id,
        created=created,
        config=wanted.config,
        plan=wanted.plan,
        run_after=now,
    )
    return provision, carried


@dataclass(frozen=True)
class _Instance:
    """What the subscriptions decide of an instance: the customer's settings and the plan."""

    config: dict[str, str]
    plan: str


def _instance(config: dict[str, str], plan: str | None) -> _Instance:
    # A job's settings hold where its worker placed the server too: the platform's, not billing's. No plan
    # (a job or subscription recorded before plans): the default plan.
    return _Instance(customer_settings(config), plan or DEFAULT_PLAN)


def record_only(event: SubscriptionEvent, outcome: Literal["noted", "stale"], reason: str) -> Job:
    """The job record of an event that runs nothing: a redelivery of it is then a duplicate, and an
    operator sees it with the customer's other events."""
    job = Job(
        event_id=event.event_id,
        kind="deprovision" if event.status in ENDED else "provision",
        customer_id=event.customer_id,
        created=event.created,
        state=outcome,
    )
    job.note(outcome, detail=reason)
    return job


AcceptOutcome = Literal["accepted", "noted", "stale", "refused", "duplicate"]


def _key(customer_id: str) -> str:
    return f"billing:{customer_id}"


def record_of(store: JobStore, customer_id: str) -> BillingRecord | None:
    raw = store.kv.get(_key(customer_id))
    return None if raw is None else BillingRecord.model_validate_json(raw)


def accept(
    store: JobStore, event: SubscriptionEvent, grace_seconds: int, now: float
) -> tuple[AcceptOutcome, Job | None, str]:
    """Store what `event` means in one transaction, before the webhook answers: the customer's billing
    record, the event's job record, and, when the instance must change, that job as the customer's
    newest (superseding a queued older one). A refused event stores nothing."""
    result: list[tuple[AcceptOutcome, Job | None, str]] = []

    def change(read: Reader) -> dict[str, Write] | None:
        result.clear()
        existing = read(f"job:{event.event_id}")
        if existing is not None:
            result.append(("duplicate", Job.model_validate_json(existing), "delivered before"))
            return None
        raw = read(_key(event.customer_id))
        record = BillingRecord.model_validate_json(raw) if raw is not None else None
        latest = store.newest_billing_job(read, event.customer_id)
        decision = decide(record, latest, event, grace_seconds, now)
        if decision.outcome == "refused":
            result.append(("refused", None, decision.reason))
            return None
        writes: dict[str, Write] = {}
        if decision.record is not None:
            writes[_key(event.customer_id)] = decision.record.model_dump_json()
        if decision.job is not None:
            job = decision.job
            job.note("accepted", detail=decision.reason)
            writes.update(store.make_newest(latest, job))
        else:
            job = record_only(event, "stale" if decision.outcome == "stale" else "noted", decision.reason)
            writes[f"job:{job.event_id}"] = job.model_dump_json()
        result.append((decision.outcome, job, decision.reason))
        return writes

    store.kv.transact(change)
    return result[0]
