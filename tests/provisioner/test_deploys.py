"""Deploys, a rollout's per-stack step, as provisioner jobs: ordered with billing's events in the store
(on SQLite and a real Redis), submitted and followed through the API, and a whole rollout in waves
driven by `python -m fleet rollout --provisioner` against real workers and the stand-in CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from unittest.mock import patch

import pytest
from pydantic import SecretStr, ValidationError

from fleet import control
from fleet.__main__ import main as fleet_main
from provisioner import billing
from provisioner.store import DEPLOY_WAIT_SECONDS, Claim, DeployRefused, Job, JobStore
from provisioner.webhook import parse
from tests.provisioner.conftest import REPO, REVIEW_TOKEN, TOKEN, Provisioner, wait_for
from tests.provisioner.events import IMAGE, cancellation, signup
from tests.provisioner.standin import records

LEASE = 30.0


def _deploy(customer: str, request: str) -> Job:
    return Job(event_id=f"deploy-{request}-{customer}", kind="deploy", customer_id=customer, created=int(time.time()))


def _accept(store: JobStore, body: bytes) -> Job:
    """A billing event accepted as the webhook accepts it; the job it amounts to."""
    outcome, job, _ = billing.accept(store, parse(body, {}), 0, time.time())
    assert outcome == "accepted" and job is not None
    return job


def _finish(store: JobStore, event_id: str) -> None:
    """Run a job to done, as a worker would."""
    job = store.get(event_id)
    assert job is not None
    assert store.lock(job.customer_id, "worker", LEASE)
    claim = store.claim(event_id, "worker", LEASE, time.time())
    assert isinstance(claim, Claim)
    claim.job.state = "done"
    assert store.update(claim.job, "worker", LEASE, operation_ended=True)
    store.unlock(job.customer_id, "worker")


def _claim(store: JobStore, event_id: str) -> Claim | float | None:
    job = store.get(event_id)
    assert job is not None and store.lock(job.customer_id, "worker", LEASE)
    try:
        return store.claim(event_id, "worker", LEASE, time.time())
    finally:
        store.unlock(job.customer_id, "worker")


def test_a_deploy_waits_for_the_customers_own_change_and_a_newer_deploy_replaces_it(
    stores: tuple[JobStore, JobStore],
) -> None:
    store, _ = stores
    assert store.accept_stack_job(_deploy("acme", "r1")) == DeployRefused("unknown customer acme", unknown=True)
    provision = _accept(store, signup("acme"))
    outcome = store.accept_stack_job(_deploy("acme", "r1"))
    assert not isinstance(outcome, DeployRefused) and outcome[0] == "accepted"
    assert _claim(store, "deploy-r1-acme") == DEPLOY_WAIT_SECONDS, "the signup is still to run"
    _finish(store, provision.event_id)
    newer = store.accept_stack_job(_deploy("acme", "r2"))
    assert not isinstance(newer, DeployRefused) and newer[0] == "accepted"
    assert store.accept_stack_job(_deploy("acme", "r2")) == ("duplicate", store.get("deploy-r2-acme"))
    assert _claim(store, "deploy-r1-acme") is None
    older = store.get("deploy-r1-acme")
    assert older is not None and older.state == "superseded"
    assert isinstance(_claim(store, "deploy-r2-acme"), Claim)
    latest = store.latest("acme")
    assert latest is not None and latest.event_id == provision.event_id, "a deploy is no billing event"


def test_a_newer_deploy_that_supersedes_a_queued_drift_repair_repairs_too(stores: tuple[JobStore, JobStore]) -> None:
    store, _ = stores
    provision = _accept(store, signup("acme"))
    _finish(store, provision.event_id)
    store.accept_stack_job(_deploy("acme", "r1").model_copy(update={"refresh": True}))
    outcome = store.accept_stack_job(_deploy("acme", "r2"))
    assert not isinstance(outcome, DeployRefused) and outcome[1].refresh
    newer = store.get("deploy-r2-acme")
    assert newer is not None and newer.refresh, "the repair still to run is not lost"
    plain = store.accept_stack_job(_deploy("acme", "r3"))
    assert not isinstance(plain, DeployRefused) and plain[1].refresh, "nor by a chain of deploys"
    _finish(store, "deploy-r3-acme")
    after = store.accept_stack_job(_deploy("acme", "r4"))
    assert not isinstance(after, DeployRefused) and not after[1].refresh, "a finished repair is not repeated"


def test_a_cancellation_ends_a_queued_deploy_and_refuses_new_ones(stores: tuple[JobStore, JobStore]) -> None:
    store, _ = stores
    for customer in ("acme", "globex"):
        provision = _accept(store, signup(customer))
        _finish(store, provision.event_id)
    assert store.deployable() == ["acme", "globex"]
    store.accept_stack_job(_deploy("acme", "r1"))
    cancelled = _accept(store, cancellation("acme"))
    assert _claim(store, "deploy-r1-acme") is None, "a cancelled customer's stack is not deployed"
    ended = store.get("deploy-r1-acme")
    assert ended is not None and ended.state == "superseded"
    assert ended.history[-1].detail == f"the customer cancelled ({cancelled.event_id})"
    refused = store.accept_stack_job(_deploy("acme", "r2"))
    assert isinstance(refused, DeployRefused) and not refused.unknown
    assert store.deployable() == ["globex"]


def test_the_deploy_api_needs_the_token_and_names_what_is_wrong(provisioner: Provisioner) -> None:
    def post(body: object, token: str | None = TOKEN) -> tuple[int, dict[str, object]]:
        return provisioner.call("POST", "/deploys", json.dumps(body).encode(), token)

    assert post({"customer_id": "acme", "request_id": "r1"}, token=None)[0] == 401
    assert provisioner.get("/stacks", token="wrong-token-0123456789")[0] == 401
    code, body = post({"customer_id": "Acme;rm", "request_id": "r1"})
    assert code == 400 and str(body["error"]).startswith("customer_id:")
    code, body = post({"customer_id": "acme"})
    assert code == 400 and str(body["error"]).startswith("request_id:")
    code, body = post({"customer_id": "acme", "request_id": "r1", "refresh": "yes"})
    assert code == 400 and str(body["error"]).startswith("refresh:")
    assert post({"customer_id": "acme", "request_id": "r1"}) == (404, {"error": "unknown customer acme"})
    assert provisioner.get("/jobs/deploy-r1-acme")[0] == 404
    assert provisioner.get("/stacks") == (200, {"stacks": []})


def test_the_review_token_reads_the_fleet_its_settings_and_redacted_state_and_nothing_else(
    sqlite_provisioner: Provisioner,
) -> None:
    """The pull-request preview's token: it lists the fleet and reads each stack's whole config, as a
    worker would write it, and its redacted state, and can neither see billing's jobs nor submit a
    deploy."""
    provisioner = sqlite_provisioner
    provisioner.start("worker")
    assert provisioner.post(signup("acme", "evt_acmesignup"))[0] == 200
    wait_for("acme ready", lambda: provisioner.status("acme") == "ready", timeout=60)
    provisioned = next(record["config"] for record in records(provisioner.records, "up"))

    assert provisioner.get("/stacks", token=REVIEW_TOKEN) == (200, {"stacks": ["customer-acme"]})
    code, body = provisioner.get("/stacks/customer-acme/settings", token=REVIEW_TOKEN)
    assert code == 200 and body == provisioner.get("/stacks/customer-acme/settings")[1]
    config, project = body["config"], body["project"]
    assert project == "default", "the Hetzner project the worker assigned: a preview reads it with its token"
    assert config["clawhosters:customer_id"] == "acme"
    placed = (config["clawhosters:server_type"], config["clawhosters:location"])
    assert placed == ("cpx22", "fsn1"), "the default plan's first choice, which Hetzner has available"
    assert json.loads(config["platform:provisioner_cidrs"]) == ["203.0.113.0/28"]
    assert config == provisioned, "the whole config the last provision ran with"
    code, body = provisioner.get("/stacks/customer-nobody/settings", token=REVIEW_TOKEN)
    assert code == 404 and "no completed provision of customer 'nobody'" in body["error"]
    # The state a worker kept after the signup's up, every secret replaced (fleet.redact; the stand-in's
    # state has none): what the pull request's confined preview runs against.
    code, body = provisioner.get("/stacks/customer-acme/state", token=REVIEW_TOKEN)
    assert code == 200 and body["version"] == 3 and "deployment" in body
    code, body = provisioner.get("/stacks/customer-nobody/state", token=REVIEW_TOKEN)
    assert code == 404 and "no redacted state is kept" in body["error"]

    deploy = json.dumps({"customer_id": "acme", "request_id": "r1"}).encode()
    assert provisioner.call("POST", "/deploys", deploy, REVIEW_TOKEN)[0] == 401
    for path in ("/jobs", "/customers/acme", "/jobs/evt_acmesignup"):
        assert provisioner.get(path, token=REVIEW_TOKEN)[0] == 401, path
    assert provisioner.get("/stacks/customer-acme/settings", token="wrong-token-0123456789")[0] == 401


def test_a_preview_over_several_projects_names_a_missing_read_token(capsys: pytest.CaptureFixture[str]) -> None:
    reviewer = control.Provisioner(url="http://127.0.0.1:9", token=SecretStr(REVIEW_TOKEN))
    mapping = {control.READ_TOKENS_VARIABLE: '{"default": "HCLOUD_READ_TOKEN", "second": "HCLOUD_READ_TOKEN_2"}'}
    with pytest.raises(control.ProvisionerError, match="names variables that are not set: HCLOUD_READ_TOKEN_2"):
        control.ProjectReadTokens.from_env(reviewer, {**mapping, "HCLOUD_READ_TOKEN": "r" * 64})
    with pytest.raises(ValidationError):
        control.ProjectReadTokens.from_env(reviewer, {control.READ_TOKENS_VARIABLE: '["HCLOUD_READ_TOKEN"]'})
    environ = {**mapping, control.URL_VARIABLE: reviewer.url, control.REVIEW_TOKEN_VARIABLE: REVIEW_TOKEN}
    with patch.dict(os.environ, environ):
        assert fleet_main(["preview", "--settings-from-provisioner"]) == 2
    assert "HCLOUD_READ_TOKEN_2" in capsys.readouterr().err


def test_a_deploy_without_settings_to_run_fails_at_once(sqlite_provisioner: Provisioner) -> None:
    provisioner = sqlite_provisioner
    provisioner.start("worker")
    provisioner.post(signup("doomed-1"))
    wait_for("the signup to fail", lambda: provisioner.status("doomed-1") == "failed", timeout=30)
    code, body = provisioner.call(
        "POST", "/deploys", json.dumps({"customer_id": "doomed-1", "request_id": "r1"}).encode()
    )
    assert (code, body) == (200, {"accepted": "deploy-r1-doomed-1"})

    def failed() -> dict[str, object] | None:
        view = provisioner.get("/jobs/deploy-r1-doomed-1")[1]
        return view if view["status"] == "failed" else None

    view = wait_for("the deploy to fail", failed, timeout=30)
    assert view["attempts"] == 1, "a refused deploy is not retried: the rollout counts it"
    assert "no completed provision" in str(view["last_error"])


def test_only_a_worker_running_the_commit_rolled_out_deploys_it(sqlite_provisioner: Provisioner) -> None:
    provisioner = sqlite_provisioner
    running, merged = "a" * 40, "b" * 40
    provisioner.env["CLAW_PROGRAM_COMMIT"] = running
    provisioner.start("worker")
    provisioner.post(signup("acme"))
    wait_for("acme ready", lambda: provisioner.status("acme") == "ready", timeout=60)

    def deploy(request: str, commit: str) -> tuple[int, dict[str, object]]:
        order = {"customer_id": "acme", "request_id": request, "commit": commit}
        return provisioner.call("POST", "/deploys", json.dumps(order).encode())

    code, body = deploy("r0", "B" * 40)
    assert code == 400 and str(body["error"]).startswith("commit:")

    def finished(event_id: str) -> dict[str, object] | None:
        view = provisioner.get(f"/jobs/{event_id}")[1]
        return view if view["status"] in ("deployed", "failed") else None

    assert deploy("r1", merged) == (200, {"accepted": "deploy-r1-acme"})
    refused = wait_for("the deploy of another commit", lambda: finished("deploy-r1-acme"), timeout=30)
    assert refused["status"] == "failed" and refused["attempts"] == 1 and refused["commit"] == merged
    assert f"the rollout is of commit {merged}, this worker runs {running}" in str(refused["last_error"])
    ups = len(records(provisioner.records, "up"))

    assert deploy("r2", running) == (200, {"accepted": "deploy-r2-acme"})
    deployed = wait_for("the deploy of the worker's commit", lambda: finished("deploy-r2-acme"), timeout=30)
    assert deployed["status"] == "deployed", deployed["last_error"]
    assert len(records(provisioner.records, "up")) == ups + 1, "only the deploy of the running commit ran `up`"


def test_a_rollout_in_waves_deploys_each_stack_on_the_workers_with_its_last_settings(
    sqlite_provisioner: Provisioner, tmp_path: Path
) -> None:
    provisioner = sqlite_provisioner
    provisioner.start("worker", "--workers", "2")
    for customer in ("acme", "globex", "initech", "umbrella"):
        image = IMAGE.replace("1.4.2", "1.4.3") if customer == "globex" else IMAGE
        provisioner.post(signup(customer, gateway_image=image))
    provisioner.post(cancellation("umbrella"))
    for customer, status in (("acme", "ready"), ("globex", "ready"), ("initech", "ready")):
        wait_for(f"{customer} {status}", lambda c=customer, s=status: provisioner.status(c) == s, timeout=60)
    wait_for("umbrella gone", lambda: provisioner.status("umbrella") == "deprovisioned", timeout=60)
    assert provisioner.get("/stacks") == (200, {"stacks": ["customer-acme", "customer-globex", "customer-initech"]})
    assert provisioner.get("/stacks/customer-umbrella/state")[0] == 404, "forgotten with the stack"
    provisioned = {record["customer"]: record["config"] for record in records(provisioner.records, "up")}

    state = tmp_path / "rollout.json"
    env = {**provisioner.env, "CLAW_PROVISIONER_URL": provisioner.private_url}
    del env["HCLOUD_TOKEN"]  # the rollout never holds a Hetzner token
    waves = ["--canary", "customer-acme", "--first-batch", "1", "--seed", "7"]
    rollout = subprocess.run(
        [sys.executable, "-m", "fleet", "rollout", "--provisioner", "--state", str(state), *waves],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rollout.returncode == 0, rollout.stdout + rollout.stderr
    assert "3 of 3 stacks deployed; 0 failed" in rollout.stdout
    done = json.loads(state.read_text())
    assert done["waves"][0] == ["customer-acme"] and len(done["waves"]) == 3
    assert sorted(done["done"]) == ["customer-acme", "customer-globex", "customer-initech"]

    deploys = [job for job in provisioner.get("/jobs")[1]["jobs"] if job["kind"] == "deploy"]  # type: ignore[index]
    assert sorted(job["customer_id"] for job in deploys) == ["acme", "globex", "initech"]
    assert {job["status"] for job in deploys} == {"deployed"}
    ups = [record for record in records(provisioner.records, "up") if record["start"] > deploys[0]["received"]]
    assert ups[0]["customer"] == "acme", "the canary goes first"
    for up in ups:
        assert "--plan" in up["argv"], "each `up` is held to the plan its preview with the pack saved"
        assert up["config"] == provisioned[up["customer"]], "each stack keeps the settings billing gave it"


def _fleet(env: dict[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleet", *arguments], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_an_operators_up_of_one_stack_is_a_deploy_job_on_the_workers(sqlite_provisioner: Provisioner) -> None:
    """`python -m fleet up --provisioner`: the operator holds the API's URL and token only; the stack's
    settings are the provisioner's, and the `up` runs on a worker, held to its preview's plan."""
    provisioner = sqlite_provisioner
    provisioner.start("worker")
    provisioner.post(signup("acme"))
    wait_for("acme ready", lambda: provisioner.status("acme") == "ready", timeout=60)
    provisioned = records(provisioner.records, "up")[-1]
    env = {**provisioner.env, "CLAW_PROVISIONER_URL": provisioner.private_url}
    del env["HCLOUD_TOKEN"]

    one = _fleet(env, "up", "--provisioner", "--stack", "customer-acme")
    assert one.returncode == 0, one.stdout + one.stderr
    assert "following the deploy of customer-acme" in one.stdout
    [deploy] = [job for job in provisioner.get("/jobs")[1]["jobs"] if job["kind"] == "deploy"]  # type: ignore[index]
    assert deploy["status"] == "deployed" and deploy["customer_id"] == "acme"
    assert f"server_id: {deploy['outputs']['server_id']}" in one.stdout
    up = records(provisioner.records, "up")[-1]
    assert "--plan" in up["argv"] and up["config"] == provisioned["config"]

    assert records(provisioner.records, "refresh") == [], "a deploy's diff is against the state"
    assert deploy["refresh"] is False

    repair = _fleet(env, "up", "--provisioner", "--refresh", "--stack", "customer-acme")
    assert repair.returncode == 0, repair.stdout + repair.stderr
    assert "following the drift repair of customer-acme" in repair.stdout
    repaired = next(job for job in provisioner.get("/jobs")[1]["jobs"] if job["refresh"])  # type: ignore[index]
    assert repaired["status"] == "deployed" and repaired["kind"] == "deploy", repaired
    [refreshed] = [record for record in records(provisioner.records, "refresh") if record["customer"] == "acme"]
    last_up = records(provisioner.records, "up")[-1]
    assert refreshed["end"] < last_up["start"] and "--plan" in last_up["argv"], "refreshed, then held to its plan"
    assert last_up["config"] == provisioned["config"]

    unknown = _fleet(env, "up", "--provisioner", "--stack", "customer-nobody")
    assert unknown.returncode == 2 and "404 unknown customer nobody" in unknown.stderr
    unset = _fleet({**env, "CLAW_OPERATOR_TOKEN": ""}, "up", "--provisioner", "--stack", "customer-acme")
    assert unset.returncode == 2 and "not set: CLAW_OPERATOR_TOKEN" in unset.stderr
    local = _fleet(env, "up", "--stack", "customer-acme", "--commit", "a" * 40)
    assert local.returncode == 2 and "--commit: only with --provisioner" in local.stderr


def test_a_token_never_goes_to_the_provisioner_over_plain_http_but_on_loopback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    environ = {control.URL_VARIABLE: "http://10.0.0.2:8788", control.TOKEN_VARIABLE: TOKEN}
    with pytest.raises(control.ProvisionerError, match=r"CLAW_PROVISIONER_URL must be https://.*\(10\.0\.0\.2\)"):
        control.Provisioner.from_env(environ)
    for url in ("https://provisioner.internal:8788", "http://127.0.0.1:8788", "http://[::1]:8788", "http://localhost"):
        assert control.Provisioner.from_env({**environ, control.URL_VARIABLE: url}).url == url
    with pytest.raises(ValidationError, match="must be https://"):
        control.Provisioner(url="http://provisioner.internal", token=SecretStr(TOKEN))
    rollout = ["rollout", "--provisioner", "--state", "/nonexistent/rollout.json"]
    for command in (["preview", "--settings-from-provisioner"], rollout, ["up", "--provisioner"]):
        reviewer = {control.URL_VARIABLE: "http://provisioner.internal:8788", control.REVIEW_TOKEN_VARIABLE: TOKEN}
        with patch.dict(os.environ, {**reviewer, control.TOKEN_VARIABLE: TOKEN}):
            assert fleet_main([*command, "--stack", "customer-acme"]) == 2, command
        assert "CLAW_PROVISIONER_URL must be https://" in capsys.readouterr().err, command


def test_the_clis_of_attempts_that_did_not_end_cleanly_stay_named_until_one_ends_cleanly(
    stores: tuple[JobStore, JobStore],
) -> None:
    """A stack lock names its CLI (host:pid); the holder record keeps every CLI an attempt started, and
    an attempt after one that did not end cleanly keeps the earlier ones too: its clearing may fail
    before it has deleted their locks. Only a worker holding the lease can name a CLI."""
    store, other = stores
    job = _accept(store, signup("acme"))
    first = _claim(store, job.event_id)
    assert isinstance(first, Claim) and first.previous is None
    assert store.note_cli("acme", "worker", LEASE, "host-a:101")
    assert not other.note_cli("acme", "another-worker", LEASE, "host-b:202"), "not the holder"
    first.job.state = "queued"
    assert store.update(first.job, "worker", LEASE, operation_ended=False)
    second = _claim(store, job.event_id)
    assert isinstance(second, Claim) and second.previous is not None and second.previous.clis == ["host-a:101"]
    assert store.note_cli("acme", "worker", LEASE, "host-a:303")
    second.job.state = "queued"
    assert store.update(second.job, "worker", LEASE, operation_ended=False)
    third = _claim(store, job.event_id)
    assert isinstance(third, Claim) and third.previous is not None
    assert third.previous.clis == ["host-a:101", "host-a:303"]
    third.job.state = "done"
    assert store.update(third.job, "worker", LEASE, operation_ended=True)
    outcome = store.accept_stack_job(_deploy("acme", "r1"))
    assert not isinstance(outcome, DeployRefused)
    after = _claim(store, outcome[1].event_id)
    assert isinstance(after, Claim) and after.previous is None, "nothing to clear once an attempt ended cleanly"
