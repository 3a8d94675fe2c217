"""Placing a new customer: the first choice of their plan that Hetzner (the lab's emulation of its API,
read with the project's read-only token through Hetzner's own client) has available, recorded in the
store and kept for the running server; a change of plan, which changes a running server's type in its
location only; and the same through real workers."""

from __future__ import annotations

import re
import time

import pytest
from hcloud import Client

from config.plans import DEFAULT_PLANS, Choice, Plan
from provisioner.placement import NoPlacement, Offer, adopted, change_plan, place, read_offer
from provisioner.settings import ProvisionerSettings, SettingsError
from provisioner.store import Job, JobStore, Placement, key_value
from tests.conftest import PROJECT_READ_TOKEN
from tests.hcloud_api.conftest import Emulator
from tests.provisioner.conftest import Provisioner, sold_out, wait_for
from tests.provisioner.events import IMAGE, cancellation, signup
from tests.provisioner.standin import records
from tests.provisioner.test_settings_and_runner import GOOD


def _plan(*choices: str, prices: tuple[str, ...] = ()) -> Plan:
    """A plan of `type@location` choices."""
    pairs = [choice.split("@") for choice in choices]
    return Plan(prices=prices, choices=tuple(Choice(server_type=kind, location=where) for kind, where in pairs))


PLANS = {"standard": DEFAULT_PLANS["standard"], "overseas": _plan("cpx11@ash", "ccx13@hil")}


def _offer(hetzner: Emulator) -> Offer:
    client: Client = hetzner.client(PROJECT_READ_TOKEN)
    return read_offer(client)


def _placed(where: str, plan: str = "standard", disk_gb: int = 80) -> Placement:
    server_type, location = where.split("@")
    return Placement(server_type=server_type, location=location, plan=plan, disk_gb=disk_gb, at=time.time())


def _legacy(customer: str) -> Job:
    """A customer's provision completed before placements were recorded, in hel1 on the program's default type."""
    config = {"clawhosters:customer_id": customer, "clawhosters:gateway_image": IMAGE, "clawhosters:location": "hel1"}
    return Job(
        event_id=f"evt_{customer}1", kind="provision", customer_id=customer, created=1, config=config, state="done"
    )


def test_the_first_choice_hetzner_has_available_is_taken(hetzner_api: Emulator) -> None:
    offer = _offer(hetzner_api)
    assert "fsn1" in offer["cpx22"].orderable_in and "fsn1" not in offer["cpx21"].orderable_in, "deprecated there"
    placed, how = place(PLANS, "standard", offer)
    assert (placed.server_type, placed.location, placed.plan, placed.disk_gb) == ("cpx22", "fsn1", "standard", 80)
    assert how == "plan standard: the first of cpx22 in fsn1, cpx22 in nbg1, cpx22 in hel1 Hetzner has available"
    with sold_out(hetzner_api, ("cpx22", "fsn1"), ("cpx11", "ash")):
        offer = _offer(hetzner_api)
        assert place(PLANS, "standard", offer)[0].location == "nbg1"
        overseas = place(PLANS, "overseas", offer)[0]
        assert (overseas.server_type, overseas.location, overseas.plan) == ("ccx13", "hil", "overseas")


def test_nothing_available_or_an_unknown_plan_fails_naming_the_plan(hetzner_api: Emulator) -> None:
    with sold_out(hetzner_api, *((choice.server_type, choice.location) for choice in PLANS["standard"].choices)):
        offer = _offer(hetzner_api)
    with pytest.raises(NoPlacement) as caught:
        place(PLANS, "standard", offer)
    assert str(caught.value) == (
        "plan 'standard': Hetzner has none of its server types available now "
        "(cpx22 in fsn1, cpx22 in nbg1, cpx22 in hel1); nothing was created"
    )
    with pytest.raises(NoPlacement, match=r"plan 'gold' is not one of the platform's plans \(overseas, standard\)"):
        place(PLANS, "gold", offer)


def test_a_change_of_plan_changes_the_type_in_the_servers_location(hetzner_api: Emulator) -> None:
    """The new plan's first choice in the server's location that it runs, or that Hetzner has available
    there and a resize reaches; never its first choice elsewhere."""
    offer = _offer(hetzner_api)
    plans = {
        "large": _plan("cpx32@fsn1", "cpx32@nbg1"),
        # cx23's 40 GB disk is smaller than the server's: skipped for the next choice.
        "mixed": _plan("cx23@nbg1", "cpx42@nbg1"),
        "small": _plan("cpx22@nbg1"),
    }
    moved = change_plan(plans, "large", _placed("cpx22@nbg1"), offer, "claw-acme")
    assert (moved.server_type, moved.location, moved.plan, moved.disk_gb) == ("cpx32", "nbg1", "large", 80)
    assert change_plan(plans, "mixed", _placed("cpx22@nbg1"), offer, "claw-acme").server_type == "cpx42"
    # Every resize keeps the disk: a server made as cpx22 goes back to it.
    assert change_plan(plans, "small", _placed("cpx32@nbg1", "large"), offer, "claw-acme").server_type == "cpx22"
    with sold_out(hetzner_api, ("cpx22", "nbg1")):
        kept = change_plan(plans, "small", _placed("cpx22@nbg1", "old"), _offer(hetzner_api), "claw-acme")
    assert (kept.server_type, kept.plan) == ("cpx22", "small"), "the type it runs needs no stock"


