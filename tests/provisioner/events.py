"""Billing events in Stripe's shape."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from typing import Any

IMAGE = "ghcr.io/openclaw/gateway:1.4.2@sha256:" + "ab" * 32
# Stripe's `created` has one-second resolution; a test's events must keep the order they are made in.
_CLOCK = itertools.count(int(time.time()))


def event(kind: str, metadata: dict[str, Any], event_id: str | None = None, created: int | None = None) -> bytes:
    return json.dumps(
        {
            "id": event_id or f"evt_{uuid.uuid4().hex[:24]}",
            "object": "event",
            "created": created if created is not None else next(_CLOCK),
            "type": kind,
            "data": {"object": {"object": "subscription", "metadata": metadata}},
        }
    ).encode()


def signup(customer_id: str, event_id: str | None = None, created: int | None = None, **extra: Any) -> bytes:
    metadata = {"customer_id": customer_id, "gateway_image": IMAGE, **extra}
    return event("customer.subscription.created", metadata, event_id, created)


def cancellation(customer_id: str, event_id: str | None = None, created: int | None = None) -> bytes:
    return event("customer.subscription.deleted", {"customer_id": customer_id}, event_id, created)
