"""Billing events as Stripe sends them: an Event object (`"object": "event"`) whose `data.object` is
the Subscription as it stood, shaped as Stripe's API reference shows both for the API version the
pinned `stripe` library speaks, with the fields a subscription of one licensed price has (fewer than
Stripe's, never other ones)."""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from dataclasses import dataclass
from typing import Any

import stripe

IMAGE = "ghcr.io/openclaw/gateway:1.4.2@sha256:" + "ab" * 32
# Two prices of the platform, as Stripe names them.
SMALL = "price_1SmallPlanClaw000000000"
LARGE = "price_1LargePlanClaw000000000"
# Stripe's `created` has one-second resolution; a test's events must keep the order they are made in.
_CLOCK = itertools.count(int(time.time()))
_IDS = itertools.count()
# When a test's subscriptions were created: before any of their events, the first before the second.
_BORN = int(time.time()) - 86_400
_MONTH = 30 * 86_400


def _stripe_id(prefix: str, *parts: object) -> str:
    return f"{prefix}_{hashlib.sha256(':'.join(map(str, parts)).encode()).hexdigest()[:24]}"


@dataclass(frozen=True)
class Subscription:
    """One Stripe subscription naming a platform customer in its metadata."""

    customer_id: str
    id: str
    stripe_customer: str
    created: int
    price: str = SMALL

    def object(self, status: str, ended: int | None = None, **metadata: Any) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "subscription",
            "application": None,
            "billing_cycle_anchor": self.created,
            "cancel_at": None,
            "cancel_at_period_end": False,
            "canceled_at": ended,
            "cancellation_details": {
                "comment": None,
                "feedback": None,
                "reason": "cancellation_requested" if ended else None,
            },
            "collection_method": "charge_automatically",
            "created": self.created,
            "currency": "eur",
            "customer": self.stripe_customer,
            "default_payment_method": None,
            "description": None,
            "ended_at": ended,
            "items": {
                "object": "list",
                "data": [
                    {
                        "id": _stripe_id("si", self.id),
                        "object": "subscription_item",
                        "created": self.created,
                        "current_period_end": self.created + _MONTH,
                        "current_period_start": self.created,
                        "metadata": {},
                        "price": {
                            "id": self.price,
                            "object": "price",
                            "active": True,
                            "currency": "eur",
                            "livemode": False,
                            "lookup_key": None,
                            "metadata": {},
                            "nickname": None,
                            "product": _stripe_id("prod", self.price),
                            "recurring": {"interval": "month", "interval_count": 1, "usage_type": "licensed"},
                            "type": "recurring",
                            "unit_amount": 900 if self.price == SMALL else 2400,
                        },
                        "quantity": 1,
                        "subscription": self.id,
                    }
                ],
                "has_more": False,
                "total_count": 1,
                "url": f"/v1/subscription_items?subscription={self.id}",
            },
            "latest_invoice": _stripe_id("in", self.id),
            "livemode": False,
            "metadata": {"customer_id": self.customer_id, "gateway_image": IMAGE, **metadata},
            "pause_collection": None,
            "start_date": self.created,
            "status": status,
            "trial_end": None,
            "trial_start": None,
        }

    def event(
        self,
        kind: str,
        status: str,
        event_id: str | None = None,
        created: int | None = None,
        previous: dict[str, Any] | None = None,
        **metadata: Any,
    ) -> bytes:
        """`customer.subscription.<kind>` with the subscription in `status`; `previous` is an update's
        `previous_attributes`."""
        created = created if created is not None else next(_CLOCK)
        subscription = self.object(status, created if status == "canceled" else None, **metadata)
        return event(f"customer.subscription.{kind}", subscription, event_id, created, previous)


def subscription(
    customer_id: str, number: int = 1, stripe_customer: str | None = None, price: str = SMALL
) -> Subscription:
    """The customer's `number`th subscription (the same ids every time), of their own Stripe customer
    unless another is named."""
    return Subscription(
        customer_id=customer_id,
        id=_stripe_id("sub", customer_id, number),
        stripe_customer=stripe_customer or _stripe_id("cus", customer_id),
        created=_BORN + number,
        price=price,
    )


def event(
    kind: str,
    subscription: dict[str, Any],
    event_id: str | None = None,
    created: int | None = None,
    previous: dict[str, Any] | None = None,
) -> bytes:
    data: dict[str, Any] = {"object": subscription}
    if previous is not None:
        data["previous_attributes"] = previous
    return json.dumps(
        {
            "id": event_id or _stripe_id("evt", time.time_ns(), next(_IDS)),
            "object": "event",
            "api_version": stripe.api_version,
            "created": created if created is not None else next(_CLOCK),
            "data": data,
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": kind,
        }
    ).encode()


def signup(customer_id: str, event_id: str | None = None, created: int | None = None, **metadata: Any) -> bytes:
    """The customer's first subscription, created and paid for at once."""
    return subscription(customer_id).event("created", "active", event_id, created, **metadata)


def cancellation(customer_id: str, event_id: str | None = None, created: int | None = None) -> bytes:
    """The customer's first subscription, ended."""
    return subscription(customer_id).event("deleted", "canceled", event_id, created)
