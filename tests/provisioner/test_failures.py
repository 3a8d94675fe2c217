"""The provisioner where operators live: outages, restarts, kills, late and out-of-order deliveries.

Real serve and worker processes on SQLite and on Redis, the stand-in pulumi CLI with its stack lock
and config behaviour. Each test is one numbered failure of issue 13.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import sqlite3
import struct
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from tests.provisioner.conftest import REPO, Provisioner, wait_for
from tests.provisioner.events import cancellation, signup, subscription
from tests.provisioner.standin import locks, operations, records


def _overlaps(provisioner: Provisioner, customer: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Pairs of operations on one stack that ran at the same time (one never ended runs forever)."""
    runs = [run for run in operations(provisioner.records) if run["customer"] == customer]
    return [
        (first, second)
        for index, first in enumerate(runs)
        for second in runs[index + 1 :]
        if second["start"] < first.get("end", float("inf")) and first["start"] < second.get("end", float("inf"))
    ]


def _events(provisioner: Provisioner, customer: str) -> list[str]:
    _, view = provisioner.get(f"/customers/{customer}")
    return [entry["event"] for entry in view["history"]]


def _up_started(provisioner: Provisioner, customer: str, count: int = 1) -> None:
    wait_for("the up to start", lambda: len(list(provisioner.records.glob(f"{customer}.up.*"))) >= count)


def _a_new_worker_finishes_with_one_up(provisioner: Provisioner) -> None:
    """After a stop that cancelled the operation: the next worker completes it, once, alone."""
    provisioner.start("worker")
    wait_for("the stack to be ready", lambda: provisioner.status("acme") == "ready", timeout=30)
    assert len(records(provisioner.records, "up")) == 1
    assert _overlaps(provisioner, "acme") == []


