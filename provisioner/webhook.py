"""Billing webhooks in Stripe's format: signature check (Stripe's own library), replay window, event parsing.

`Stripe-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">[,v1=...]`.
Handled: `customer.subscription.created`, `.updated`, `.paused`, `.resumed` and `.deleted`, each
carrying the subscription object as it stood. What the provisioner reads of it: the Stripe customer
and subscription ids, the status, the creation time, the prices (which select the plan, CLAW_PLANS),
and the metadata, whose settings go through the same validation as the Pulumi program. What an
event means for the instance is provisioner.billing's.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import stripe
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from config.loader import CUSTOMER_NAMESPACE, ConfigError, settings_from_mapping
from config.plans import DEFAULT_PLAN, Plan, plan_selected_by
from provisioner.billing import ENDED, LIFE, Status, SubscriptionEvent

# fullmatch: `$` would also accept a trailing newline.
_EVENT_ID = re.compile(r"evt_[A-Za-z0-9]{1,64}")
_SLUG = re.compile(r"[a-z][a-z0-9-]{0,38}[a-z0-9]")
_KEY = re.compile(r"[a-z][a-z0-9_]{0,63}")
# Keys the provisioner itself writes into a stack (see jobs.desired_config); where the server goes is
# the platform's placement for the customer's plan (provisioner/placement.py).
RESERVED_KEYS = ("decommission", "server_type", "location")
# Nothing a setting legitimately holds: newlines and other control characters slip past `$` checks.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class WebhookError(ValueError):
    """A rejected delivery; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Delivery:
    body: bytes
    signature: str | None


def verify(delivery: Delivery, secret: str, tolerance_seconds: int) -> None:
    header = delivery.signature
    if not header:
        raise WebhookError(400, "missing Stripe-Signature header")
    if not header.isascii() or not header.isprintable():
        # Stripe's comparison raises TypeError on non-ASCII text; such a header is malformed anyway.
        raise WebhookError(400, "malformed Stripe-Signature header")
    try:
        body = delivery.body.decode("utf-8")
    except UnicodeDecodeError:
        raise WebhookError(400, "body is not UTF-8 JSON") from None
    try:
        stripe.WebhookSignature.verify_header(body, header, secret, tolerance_seconds)
    except stripe.SignatureVerificationError as error:
        message = str(error)
        if "Unable to extract" in message or "expected scheme" in message:
            raise WebhookError(400, "malformed Stripe-Signature header") from None
        if "tolerance" in message:
            raise WebhookError(
                401, f"signature timestamp outside the {tolerance_seconds} s tolerance (replay?)"
            ) from None
        raise WebhookError(401, "signature does not match") from None
    # Stripe's library bounds the age only; a timestamp from the future is no better (clock or forgery).
    timestamp = next(int(part.split("=", 2)[1]) for part in header.split(",") if part.startswith("t="))
    if timestamp > time.time() + tolerance_seconds:
        raise WebhookError(401, f"signature timestamp outside the {tolerance_seconds} s tolerance (replay?)")


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """The header a sender computes; used by tests and by operators replaying an event by hand."""
    header: str = stripe.WebhookSignature.generate_signature_header(body.decode("utf-8"), secret, timestamp)
    return header


