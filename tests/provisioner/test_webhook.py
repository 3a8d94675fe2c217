"""Signature, replay window and event parsing, on their own."""

from __future__ import annotations

import json
import time

import pytest

from provisioner.webhook import Delivery, WebhookError, parse, sign, verify
from tests.provisioner.events import cancellation, event, signup

SECRET = "whsec_unit_0123456789abcdef"
NOW = 1_800_000_000


def test_a_correct_signature_within_the_window_passes() -> None:
    body = signup("acme")
    verify(Delivery(body, sign(body, SECRET, int(time.time()) - 10)), SECRET, 300)


@pytest.mark.parametrize(
    "header,status,message",
    [
        (None, 400, "missing Stripe-Signature"),
        ("v1=abc", 400, "malformed"),
        ("t=notanumber,v1=abc", 400, "malformed"),
        ("t=1,v0=abc", 400, "malformed"),
        ("t=1,v1=\u00e9\u00e9", 400, "malformed"),
        ("now,v1=" + "0" * 64, 401, "does not match"),
        ("wrong-secret", 401, "does not match"),
        ("replayed", 401, "tolerance"),
        ("future", 401, "tolerance"),
    ],
)
def test_bad_signatures_are_refused(header: str | None, status: int, message: str) -> None:
    body = signup("acme")
    now = int(time.time())
    if header == "wrong-secret":
        header = sign(body, "whsec_someone_else_000000", now)
    elif header == "replayed":
        header = sign(body, SECRET, now - 301)
    elif header == "future":
        header = sign(body, SECRET, now + 301)
    elif header is not None:
        header = header.replace("now", f"t={now}")
    with pytest.raises(WebhookError, match=message) as caught:
        verify(Delivery(body, header), SECRET, 300)
    assert caught.value.status == status


def test_a_tampered_body_fails_its_signature() -> None:
    body = signup("acme")
    header = sign(body, SECRET, int(time.time()))
    with pytest.raises(WebhookError, match="does not match"):
        verify(Delivery(body.replace(b"acme", b"evil"), header), SECRET, 300)


def test_a_signup_becomes_a_validated_provision_job() -> None:
    job = parse(signup("acme", ssh_enabled=False), grace_seconds=60, now=NOW)
    assert (job.kind, job.customer_id, job.run_after) == ("provision", "acme", NOW)
    assert job.config["clawhosters:customer_id"] == "acme"
    assert job.config["clawhosters:ssh_enabled"] == "false"


def test_a_cancellation_waits_for_the_grace_period() -> None:
    job = parse(cancellation("acme"), grace_seconds=60, now=NOW)
    assert (job.kind, job.customer_id, job.run_after) == ("deprovision", "acme", NOW + 60)


@pytest.mark.parametrize(
    "body,status,message",
    [
        (b"not json", 400, "not JSON"),
        (b"\xff\xfe", 400, "not JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (b"[" * 60_000, 400, "not JSON"),
        (event("customer.subscription.created", {}, event_id="../../etc/passwd"), 400, "id must look like"),
        (event("customer.subscription.created", {}, event_id="evt_1; rm -rf /"), 400, "id must look like"),
        (event("customer.subscription.created", {}, event_id="evt_1\n"), 400, "id must look like"),
        (json.dumps({"id": "evt_1", "type": "customer.subscription.created"}).encode(), 400, "created"),
        (event("customer.subscription.created", {}, created=True), 400, "created"),  # type: ignore[arg-type]
        (signup("acme\n"), 422, "metadata.customer_id"),
        (signup("acme", gateway_image="nginx:1\n"), 422, "metadata.gateway_image contains a control character"),
        (signup("acme", decommission="true"), 422, "metadata.decommission is set by the platform"),
        (signup("acme", **{"a:b": "x"}), 422, "not a setting name"),
        (cancellation("acme\n"), 422, "customer_id must be a DNS-safe slug"),
        (json.dumps({"id": 7, "type": "customer.subscription.created"}).encode(), 400, "id must look like"),
        (event("invoice.paid", {"customer_id": "acme"}), 422, "not handled"),
        (
            json.dumps({"id": "evt_1", "created": 1, "type": "customer.subscription.created", "data": []}).encode(),
            400,
            "metadata",
        ),
        (signup("Acme;DROP TABLE"), 422, "metadata.customer_id"),
        (signup("acme", location="fsn1"), 422, "metadata.location is set by the platform"),
        (signup("acme", syn_rate_per_second="1000"), 422, "metadata.syn_rate_per_second: unknown setting"),
        (signup("acme", gateway_image={"nested": "object"}), 422, "unsupported type"),
        (signup("acme", server_type="ccx63"), 422, "metadata.server_type is set by the platform"),
        (signup("acme", ssh_enabled=True, ssh_public_keys=["ssh-ed25519 AAAA"]), 422, "metadata.ssh_public_keys"),
        (cancellation("../../x"), 422, "customer_id must be a DNS-safe slug"),
    ],
)
def test_malformed_and_hostile_events_are_refused_naming_the_problem(body: bytes, status: int, message: str) -> None:
    with pytest.raises(WebhookError, match=message) as caught:
        parse(body, grace_seconds=60, now=NOW)
    assert caught.value.status == status