@pytest.mark.parametrize(
    ("plan", "placed", "why"),
    [
        (
            _plan("cpx32@fsn1", "cpx32@hel1"),
            "cpx22@nbg1",
            "none of its choices (cpx32 in fsn1, cpx32 in hel1) is in nbg1",
        ),
        (_plan("cax21@nbg1"), "cpx22@nbg1", "cax21 in nbg1: server claw-acme is cpx22 (x86); cax21 is arm"),
        (_plan("cpx22@nbg1"), "cpx42@nbg1", "cpx22 in nbg1: server claw-acme has a 320 GB disk; cpx22 has 80 GB"),
        (_plan("cpx32@nbg1"), "cpx22@nbg1", "cpx32 in nbg1: Hetzner does not sell cpx32 in nbg1"),
    ],
)
def test_a_change_of_plan_impossible_in_the_servers_location_is_refused(
    hetzner_api: Emulator, plan: Plan, placed: str, why: str
) -> None:
    with sold_out(hetzner_api, ("cpx32", "nbg1")):
        offer = _offer(hetzner_api)
    server = _placed(placed, disk_gb=320 if placed.startswith("cpx42") else 80)
    with pytest.raises(NoPlacement) as caught:
        change_plan({"new": plan}, "new", server, offer, "claw-acme")
    message = str(caught.value)
    assert message.startswith(f"plan 'new' cannot run claw-acme ({placed.replace('@', ' in ')}, which a change of plan")
    assert why in message and message.endswith("The server keeps running unchanged on plan 'standard'")


@pytest.mark.parametrize(
    ("plans", "named"),
    [
        ('["standard"]', "CLAW_PLANS: Input should be a valid dictionary"),
        (
            '{"pro": {"choices": [{"server_type": "cpx22", "location": "fsn1"}]}}',
            "CLAW_PLANS: plan 'standard' is missing",
        ),
        (
            '{"standard": {"choices": [{"server_type": "cpx22", "location": "fsn1"}]}, "pro": '
            '{"choices": [{"server_type": "cpx32", "location": "fsn1"}]}}',
            "CLAW_PLANS: no Stripe price selects plan 'pro'",
        ),
        (
            '{"small": {"prices": ["price_1"], "choices": [{"server_type": "cpx22", "location": "fsn1"}]}, '
            '"standard": {"choices": [{"server_type": "cpx22", "location": "fsn1"}]}}',
            "CLAW_PLANS: plan 'standard' has no prices",
        ),
        (
            '{"small": {"prices": ["price_1"], "choices": [{"server_type": "cpx22", "location": "fsn1"}]}, '
            '"large": {"prices": ["price_1"], "choices": [{"server_type": "cpx32", "location": "fsn1"}]}}',
            "CLAW_PLANS: price 'price_1' selects both plan 'small' and plan 'large'",
        ),
        ('{"standard": {"prices": ["price 1"], "choices": []}}', "CLAW_PLANS.standard.prices.0"),
        (
            '{"standard": {"choices": [{"server_type": "cx23", "location": "ash"}]}}',
            "Hetzner does not sell cx23 in 'ash'",
        ),
        (
            '{"standard": {"choices": [{"server_type": "ccx13", "location": "fsn1"}]}}',
            "places on ccx13 in fsn1, which CLAW_",
        ),
        ('{"standard": {"choices": []}}', "CLAW_PLANS.standard.choices: Tuple should have at least 1 item"),
        ('{"standard": {"server_type": "cx23"}}', "CLAW_PLANS.standard.choices: Field required"),
        ('{"Standard!": {"choices": [{"server_type": "cpx22", "location": "fsn1"}]}}', "CLAW_PLANS.Standard!.[key]"),
    ],
)
def test_plans_are_checked_when_the_provisioner_starts(plans: str, named: str) -> None:
    assert ProvisionerSettings.from_env(GOOD).plans == dict(DEFAULT_PLANS)
    with pytest.raises(SettingsError, match=re.escape(named)):
        ProvisionerSettings.from_env({**GOOD, "CLAW_PLANS": plans})


def test_a_project_read_token_is_checked_when_the_worker_starts() -> None:
    read = {**GOOD, "CLAW_HETZNER_PROJECTS": '[{"name": "p", "token_env": "T", "read_token_env": "R"}]', "T": "t"}
    with pytest.raises(SettingsError, match="read token variable not set: R"):
        ProvisionerSettings.from_env(read).hetzner_read_tokens(read)
    assert ProvisionerSettings.from_env(read).hetzner_read_tokens({**read, "R": "r"})["p"].get_secret_value() == "r"


