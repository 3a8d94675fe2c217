"""Placing a new customer: the first choice of their plan that Hetzner (the lab's emulation of its API,
read with the project's read-only token through Hetzner's own client) has available, recorded in the
store and kept for the running server; and the same through real workers."""

from __future__ import annotations

import re
import time

import pytest
from hcloud import Client

from config.placement import DEFAULT_PLANS, Choice
from provisioner.placement import NoPlacement, adopted, place, read_availability
from provisioner.settings import ProvisionerSettings, SettingsError
from provisioner.store import Job, JobStore, Placement, key_value
from provisioner.webhook import parse
from tests.conftest import PROJECT_READ_TOKEN
from tests.hcloud_api.conftest import Emulator
from tests.provisioner.conftest import Provisioner, sold_out, wait_for
from tests.provisioner.events import IMAGE, cancellation, signup
from tests.provisioner.standin import records
from tests.provisioner.test_settings_and_runner import GOOD

PLANS = {
    "standard": DEFAULT_PLANS["standard"],
    "overseas": (Choice(server_type="cpx11", location="ash"), Choice(server_type="ccx13", location="hil")),
}


def _reader(hetzner: Emulator) -> Client:
    return hetzner.client(PROJECT_READ_TOKEN)


def test_the_first_choice_hetzner_has_available_is_taken(hetzner_api: Emulator) -> None:
    available = read_availability(_reader(hetzner_api))
    assert ("cpx22", "fsn1") in available and ("cx22", "fsn1") not in available, "deprecated: unavailable"
    placed, how = place(PLANS, None, available)
    assert (placed.server_type, placed.location, placed.plan) == ("cpx22", "fsn1", "standard")
    assert how == "plan standard: the first of cpx22 in fsn1, cpx22 in nbg1, cpx22 in hel1 Hetzner has available"
    with sold_out(hetzner_api, ("cpx22", "fsn1"), ("cpx11", "ash")):
        available = read_availability(_reader(hetzner_api))
        assert place(PLANS, "standard", available)[0].location == "nbg1"
        overseas = place(PLANS, "overseas", available)[0]
        assert (overseas.server_type, overseas.location, overseas.plan) == ("ccx13", "hil", "overseas")


def test_nothing_available_or_an_unknown_plan_fails_naming_the_plan(hetzner_api: Emulator) -> None:
    with sold_out(hetzner_api, *((choice.server_type, choice.location) for choice in PLANS["standard"])):
        available = read_availability(_reader(hetzner_api))
    with pytest.raises(NoPlacement) as caught:
        place(PLANS, None, available)
    assert str(caught.value) == (
        "plan 'standard': Hetzner has none of its server types available now "
        "(cpx22 in fsn1, cpx22 in nbg1, cpx22 in hel1); nothing was created"
    )
    with pytest.raises(NoPlacement, match=r"plan 'gold' is not one of the platform's plans \(overseas, standard\)"):
        place(PLANS, "gold", available)


@pytest.mark.parametrize(
    ("plans", "named"),
    [
        ('{"pro": [{"server_type": "cpx22", "location": "fsn1"}]}', "CLAW_PLANS: plan 'standard' is missing"),
        ('{"standard": [{"server_type": "cx23", "location": "ash"}]}', "Hetzner does not sell cx23 in 'ash'"),
        ('{"standard": [{"server_type": "ccx13", "location": "fsn1"}]}', "places on ccx13 in fsn1, which CLAW_"),
        ('{"standard": []}', "CLAW_PLANS.standard: Tuple should have at least 1 item"),
        ('{"Standard!": [{"server_type": "cpx22", "location": "fsn1"}]}', "CLAW_PLANS.Standard!.[key]"),
    ],
)
def test_plans_are_checked_when_the_provisioner_starts(plans: str, named: str) -> None:
    assert ProvisionerSettings.from_env(GOOD).plans == dict(DEFAULT_PLANS)
    with pytest.raises(SettingsError, match=re.escape(named)):
        ProvisionerSettings.from_env({**GOOD, "CLAW_PLANS": plans})
    read = {**GOOD, "CLAW_HETZNER_PROJECTS": '[{"name": "p", "token_env": "T", "read_token_env": "R"}]', "T": "t"}
    with pytest.raises(SettingsError, match="read token variable not set: R"):
        ProvisionerSettings.from_env(read).hetzner_read_tokens(read)
    assert ProvisionerSettings.from_env(read).hetzner_read_tokens({**read, "R": "r"})["p"].get_secret_value() == "r"


def test_a_placement_is_recorded_once_under_the_stack_lease(stores: tuple[JobStore, JobStore]) -> None:
    store, other = stores
    first = Placement(server_type="cpx22", location="nbg1", plan="standard", at=time.time())
    second = first.model_copy(update={"location": "hel1"})
    assert store.lock("acme", "worker-a", 30)
    assert other.record_placement("acme", second, "worker-b", 30) is None, "fenced out: another worker holds it"
    assert store.record_placement("acme", first, "worker-a", 30) == first
    assert store.record_placement("acme", second, "worker-a", 30) == first, "the first one recorded is kept"
    assert other.placement("acme") == first
    assert store.release_placement("acme", "worker-a", 30)
    assert other.placement("acme") is None


def test_a_customer_provisioned_before_placements_keeps_what_it_runs() -> None:
    legacy = parse(signup("acme"), 0)
    legacy.config["clawhosters:location"] = "hel1"
    kept = adopted(legacy)
    assert (kept.server_type, kept.location, kept.plan) == ("cx23", "hel1", None), "the program's default type"


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

    # A customer provisioned before placements were recorded keeps what its last provision ran.
    legacy = Job.model_validate(
        parse(signup("initech", "evt_initech1"), 0).model_dump()
        | {"state": "done", "config": {**parse(signup("initech"), 0).config, "clawhosters:location": "hel1"}}
    )
    assert store.kv.transact(
        lambda _read: {"job:evt_initech1": legacy.model_dump_json(), "customer:initech": "evt_initech1"}
    )
    provisioner.post(signup("initech", "evt_initech2"))
    wait_for("initech ready", lambda: provisioner.status("initech") == "ready", timeout=60)
    [initech] = [record for record in records(provisioner.records, "up") if record["customer"] == "initech"]
    assert (initech["config"]["clawhosters:server_type"], initech["config"]["clawhosters:location"]) == ("cx23", "hel1")
    kept = store.placement("initech")
    assert kept is not None and (kept.server_type, kept.location, kept.plan) == ("cx23", "hel1", None)
