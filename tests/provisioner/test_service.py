"""The provisioner as deployed: real serve and worker processes on SQLite and on Redis."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

from provisioner.webhook import sign
from tests.provisioner.conftest import SECRET, TOKEN, Provisioner, wait_for
from tests.provisioner.events import IMAGE, signup
from tests.provisioner.standin import EMPTY_BASELINE, records


def _jobs(provisioner: Provisioner) -> list[dict[str, object]]:
    code, body = provisioner.get("/jobs")
    assert code == 200
    return body["jobs"]  # type: ignore[return-value]


def test_a_signup_is_provisioned_and_its_status_is_visible(provisioner: Provisioner) -> None:
    provisioner.start("worker")
    code, body = provisioner.post(signup("acme", ssh_enabled="false"))
    assert (code, body["accepted"][:4]) == (200, "evt_")
    wait_for("the stack to be ready", lambda: provisioner.status("acme") == "ready")
    _, view = provisioner.get("/customers/acme")
    assert view["outputs"] == {
        "server_id": "4711",
        "gateway_url": "http://acme.example:8080/",
        "baseline_digest": EMPTY_BASELINE,
    }
    assert "config" not in view and "gateway_image" not in json.dumps(view)
    assert [record["customer"] for record in records(provisioner.records)] == ["acme"]
    cli = provisioner.cli("status", "acme")
    assert cli.returncode == 0 and json.loads(cli.stdout)["status"] == "ready"
    logs = "".join(path.read_text() for path in provisioner.records.parent.glob("*.log"))
    assert '"message": "done"' in logs
    for secret in (SECRET, TOKEN, IMAGE):
        assert secret not in logs, "logs carry ids and states only, never secrets or the customer's settings"


def test_a_redelivered_event_runs_once(provisioner: Provisioner) -> None:
    provisioner.start("worker")
    body = signup("acme", event_id="evt_redelivered1")
    assert provisioner.post(body)[1] == {"accepted": "evt_redelivered1"}
    assert provisioner.post(body)[1] == {"duplicate": "evt_redelivered1"}
    wait_for("the stack to be ready", lambda: provisioner.status("acme") == "ready")
    assert provisioner.post(body)[1] == {"duplicate": "evt_redelivered1"}
    time.sleep(1)
    assert len(records(provisioner.records)) == 1
    assert len(_jobs(provisioner)) == 1


def test_refused_deliveries_change_nothing(provisioner: Provisioner) -> None:
    body = signup("acme")
    assert provisioner.post(body, signature=None)[0] == 400
    assert provisioner.post(body, signature="t=1,v1=" + "0" * 64)[0] == 401
    assert provisioner.post(body, signature=sign(body, SECRET, int(time.time()) - 3600))[0] == 401
    assert provisioner.post(b"x" * 70_000)[0] == 413
    assert provisioner.post(b"{not json")[0] == 400
    assert provisioner.post(signup("Acme;rm -rf /"))[0] == 422
    assert _jobs(provisioner) == []


def test_the_status_api_needs_the_operator_token(provisioner: Provisioner) -> None:
    assert provisioner.get("/jobs", token=None)[0] == 401
    assert provisioner.get("/jobs", token="wrong-token-000000000")[0] == 401
    assert provisioner.get("/customers/acme", token=None)[0] == 401
    assert provisioner.get("/customers/acme", token=TOKEN)[0] == 404
    assert provisioner.get("/jobs", token=TOKEN) == (200, {"jobs": []})


def test_one_operation_per_stack_at_a_time(provisioner: Provisioner) -> None:
    # Each job previews before its `up` (about a second of CLI start-ups): an `up` this long keeps the
    # other stack's job running while acme's are, whatever the machine's pace.
    provisioner.env["CLAW_STANDIN_SECONDS"] = "3"
    provisioner.start("worker", "--workers", "3")
    first, queued, newest = (IMAGE.replace("1.4.2", version) for version in ("1.4.2", "1.4.3", "1.4.4"))
    assert provisioner.post(signup("acme", gateway_image=first))[0] == 200
    wait_for("the first up", lambda: any(provisioner.records.glob("acme.up.*")))
    for body in (signup("acme", gateway_image=queued), signup("acme", gateway_image=newest), signup("other")):
        assert provisioner.post(body)[0] == 200
    wait_for("three operations", lambda: len(records(provisioner.records)) == 3, timeout=30)
    done = records(provisioner.records)
    acme_runs = [record for record in done if record["customer"] == "acme"]
    assert [run["config"]["clawhosters:gateway_image"] for run in acme_runs] == [first, newest], (
        "the queued 1.4.3 was superseded by the newer 1.4.4 before it ran"
    )
    for earlier, later in itertools.pairwise(acme_runs):
        assert later["start"] >= earlier["end"], "two operations overlapped on one stack"
    other = next(record for record in done if record["customer"] == "other")
    assert any(run["start"] < other["end"] and other["start"] < run["end"] for run in acme_runs), (
        "different stacks should run side by side"
    )
    superseded = [job for job in _jobs(provisioner) if job["status"] == "superseded"]
    assert len(superseded) == 1 and superseded[0]["history"][-1]["event"] == "superseded"


def test_a_failing_job_lands_failed_and_can_be_retried(provisioner: Provisioner) -> None:
    provisioner.start("worker")
    _, body = provisioner.post(signup("doomed-customer"))
    wait_for("the job to fail", lambda: provisioner.status("doomed-customer") == "failed", timeout=30)
    _, view = provisioner.get("/customers/doomed-customer")
    assert view["attempts"] == int(provisioner.env["CLAW_MAX_ATTEMPTS"])
    # What the CLI said, the stack, and each attempt's log in the worker's state directory.
    logs = sorted((Path(provisioner.env["CLAW_STATE_DIR"]) / "logs").iterdir())
    said = "pulumi preview failed on stack customer-doomed-customer: error: the cloud said no; full log: {}"
    assert [entry["detail"] for entry in view["history"] if entry["event"] in ("will retry", "failed")] == [
        said.format(log) for log in logs
    ]
    assert view["last_error"] == said.format(logs[-1])
    for log in logs:
        assert log.stat().st_mode & 0o777 == 0o600
        assert log.read_text() == "$ pulumi preview\nerror: the cloud said no\n"
    retried = provisioner.cli("retry", body["accepted"])
    assert retried.returncode == 0, retried.stderr
    wait_for("the retry to run", lambda: provisioner.get("/customers/doomed-customer")[1]["attempts"] >= 1)
