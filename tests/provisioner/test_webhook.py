"""Signature, replay window and event parsing, on their own."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from config.plans import DEFAULT_PLANS, Choice, Plan
from provisioner.webhook import Delivery, WebhookError, parse, sign, verify
from tests.provisioner.events import IMAGE, LARGE, SMALL, cancellation, event, signup, subscription

SECRET = "whsec_unit_0123456789abcdef"
FSN1 = (Choice(server_type="cpx22", location="fsn1"),)
PLANS = {"small": Plan(prices=(SMALL,), choices=FSN1), "large": Plan(prices=("claw-large",), choices=FSN1)}


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


def test_the_header_is_the_one_stripe_computes() -> None:
    """t=<timestamp>,v1=<hex HMAC-SHA256 of "<timestamp>.<body>"> under the endpoint's secret."""
    import hashlib
    import hmac

    body = signup("acme")
    digest = hmac.new(SECRET.encode(), b"1800000000." + body, hashlib.sha256).hexdigest()
    assert sign(body, SECRET, 1_800_000_000) == f"t=1800000000,v1={digest}"


def test_a_signup_names_its_stripe_customer_subscription_and_settings() -> None:
    stripe = subscription("acme")
    parsed = parse(stripe.event("created", "active", event_id="evt_signup1", created=1_800_000_000), {})
    assert (parsed.event_id, parsed.created, parsed.customer_id) == ("evt_signup1", 1_800_000_000, "acme")
    assert (parsed.stripe_customer, parsed.subscription, parsed.status) == (stripe.stripe_customer, stripe.id, "active")
    assert parsed.subscription_created == stripe.created
    assert parsed.config["clawhosters:customer_id"] == "acme"
    assert parsed.config["clawhosters:gateway_image"] == IMAGE
    assert parse(signup("acme", ssh_enabled=False), {}).config["clawhosters:ssh_enabled"] == "false"


def test_an_ended_subscription_carries_no_settings() -> None:
    parsed = parse(cancellation("acme"), {})
    assert (parsed.status, parsed.config, parsed.customer_id) == ("canceled", {}, "acme")


def test_the_price_selects_the_plan_and_without_prices_every_subscription_is_on_the_default_plan() -> None:
    assert parse(signup("acme"), PLANS).plan == "small"
    large = json.loads(subscription("acme", price=LARGE).event("updated", "active"))
    large["data"]["object"]["items"]["data"][0]["price"]["lookup_key"] = "claw-large"
    assert parse(json.dumps(large).encode(), PLANS).plan == "large", "by its lookup key"
    with pytest.raises(WebhookError, match="0 of the subscription's prices select a plan") as caught:
        parse(subscription("acme", price=LARGE).event("created", "active"), PLANS)
    assert caught.value.status == 422
    ended = parse(subscription("acme", price=LARGE).event("deleted", "canceled"), PLANS)
    assert (ended.config, ended.plan) == ({}, None), "an ended subscription's plan does not matter"
    assert parse(subscription("acme", price=LARGE).event("created", "active"), DEFAULT_PLANS).plan == "standard"


def _with(body: bytes, path: str, value: Any) -> bytes:
    """The event with one field of its subscription replaced (None: removed)."""
    data = json.loads(body)
    *parents, last = path.split(".")
    target = data["data"]["object"]
    for part in parents:
        target = target[part]
    if value is None:
        del target[last]
    else:
        target[last] = value
    return json.dumps(data).encode()


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
        (json.dumps({"id": 7, "type": "customer.subscription.created"}).encode(), 400, "id must look like"),
        (event("invoice.paid", {}), 422, "not handled"),
        (event("customer.subscription.trial_will_end", {}), 422, "not handled"),
        (
            json.dumps({"id": "evt_1", "created": 1, "type": "customer.subscription.created", "data": []}).encode(),
            400,
            "data.object",
        ),
        (_with(signup("acme"), "object", "invoice"), 400, "data.object.object"),
        (_with(signup("acme"), "customer", None), 400, "data.object.customer: Field required"),
        (_with(signup("acme"), "customer", {"id": "cus_1"}), 400, "data.object.customer"),
        (_with(signup("acme"), "customer", "cus_1;x"), 400, "data.object.customer"),
        (_with(signup("acme"), "id", "sub_../x"), 400, "data.object.id"),
        (_with(signup("acme"), "status", "frozen"), 400, "data.object.status"),
        (_with(signup("acme"), "created", "1700000000"), 400, "data.object.created"),
        (_with(signup("acme"), "metadata", None), 400, "data.object.metadata"),
        (_with(signup("acme"), "items", None), 400, "data.object.items"),
        (_with(cancellation("acme"), "status", "active"), 422, "a deleted subscription is canceled"),
        (signup("acme\n"), 422, "metadata.customer_id"),
        (cancellation("acme\n"), 422, "customer_id must be a DNS-safe slug"),
        (cancellation("../../x"), 422, "customer_id must be a DNS-safe slug"),
        (signup("Acme;DROP TABLE"), 422, "metadata.customer_id"),
        (signup("acme", gateway_image="nginx:1\n"), 422, "metadata.gateway_image contains a control character"),
        (signup("acme", decommission="true"), 422, "metadata.decommission is set by the platform"),
        (signup("acme", **{"a:b": "x"}), 422, "not a setting name"),
        (signup("acme", location="fsn1"), 422, "metadata.location is set by the platform"),
        (signup("acme", syn_rate_per_second="1000"), 422, "metadata.syn_rate_per_second: unknown setting"),
        (signup("acme", gateway_image={"nested": "object"}), 422, "unsupported type"),
        (signup("acme", server_type="ccx63"), 422, "metadata.server_type is set by the platform"),
        (signup("acme", ssh_enabled=True, ssh_public_keys=["ssh-ed25519 AAAA"]), 422, "metadata.ssh_public_keys"),
        (subscription("acme").event("updated", "past_due", gateway_image="nginx:1\n"), 422, "control character"),
    ],
)
def test_malformed_and_hostile_events_are_refused_naming_the_problem(body: bytes, status: int, message: str) -> None:
    with pytest.raises(WebhookError, match=message) as caught:
        parse(body, {})
    assert caught.value.status == status
