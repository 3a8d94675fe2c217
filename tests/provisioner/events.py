"""Billing events in Stripe's shape."""

from __future__ import annotations

import json
import uuid
from typing import Any

IMAGE = "ghcr.io/openclaw/gateway:1.4.2@sha256:" + "ab" * 32


def event(kind: str, metadata: dict[str, Any], event_id: str | None = None) -> bytes:
    return json.dumps(
        {
            "id": event_id or f"evt_{uuid.uuid4().hex[:24]}",
            "object": "event",
            "type": kind,
            "data": {"object": {"object": "subscription", "metadata": metadata}},
        }
    ).encode()


def signup(customer_id: str, event_id: str | None = None, **extra: Any) -> bytes:
    return event(
        "customer.subscription.created", {"customer_id": customer_id, "gateway_image": IMAGE, **extra}, event_id
    )


def cancellation(customer_id: str, event_id: str | None = None) -> bytes:
    return event("customer.subscription.deleted", {"customer_id": customer_id}, event_id)
