"""Billing webhooks in Stripe's format: signature check, replay window, event parsing.

`Stripe-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">[,v1=...]`.
A subscription that is created provisions; one that is deleted deprovisions after the grace
period. The customer's settings come from the subscription's `metadata` and go through the same
validation as the Pulumi program.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from dataclasses import dataclass
from typing import Any

from config.loader import CUSTOMER_NAMESPACE, ConfigError, settings_from_mapping
from provisioner.store import Job

PROVISION_EVENTS = ("customer.subscription.created",)
DEPROVISION_EVENTS = ("customer.subscription.deleted",)
_EVENT_ID = re.compile(r"^evt_[A-Za-z0-9]{1,64}$")
_SLUG = re.compile(r"^[a-z][a-z0-9-]{0,38}[a-z0-9]$")


class WebhookError(ValueError):
    """A rejected delivery; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Delivery:
    body: bytes
    signature: str | None


def verify(delivery: Delivery, secret: str, tolerance_seconds: int, now: float | None = None) -> None:
    if not delivery.signature:
        raise WebhookError(400, "missing Stripe-Signature header")
    parts = [part.split("=", 1) for part in delivery.signature.split(",") if "=" in part]
    timestamps = [value for key, value in parts if key == "t"]
    signatures = [value for key, value in parts if key == "v1"]
    if len(timestamps) != 1 or not timestamps[0].isdigit() or not signatures:
        raise WebhookError(400, "malformed Stripe-Signature header")
    signed = timestamps[0].encode() + b"." + delivery.body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures):
        raise WebhookError(401, "signature does not match")
    age = (now if now is not None else time.time()) - int(timestamps[0])
    if abs(age) > tolerance_seconds:
        raise WebhookError(401, f"signature timestamp outside the {tolerance_seconds} s tolerance (replay?)")


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """The header a sender computes; used by tests and by operators replaying an event by hand."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


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
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise WebhookError(400, "body is not JSON") from error
    if not isinstance(event, dict):
        raise WebhookError(400, "the event must be a JSON object")
    event_id, kind = event.get("id"), event.get("type")
    if not isinstance(event_id, str) or not _EVENT_ID.match(event_id):
        raise WebhookError(400, "id must look like evt_<letters and digits>")
    if kind not in PROVISION_EVENTS + DEPROVISION_EVENTS:
        raise WebhookError(422, f"event type {str(kind)[:80]!r} is not handled")
    metadata = _metadata(event)
    now = now if now is not None else time.time()
    if kind in DEPROVISION_EVENTS:
        customer_id = metadata.get("customer_id")
        if not isinstance(customer_id, str) or not _SLUG.match(customer_id):
            raise WebhookError(422, "metadata.customer_id must be a DNS-safe slug")
        return Job(event_id=event_id, kind="deprovision", customer_id=customer_id, run_after=now + grace_seconds)
    raw: dict[str, str] = {}
    for key, value in metadata.items():
        if not isinstance(value, str | bool | list):
            raise WebhookError(422, f"metadata.{str(key)[:40]} has an unsupported type")
        text = (
            json.dumps(value) if isinstance(value, list) else str(value).lower() if isinstance(value, bool) else value
        )
        raw[f"{CUSTOMER_NAMESPACE}:{key}"] = text
    try:
        settings = settings_from_mapping(raw)
    except ConfigError as error:
        raise WebhookError(422, str(error).replace(f"{CUSTOMER_NAMESPACE}:", "metadata.")) from None
    return Job(
        event_id=event_id, kind="provision", customer_id=settings.customer.customer_id, config=raw, run_after=now
    )
