"""Each Hetzner project's request budget, shared by every worker through the job store, and the
projects the customers are spread over: on SQLite and on a real Redis."""

from __future__ import annotations

import time

import pytest

from provisioner.settings import ProvisionerSettings, SettingsError
from provisioner.store import JobStore
from tests.provisioner.conftest import Provisioner, wait_for
from tests.provisioner.events import signup
from tests.provisioner.test_settings_and_runner import GOOD


def test_the_budget_is_shared_by_every_worker_and_refills_at_its_hourly_rate(
    stores: tuple[JobStore, JobStore],
) -> None:
    first, second = stores
    now = 1_000_000.0
    assert first.take_requests("p1", 2000, 3600, now) == 0
    # 1,600 left: the other worker's 2,000 must wait for 400 more, at one a second.
    assert second.take_requests("p1", 2000, 3600, now) == pytest.approx(400)
    assert second.take_requests("p1", 1600, 3600, now) == 0, "a refusal spends nothing"
    assert first.take_requests("p1", 1, 3600, now) == pytest.approx(1)
    assert first.take_requests("p1", 1800, 3600, now + 1800) == 0
    assert first.take_requests("p2", 3600, 3600, now) == 0, "each project has its own budget"
    assert first.take_requests("p1", 3601, 3600, now + 10**6) > 0, "never above a full bucket"


def test_customers_are_spread_over_the_projects_and_stay_in_theirs(stores: tuple[JobStore, JobStore]) -> None:
    first, second = stores
    projects = ["fsn-a", "fsn-b"]
    assert [first.project_of(customer, projects) for customer in ("acme", "globex", "initech")] == [
        "fsn-a",
        "fsn-b",
        "fsn-a",
    ]
    assert second.project_of("globex", projects) == "fsn-b"
    assert second.project_of("globex", [*projects, "fsn-c"]) == "fsn-b", "a server never moves"
    assert second.project_of("hooli", [*projects, "fsn-c"]) == "fsn-c", "a new project takes new customers"


@pytest.mark.parametrize(
    "environment,named",
    [
        ({"CLAW_HETZNER_PROJECTS": "not json"}, "CLAW_HETZNER_PROJECTS: must be a JSON list"),
        ({"CLAW_HETZNER_PROJECTS": "[]"}, "CLAW_HETZNER_PROJECTS: List should have at least 1 item"),
        ({"CLAW_HETZNER_PROJECTS": '[{"name": "a", "token_env": "lower"}]'}, "CLAW_HETZNER_PROJECTS.0.token_env"),
        ({"CLAW_HETZNER_PROJECTS": '[{"name": "a", "token_env": "T", "requests_per_hour": 9000}]'}, "0.requests"),
        (
            {"CLAW_HETZNER_PROJECTS": '[{"name": "a", "token_env": "T"}, {"name": "a", "token_env": "U"}]'},
            "project names must be unique",
        ),
        ({"CLAW_HETZNER_REQUESTS_PER_OPERATION": "5000"}, "CLAW_HETZNER_REQUESTS_PER_OPERATION is more than"),
    ],
)
def test_a_bad_project_setting_is_named(environment: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        ProvisionerSettings.from_env({**GOOD, **environment})


def test_a_worker_without_a_projects_token_does_not_start(sqlite_provisioner: Provisioner) -> None:
    sqlite_provisioner.env["CLAW_HETZNER_PROJECTS"] = '[{"name": "fsn-a", "token_env": "HCLOUD_TOKEN_FSN_A"}]'
    done = sqlite_provisioner.cli("worker")
    assert done.returncode == 2
    assert "token variable not set: HCLOUD_TOKEN_FSN_A" in done.stderr and "Traceback" not in done.stderr
    settings = ProvisionerSettings.from_env(
        {**GOOD, "CLAW_HETZNER_PROJECTS": sqlite_provisioner.env["CLAW_HETZNER_PROJECTS"]}
    )
    with pytest.raises(SettingsError):
        settings.hetzner_tokens({})


def test_an_operation_waits_in_the_queue_for_its_projects_budget(provisioner: Provisioner) -> None:
    # A budget that pays for one operation an hour: the second customer's waits, its CLI never started.
    provisioner.env["CLAW_HETZNER_PROJECTS"] = (
        '[{"name": "fsn-a", "token_env": "HCLOUD_TOKEN", "requests_per_hour": 40}]'
    )
    provisioner.env["CLAW_HETZNER_REQUESTS_PER_OPERATION"] = "40"
    provisioner.start("worker")
    provisioner.post(signup("acme"))
    wait_for("the first signup", lambda: provisioner.status("acme") == "ready")
    provisioner.post(signup("globex"))
    wait_for("the budget to be waited for", lambda: "waiting for the Hetzner budget" in provisioner.logs)
    time.sleep(1)
    assert provisioner.status("globex") == "queued"
    assert [record.name for record in provisioner.records.glob("globex.*")] == []
    _, view = provisioner.get("/customers/globex")
    assert view["next_attempt"] > time.time() + 3000, "held back until the budget can pay"