def test_a_placement_is_recorded_under_the_stack_lease_in_place_of_the_one_expected(
    stores: tuple[JobStore, JobStore],
) -> None:
    store, other = stores
    first, second, third = _placed("cpx22@nbg1"), _placed("cpx22@hel1"), _placed("cpx32@nbg1", "large")
    assert store.lock("acme", "worker-a", 30)
    assert other.record_placement("acme", second, "worker-b", 30) is None, "fenced out: another worker holds it"
    assert store.record_placement("acme", first, "worker-a", 30) == first
    assert store.record_placement("acme", second, "worker-a", 30) == first, "the first one recorded is kept"
    assert store.record_placement("acme", third, "worker-a", 30, over=second) == first, "not the one expected"
    assert store.record_placement("acme", third, "worker-a", 30, over=first) == third
    assert other.placement("acme") == third
    assert store.release_placement("acme", "worker-a", 30)
    assert other.placement("acme") is None


def test_a_customer_provisioned_before_placements_keeps_what_it_runs() -> None:
    kept = adopted(_legacy("acme"), "standard")
    assert (kept.server_type, kept.location, kept.plan, kept.disk_gb) == ("cx23", "hel1", "standard", 40), (
        "the program's default type, its disk at most the catalogue's"
    )


def test_signups_through_the_workers_are_placed_and_keep_their_placement(
    sqlite_provisioner: Provisioner, hetzner_api: Emulator
) -> None:
    provisioner = sqlite_provisioner
    store = JobStore(key_value(provisioner.env["CLAW_QUEUE_URL"]))
    provisioner.start("worker")

    # The first choice sold out: the second one, recorded and written into the stack.
    with sold_out(hetzner_api, ("cpx22", "fsn1")):
        provisioner.post(signup("acme", "evt_acme1"))
        wait_for("acme ready", lambda: provisioner.status("acme") == "ready", timeout=60)
    [up] = records(provisioner.records, "up")
    assert (up["config"]["clawhosters:server_type"], up["config"]["clawhosters:location"]) == ("cpx22", "nbg1")
    recorded = store.placement("acme")
    assert recorded is not None and (recorded.server_type, recorded.location, recorded.plan) == (
        "cpx22",
        "nbg1",
        "standard",
    )
    placed = next(entry for entry in provisioner.job("evt_acme1")["history"] if entry["event"] == "placed")
    assert placed["detail"] == (
        "cpx22 in nbg1, plan standard: the first of cpx22 in fsn1, cpx22 in nbg1, cpx22 in hel1 Hetzner has available"
    )

    # Stock back in fsn1: a later event of the running customer keeps its server where it is.
    provisioner.post(signup("acme", "evt_acme2", gateway_image=IMAGE.replace("1.4.2", "1.4.3")))
    wait_for("acme's second provision", lambda: provisioner.job("evt_acme2")["status"] == "ready", timeout=60)
    assert records(provisioner.records, "up")[-1]["config"]["clawhosters:location"] == "nbg1"
    again = next(entry for entry in provisioner.job("evt_acme2")["history"] if entry["event"] == "placed")
    assert again["detail"] == "cpx22 in nbg1, as recorded"

    # Nothing of its plan available: the signup fails at once, naming the plan, and creates nothing.
    with sold_out(hetzner_api, ("cpx22", "fsn1"), ("cpx22", "nbg1"), ("cpx22", "hel1")):
        provisioner.post(signup("globex", "evt_globex"))
        failed = wait_for("globex to fail", lambda: provisioner.status("globex") == "failed", timeout=60)
    assert failed
    view = provisioner.job("evt_globex")
    assert view["attempts"] == 1 and "NoPlacement: plan 'standard': Hetzner has none" in str(view["last_error"])
    assert not list(provisioner.records.glob("globex.*")), "no stack operation ran"
    assert store.placement("globex") is None

    # Once the server is gone, the customer's placement is forgotten: a new signup is placed afresh.
    provisioner.post(cancellation("acme"))
    wait_for("acme deprovisioned", lambda: provisioner.status("acme") == "deprovisioned", timeout=60)
    assert store.placement("acme") is None

    # A customer provisioned before placements were recorded keeps what its last provision ran: its
    # signup's record as it was then (the program's default type, in hel1), no placement.
    provisioner.post(signup("initech", "evt_initech1"))
    wait_for("initech ready", lambda: provisioner.status("initech") == "ready", timeout=60)
    provisioned = store.get("evt_initech1")
    assert provisioned is not None
    legacy = provisioned.model_copy(update={"config": _legacy("initech").config})
    assert store.kv.transact(lambda _read: {"job:evt_initech1": legacy.model_dump_json(), "placement:initech": None})
    provisioner.post(signup("initech", "evt_initech2", gateway_image=IMAGE.replace("1.4.2", "1.4.3")))
    wait_for("initech's change", lambda: provisioner.job("evt_initech2")["status"] == "ready", timeout=60)
    initech = [record for record in records(provisioner.records, "up") if record["customer"] == "initech"][-1]
    assert (initech["config"]["clawhosters:server_type"], initech["config"]["clawhosters:location"]) == ("cx23", "hel1")
    kept = store.placement("initech")
    assert kept is not None and (kept.server_type, kept.location, kept.plan) == ("cx23", "hel1", "standard")