class _Price(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    lookup_key: str | None = None


class _Item(BaseModel):
    model_config = ConfigDict(extra="ignore")

    price: _Price


class _Items(BaseModel):
    model_config = ConfigDict(extra="ignore")

    data: list[_Item]


class _Subscription(BaseModel):
    """What the provisioner reads of Stripe's subscription object (the event's `data.object`)."""

    model_config = ConfigDict(extra="ignore", strict=True)

    object: Literal["subscription"]
    id: str = Field(pattern=r"^sub_[A-Za-z0-9]{1,250}$")
    # An id: webhook payloads never expand it.
    customer: str = Field(pattern=r"^cus_[A-Za-z0-9]{1,250}$")
    status: Status
    created: int = Field(gt=0)
    metadata: dict[str, Any]
    items: _Items


def _subscription(event: dict[str, Any]) -> _Subscription:
    data = event.get("data")
    try:
        return _Subscription.model_validate(data.get("object") if isinstance(data, dict) else None)
    except ValidationError as error:
        problem = error.errors()[0]
        where = ".".join(str(part) for part in ("data", "object", *problem["loc"]))
        raise WebhookError(400, f"{where}: {problem['msg']}") from None


def _settings(metadata: dict[str, Any]) -> dict[str, str]:
    """The instance's validated `clawhosters:*` settings, from the metadata."""
    raw: dict[str, str] = {}
    for key, value in metadata.items():
        if not _KEY.fullmatch(key):
            raise WebhookError(422, f"metadata key {key[:40]!r} is not a setting name")
        if key in RESERVED_KEYS:
            raise WebhookError(422, f"metadata.{key} is set by the platform, never by a customer")
        if not isinstance(value, str | bool | list):
            raise WebhookError(422, f"metadata.{key} has an unsupported type")
        texts = value if isinstance(value, list) else [value]
        if any(isinstance(text, str) and _CONTROL.search(text) for text in texts):
            raise WebhookError(422, f"metadata.{key} contains a control character")
        text = (
            json.dumps(value) if isinstance(value, list) else str(value).lower() if isinstance(value, bool) else value
        )
        raw[f"{CUSTOMER_NAMESPACE}:{key}"] = text
    try:
        settings_from_mapping(raw)
    except ConfigError as error:
        raise WebhookError(422, str(error).replace(f"{CUSTOMER_NAMESPACE}:", "metadata.")) from None
    return raw


def _plan(prices: list[_Price], plans: Mapping[str, Plan]) -> str:
    """The plan the subscription's prices select; with no Stripe prices in the plans, the default plan."""
    if not any(plan.prices for plan in plans.values()):
        return DEFAULT_PLAN
    selected = [name for price in prices if (name := _selected_by(price, plans)) is not None]
    if len(selected) != 1:
        raise WebhookError(
            422, f"items: {len(selected)} of the subscription's prices select a plan (CLAW_PLANS); one must"
        )
    return selected[0]


def _selected_by(price: _Price, plans: Mapping[str, Plan]) -> str | None:
    """The plan a price selects, by its lookup key or else its id."""
    for key in (price.lookup_key, price.id):
        if key is not None and (name := plan_selected_by(plans, key)) is not None:
            return name
    return None


def parse(body: bytes, plans: Mapping[str, Plan]) -> SubscriptionEvent:
    """What an authenticated delivery says, validated, or a WebhookError saying why it cannot be used."""
    try:
        event = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise WebhookError(400, "body is not JSON") from error
    if not isinstance(event, dict):
        raise WebhookError(400, "the event must be a JSON object")
    event_id, kind = event.get("id"), event.get("type")
    if not isinstance(event_id, str) or not _EVENT_ID.fullmatch(event_id):
        raise WebhookError(400, "id must look like evt_<letters and digits>")
    if kind not in LIFE:
        raise WebhookError(422, f"event type {str(kind)[:80]!r} is not handled")
    created = event.get("created")
    if not isinstance(created, int) or isinstance(created, bool) or created <= 0:
        raise WebhookError(400, "created must be the event's Unix time")
    subscription = _subscription(event)
    if kind == "customer.subscription.deleted" and subscription.status != "canceled":
        raise WebhookError(422, f"a deleted subscription is canceled, not {subscription.status}")
    customer_id = subscription.metadata.get("customer_id")
    if not isinstance(customer_id, str) or not _SLUG.fullmatch(customer_id):
        raise WebhookError(422, "metadata.customer_id must be a DNS-safe slug")
    prices = [item.price for item in subscription.items.data]
    return SubscriptionEvent(
        event_id=event_id,
        type=kind,
        created=created,
        stripe_customer=subscription.customer,
        subscription=subscription.id,
        subscription_created=subscription.created,
        status=subscription.status,
        customer_id=customer_id,
        # An ended subscription's settings and plan are never used: only its end counts.
        config={} if subscription.status in ENDED else _settings(subscription.metadata),
        plan=None if subscription.status in ENDED else _plan(prices, plans),
    )