def test_1_a_store_outage_mid_job_never_runs_a_second_up(provisioner: Provisioner) -> None:
    provisioner.env["CLAW_STANDIN_SECONDS"] = "3"
    provisioner.start("worker", "--workers", "2")
    provisioner.post(signup("acme"))
    _up_started(provisioner, "acme")
    if provisioner.redis is not None:
        provisioner.redis.stop()
        time.sleep(4)
        provisioner.redis.start()
    else:
        # Every write to the job store (the lease included) waits while another connection holds it.
        jobs_db = Path(provisioner.env["CLAW_QUEUE_URL"].removeprefix("sqlite://") + ".jobs")
        holder = sqlite3.connect(jobs_db, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        time.sleep(4)
        holder.execute("ROLLBACK")
        holder.close()
    wait_for("the stack to be ready", lambda: provisioner.status("acme") == "ready", timeout=40)
    assert len(records(provisioner.records, "up")) == 1, "exactly one up completed"
    assert _overlaps(provisioner, "acme") == [], "a second up ran while the first still held the stack"
    # The first up was cancelled; its worker records that unless the outage outlasts its lease and
    # another worker takes the stack first, which then records the takeover.
    assert {"cancelled", "took over"} & set(_events(provisioner, "acme"))
    assert "the stack lease could not be renewed" in provisioner.logs
    assert locks(provisioner.records) == []


def test_2_a_late_older_signup_does_not_undo_a_newer_cancellation(provisioner: Provisioner) -> None:
    provisioner.start("worker")
    now = int(time.time())
    code, body = provisioner.post(cancellation("acme", event_id="evt_cancel", created=now))
    assert (code, body) == (200, {"noted": "evt_cancel"}), "no server to decommission"
    code, body = provisioner.post(signup("acme", event_id="evt_oldsignup", created=now - 60))
    assert (code, body) == (200, {"stale": "evt_oldsignup"})
    assert provisioner.job("evt_oldsignup")["status"] == "stale"
    assert provisioner.status("acme") is None, "no job ever ran for acme"
    assert records(provisioner.records) == [], "the stale signup never ran"


def test_3_sigterm_mid_up_cancels_cleanly_and_the_stack_is_not_wedged(provisioner: Provisioner) -> None:
    provisioner.env["CLAW_STANDIN_SECONDS"] = "3"
    provisioner.start("worker")
    provisioner.post(signup("acme"))
    _up_started(provisioner, "acme")
    master = provisioner.processes.pop("worker")
    stopping = time.monotonic()
    master.send_signal(signal.SIGTERM)  # what systemd (KillMode=mixed), Docker and Kubernetes send
    assert master.wait(timeout=10) == 0
    grace = float(provisioner.env["CLAW_STOP_GRACE_SECONDS"]) + float(provisioner.env["CLAW_CANCEL_SECONDS"])
    assert time.monotonic() - stopping < grace + 3, "the stop is bounded"
    assert locks(provisioner.records) == [], "the cancelled CLI released the stack lock"
    assert provisioner.status("acme") == "queued"
    assert "cancelled" in _events(provisioner, "acme")
    _a_new_worker_finishes_with_one_up(provisioner)


def test_3_sigterm_lets_an_operation_within_the_grace_period_finish(provisioner: Provisioner) -> None:
    provisioner.env["CLAW_STANDIN_SECONDS"] = "1"
    provisioner.env["CLAW_STOP_GRACE_SECONDS"] = "20"
    provisioner.start("worker")
    provisioner.post(signup("acme"))
    _up_started(provisioner, "acme")
    master = provisioner.processes.pop("worker")
    master.send_signal(signal.SIGTERM)
    assert master.wait(timeout=20) == 0
    assert provisioner.status("acme") == "ready"
    assert "cancelled" not in _events(provisioner, "acme")


def test_3_a_worker_killed_with_its_cli_leaves_a_lock_the_next_worker_clears(provisioner: Provisioner) -> None:
    provisioner.env["CLAW_STANDIN_SECONDS"] = "3"
    provisioner.start("worker")
    provisioner.post(signup("acme"))
    _up_started(provisioner, "acme")
    provisioner.kill("worker")  # its host dies: the CLI dies holding the stack lock
    assert len(locks(provisioner.records)) == 1
    time.sleep(float(provisioner.env["CLAW_LEASE_SECONDS"]) + 0.5)  # the dead worker's lease lapses
    provisioner.start("worker")
    wait_for("the stack to be ready", lambda: provisioner.status("acme") == "ready", timeout=30)
    _, view = provisioner.get("/customers/acme")
    took_over = [entry for entry in view["history"] if entry["event"] == "took over"]
    assert len(took_over) == 1 and "stack lock" in took_over[0]["detail"]
    assert "pending operations: urn:pulumi:customer-acme::" in took_over[0]["detail"]
    assert locks(provisioner.records) == []
    assert len(records(provisioner.records, "up")) == 1


def test_3_a_stack_lock_of_another_holder_is_never_cleared(sqlite_provisioner: Provisioner) -> None:
    provisioner = sqlite_provisioner
    provisioner.env.update(CLAW_STANDIN_SECONDS="3", CLAW_MAX_ATTEMPTS="5")
    provisioner.start("worker")
    provisioner.post(signup("acme"))
    _up_started(provisioner, "acme")
    provisioner.kill("worker")  # its host dies: the CLI dies holding the stack lock
    [own] = locks(provisioner.records)
    # An operator's `pulumi up` of the stack meanwhile: its lock names its holder as every CLI's does.
    operators = own.with_name("0b5e55ed-0000-4000-8000-000000000000.json")
    operators.write_text(json.dumps({"pid": 4242, "username": "ops", "hostname": "bastion", "timestamp": "now"}))
    time.sleep(float(provisioner.env["CLAW_LEASE_SECONDS"]) + 0.5)  # the dead worker's lease lapses
    provisioner.start("worker")

    def refused() -> list[dict[str, Any]]:
        _, view = provisioner.get("/customers/acme")
        return [entry for entry in view["history"] if entry["event"] == "will retry"]

    [retry, *_] = wait_for("the attempt to meet the operator's lock", refused)
    assert "locked by ops@bastion (pid 4242)" in retry["detail"], retry
    assert locks(provisioner.records) == [operators], "its own lock deleted, the operator's kept"
    operators.unlink()  # the operator's operation ends
    wait_for("the stack to be ready", lambda: provisioner.status("acme") == "ready", timeout=30)
    assert len(records(provisioner.records, "up")) == 1


def _key() -> str:
    def string(data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + data

    return "ssh-ed25519 " + base64.b64encode(string(b"ssh-ed25519") + string(os.urandom(32))).decode()


def test_4_each_run_writes_the_complete_config(provisioner: Provisioner) -> None:
    provisioner.start("worker")
    provisioner.post(signup("acme", ssh_enabled=True, ssh_public_keys=[_key()]))
    wait_for("the first up", lambda: len(records(provisioner.records, "up")) == 1)
    provisioner.post(subscription("acme").event("updated", "active", ssh_enabled=False))  # SSH turned off
    wait_for("the second up", lambda: len(records(provisioner.records, "up")) == 2, timeout=20)
    wait_for("the stack to be ready", lambda: provisioner.status("acme") == "ready")
    config = records(provisioner.records, "up")[-1]["config"]
    assert "clawhosters:ssh_public_keys" not in config, "a removed setting disappears from the stack"
    assert config["clawhosters:ssh_enabled"] == "false"
    # 8: the platform settings come from the provisioner's configuration.
    assert config["platform:firewall_mode"] == "shared"
    assert config["platform:shared_firewall_id"] == "4242"
    assert config["platform:provisioner_cidrs"] == '["203.0.113.0/28"]'
    # Per-stack files live in the provisioner's state directory, never in the checkout.
    assert list(Path(provisioner.env["CLAW_STATE_DIR"]).glob("stacks/customer-acme/Pulumi.customer-acme.*"))
    assert not list(REPO.glob("Pulumi.customer-acme.*"))
    assert all("--policy-pack" in run["argv"] for run in records(provisioner.records, "up"))


def test_5_twenty_events_out_of_order_end_on_the_newest(provisioner: Provisioner) -> None:
    provisioner.env["CLAW_STANDIN_SECONDS"] = "0.2"
    provisioner.start("worker", "--workers", "2")
    base = int(time.time())
    # Delivered in a scrambled order (7 is coprime to 20, so this visits every index once).
    # Each event names its own gateway release, so the stack's config tells which event won.
    events = [
        (base + index, f"evt_order{index:02d}", f"ghcr.io/openclaw/gateway:1.{index}")
        for index in (i * 7 % 20 for i in range(20))
    ]
    answers = {}
    for created, event_id, image in events:
        code, body = provisioner.post(signup("acme", event_id=event_id, created=created, gateway_image=image))
        assert code == 200
        answers[event_id] = next(iter(body))
    wait_for("the newest to be ready", lambda: provisioner.get("/customers/acme")[1].get("status") == "ready")
    _, view = provisioner.get("/customers/acme")
    assert view["event_id"] == "evt_order19"
    ups = records(provisioner.records, "up")
    assert ups[-1]["config"]["clawhosters:gateway_image"] == "ghcr.io/openclaw/gateway:1.19", "the newest setting wins"
    assert _overlaps(provisioner, "acme") == []
    for _, event_id, _ in events:
        status = provisioner.job(event_id)["status"]
        assert status in ("ready", "superseded", "stale"), (event_id, status)
        assert (status == "stale") == (answers[event_id] == "stale")


def test_7_a_killed_master_takes_its_children_with_it(provisioner: Provisioner) -> None:
    provisioner.env["CLAW_STANDIN_SECONDS"] = "3"
    provisioner.start("worker", "--workers", "2")
    provisioner.post(signup("acme"))
    _up_started(provisioner, "acme")
    master = provisioner.processes.pop("worker")
    children = psutil.Process(master.pid).children(recursive=True)
    assert len(children) >= 3, "two workers, the scheduler and the CLI"
    master.kill()  # SIGKILL to the master alone
    master.wait(timeout=10)
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], "every worker (and its CLI) stopped with the master"
    assert locks(provisioner.records) == [], "the CLI was cancelled, not orphaned"
    assert "cancelled" in _events(provisioner, "acme")
    _a_new_worker_finishes_with_one_up(provisioner)


def test_9_retry_refuses_a_job_that_is_not_the_customers_newest(provisioner: Provisioner) -> None:
    provisioner.start("worker")
    _, body = provisioner.post(signup("doomed-acme"))
    wait_for("the job to fail", lambda: provisioner.status("doomed-acme") == "failed", timeout=30)
    provisioner.post(cancellation("doomed-acme"))
    retried = provisioner.cli("retry", body["accepted"])
    assert retried.returncode == 1 and "a newer event for this customer arrived" in retried.stderr
    assert provisioner.job(body["accepted"])["status"] == "failed"


def test_9_a_stored_event_that_was_never_queued_runs_on_redelivery(provisioner: Provisioner) -> None:
    from provisioner import billing
    from provisioner.store import JobStore, key_value
    from provisioner.webhook import parse

    body = signup("acme", event_id="evt_storedonly")
    # What a crash between storing and queueing leaves behind: the job, and nothing on the queue.
    billing.accept(JobStore(key_value(provisioner.env["CLAW_QUEUE_URL"])), parse(body, {}), 0, time.time())
    provisioner.start("worker")
    assert provisioner.post(body)[1] == {"duplicate": "evt_storedonly"}
    wait_for("the stack to be ready", lambda: provisioner.status("acme") == "ready", timeout=20)


def test_decommission_snapshots_then_destroys_then_removes(sqlite_provisioner: Provisioner) -> None:
    provisioner = sqlite_provisioner
    provisioner.start("worker")
    provisioner.post(signup("acme"))
    wait_for("the stack to be ready", lambda: provisioner.status("acme") == "ready")
    accepted = time.time()
    provisioner.post(cancellation("acme"))
    assert provisioner.status("acme") == "queued"
    wait_for("the deprovision", lambda: provisioner.status("acme") == "deprovisioned", timeout=20)
    done = [run for run in records(provisioner.records) if run["customer"] == "acme"]
    grace = float(provisioner.env["CLAW_CANCELLATION_GRACE_SECONDS"])
    assert done[1]["start"] >= accepted + grace - 0.5, "nothing happens within the grace period"
    assert [run["action"] for run in done] == ["up", "up", "destroy", "remove"]
    assert "clawhosters:decommission" not in done[0]["config"]
    assert done[1]["config"]["clawhosters:decommission"] == "true", "the snapshot up runs with decommission"
    assert done[1]["config"]["clawhosters:gateway_image"] == done[0]["config"]["clawhosters:gateway_image"]
    assert not list(Path(provisioner.env["CLAW_STATE_DIR"]).glob("stacks/customer-acme/Pulumi.customer-acme.*"))


def test_a_signup_within_the_grace_period_keeps_the_server(sqlite_provisioner: Provisioner) -> None:
    provisioner = sqlite_provisioner
    provisioner.start("worker")
    provisioner.post(signup("acme"))
    wait_for("the stack to be ready", lambda: provisioner.status("acme") == "ready")
    _, cancelled = provisioner.post(cancellation("acme"))
    # A new subscription: the cancelled one has ended for good.
    provisioner.post(subscription("acme", 2).event("created", "active"))
    wait_for("the new signup", lambda: len(records(provisioner.records, "up")) == 2, timeout=20)
    time.sleep(float(provisioner.env["CLAW_CANCELLATION_GRACE_SECONDS"]) + 1)
    assert provisioner.status("acme") == "ready"
    assert provisioner.job(cancelled["accepted"])["status"] == "superseded"
    assert all("clawhosters:decommission" not in run["config"] for run in records(provisioner.records, "up"))
    assert records(provisioner.records, "destroy") == [], "no decommission ran"


def _stalled_threads(count: int, url: str) -> list[Any]:
    import socket

    host, port = url.removeprefix("http://").split(":")
    sockets = []
    for _ in range(count):
        connection = socket.create_connection((host, int(port)), timeout=5)
        connection.sendall(b"POST /webhooks/billing HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n")
        sockets.append(connection)
    return sockets


def test_6_three_hundred_stalled_clients_do_not_stop_the_service(provisioner: Provisioner) -> None:
    stalled = _stalled_threads(300, provisioner.url)
    try:
        serve = psutil.Process(provisioner.processes["serve"].pid)
        started = time.monotonic()
        assert provisioner.get("/healthz", token=None)[0] == 200
        code, _ = provisioner.post(signup("acme"))
        assert code == 200 and time.monotonic() - started < 1, "the service still answers within a second"
        assert serve.num_threads() < 40, "connections cost no thread each"
    finally:
        for connection in stalled:
            connection.close()


def test_6_two_hundred_concurrent_deliveries_are_all_stored(provisioner: Provisioner) -> None:
    bodies = [signup(f"burst-{index}") for index in range(200)]
    results: list[Any] = [None] * len(bodies)
    barrier = threading.Barrier(len(bodies))

    def deliver(index: int) -> None:
        barrier.wait()
        try:
            results[index] = provisioner.post(bodies[index])[0]
        except OSError as error:  # a reset or a refused connection
            results[index] = repr(error)

    threads = [threading.Thread(target=deliver, args=(index,)) for index in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [result for result in results if result != 200] == [], "every delivery answered 200"
    _, body = provisioner.get("/jobs")
    assert len(body["jobs"]) == 200, "every accepted event is stored"


def _raw(provisioner: Provisioner, request: bytes) -> bytes:
    import socket

    host, port = provisioner.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as connection:
        connection.sendall(request)
        return connection.recv(4096)


def test_10_bad_headers_get_an_http_answer(provisioner: Provisioner) -> None:
    body = signup("acme")
    assert provisioner.post(body, signature="t=1,v1=\u00e9\u00e9")[0] == 400
    answer = _raw(provisioner, b"POST /webhooks/billing HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400"), answer[:80]
    # A chunked body is read as any other, counted against the limit (test_listeners.py).
    answer = _raw(
        provisioner, b"POST /webhooks/billing HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 400"), answer[:80]
    assert provisioner.get("/jobs")[1] == {"jobs": []}


def test_10_logs_are_json_with_time_and_event_ids(provisioner: Provisioner) -> None:
    import json

    provisioner.start("worker")
    _, accepted = provisioner.post(signup("acme"))
    wait_for("the stack to be ready", lambda: provisioner.status("acme") == "ready")
    lines = [json.loads(line) for line in provisioner.logs.splitlines() if line.strip()]
    assert all("time" in line and "level" in line for line in lines), "every line is JSON with a timestamp"
    mine = {line["message"] for line in lines if line.get("event_id") == accepted["accepted"]}
    assert {"accepted", "started", "done"} <= mine


def test_metrics_show_jobs_attempts_and_queue_depth(sqlite_provisioner: Provisioner) -> None:
    provisioner = sqlite_provisioner
    import urllib.request

    provisioner.start("worker")
    provisioner.post(signup("acme"))
    wait_for("the stack to be ready", lambda: provisioner.status("acme") == "ready")
    with urllib.request.urlopen(f"{provisioner.private_url}/metrics", timeout=5) as response:
        text = response.read().decode()
    assert 'claw_jobs{state="done"} 1.0' in text
    assert 'claw_attempt_seconds_count{outcome="done"} 1.0' in text
    assert "claw_queue_depth " in text
    assert 'claw_webhook_deliveries_total{outcome="accepted"} 1.0' in text


def test_10_redis_down_is_a_503_and_not_ready(redis_provisioner: Provisioner) -> None:
    provisioner = redis_provisioner
    assert provisioner.get("/readyz", token=None) == (200, {"ready": True})
    assert provisioner.redis is not None
    provisioner.redis.stop()
    try:
        assert provisioner.get("/healthz", token=None)[0] == 200
        assert provisioner.get("/readyz", token=None)[0] == 503
        assert provisioner.post(signup("acme"))[0] == 503, "Stripe delivers again later"
    finally:
        provisioner.redis.start()
    wait_for("readiness", lambda: provisioner.get("/readyz", token=None)[0] == 200)
    assert provisioner.post(signup("acme"))[0] == 200


def _kill_the_worker_process_mid_up(provisioner: Provisioner) -> psutil.Process:
    """SIGKILL to the worker process running acme's `up` alone (the OOM killer's pick); its CLI."""
    provisioner.start("worker")
    provisioner.post(signup("acme"))
    _up_started(provisioner, "acme")
    master = psutil.Process(provisioner.processes["worker"].pid)
    cli = next(child for child in master.children(recursive=True) if "tests.provisioner.standin" in child.cmdline())
    worker = cli.parent()
    assert worker is not None and worker.pid != master.pid
    worker.kill()
    return cli


def test_7_a_killed_worker_process_takes_its_cli_with_it(provisioner: Provisioner) -> None:
    provisioner.env["CLAW_STANDIN_SECONDS"] = "3"
    cli = _kill_the_worker_process_mid_up(provisioner)
    _, alive = psutil.wait_procs([cli], timeout=5)
    assert alive == [], "the CLI did not outlive its worker"
    assert locks(provisioner.records) == [], "it cancelled gracefully and released the stack lock"
    assert [run.get("outcome") for run in operations(provisioner.records)] == ["cancelled"]


def test_7_a_killed_worker_process_whose_cli_does_not_cancel_is_ended_by_the_master(
    sqlite_provisioner: Provisioner,
) -> None:
    provisioner = sqlite_provisioner
    # The kernel's SIGINT does not stop this CLI.
    provisioner.env.update(CLAW_STANDIN_SECONDS="30", CLAW_STANDIN_STUBBORN="1", CLAW_LEASE_SECONDS="4")
    cli = _kill_the_worker_process_mid_up(provisioner)
    lease = float(provisioner.env["CLAW_LEASE_SECONDS"])
    _, alive = psutil.wait_procs([cli], timeout=lease * 5 / 6)
    assert alive == [], "the dead worker's operation outlived its lease"
    assert "ended the operation of a dead worker process" in provisioner.logs
