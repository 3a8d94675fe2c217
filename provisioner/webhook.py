"""Billing webhooks in Stripe's format: signature check (Stripe's own library), replay window, event parsing.

`Stripe-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">[,v1=...]`.
A subscription that is created provisions; one that is deleted deprovisions after the grace
period. The customer's settings come from the subscription's `metadata` and go through the same
validation as the Pulumi program. The event's `created` time orders a customer's events.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

import stripe

from config.loader import CUSTOMER_NAMESPACE, ConfigError, settings_from_mapping
from provisioner.store import Job

PROVISION_EVENTS = ("customer.subscription.created",)
DEPROVISION_EVENTS = ("customer.subscription.deleted",)
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


def _metadata(event: dict[str, Any]) -> dict[str, Any]:
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    if not isinstance(metadata, dict):
        raise WebhookError(400, "data.object.metadata must be an object")
    return metadata


def parse(body: bytes, grace_seconds: int, now: float | None = None) -> Job:
    """The job an authenticated delivery asks for, or a WebhookError saying why not."""
    try:
        event = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise WebhookError(400, "body is not JSON") from error
    if not isinstance(event, dict):
        raise WebhookError(400, "the event must be a JSON object")
    event_id, kind = event.get("id"), event.get("type")
    if not isinstance(event_id, str) or not _EVENT_ID.fullmatch(event_id):
        raise WebhookError(400, "id must look like evt_<letters and digits>")
    if kind not in PROVISION_EVENTS + DEPROVISION_EVENTS:
        raise WebhookError(422, f"event type {str(kind)[:80]!r} is not handled")
    created = event.get("created")
    if not isinstance(created, int) or isinstance(created, bool) or created <= 0:
        raise WebhookError(400, "created must be the event's Unix time")
    metadata = _metadata(event)
    now = now if now is not None else time.time()
    if kind in DEPROVISION_EVENTS:
        customer_id = metadata.get("customer_id")
        if not isinstance(customer_id, str) or not _SLUG.fullmatch(customer_id):
            raise WebhookError(422, "metadata.customer_id must be a DNS-safe slug")
        return Job(
            event_id=event_id,
            kind="deprovision",
            customer_id=customer_id,
            created=created,
            run_after=now + grace_seconds,
        )
    raw: dict[str, str] = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise WebhookError(422, f"metadata key {str(key)[:40]!r} is not a setting name")
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
        settings = settings_from_mapping(raw)
    except ConfigError as error:
        raise WebhookError(422, str(error).replace(f"{CUSTOMER_NAMESPACE}:", "metadata.")) from None
    return Job(
        event_id=event_id,
        kind="provision",
        customer_id=settings.customer.customer_id,
        created=created,
        config=raw,
        run_after=now,
    )
