"""The platform's control plane end to end: billing's events through the provisioner's API, the jobs
in Redis, the stacks' state in an S3-compatible object store, and workers on two hosts that drive the
real CLI and providers against the lab's Hetzner."""

from __future__ import annotations

import dataclasses
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError
from hcloud.firewalls import FirewallRule
from hcloud.servers import BoundServer

import toolchain
from lab import servers
from lab.control_plane import (
    BUCKET,
    CONFINED_USER,
    OBJECT_STORE_PORT,
    PRIVATE_API_PORT,
    ControlPlane,
    StoreKey,
    request,
)
from lab.object_store import Identity
from lab.topology import CLIENT, PROVISIONER, SINK_V4, WORKER_HOSTS, Peer
from lab.world import (
    DATA_DIR,
    HETZNER_PORT,
    HETZNER_PROJECTS,
    REPO,
    SECOND_HETZNER_PROJECT,
    Lab,
    in_ns,
    run,
    wait_until,
)
from tests.keys import public_key
from tests.lab import hostile
from tests.provisioner.events import cancellation, signup, subscription

CUSTOMER = "acme"


@pytest.fixture(scope="module")
def plane(lab: Lab) -> ControlPlane:
    """Started once; its processes are the lab's and stop with it."""
    control = ControlPlane(lab)
    control.start()
    return control


@pytest.fixture
def hosts(plane: ControlPlane) -> Iterator[tuple[Peer, ...]]:
    """The worker hosts, each test starting its own workers; none runs after the test."""
    yield WORKER_HOSTS
    for host in WORKER_HOSTS:
        plane.kill_host(host)


def _servers(lab: Lab, customer: str, projects: tuple[str, ...] = HETZNER_PROJECTS) -> list[BoundServer]:
    return [
        server
        for project in projects
        for server in lab.hetzner(project).servers.get_all()
        if server.labels.get("customer") == customer
    ]


def _ssh_session_from(host: Peer, server_id: int) -> bool:
    established = ["ss", "-Htn", "state", "established", "( sport = :22 )"]
    return f"{host.ipv4}:" in run(in_ns(servers.namespace(server_id), *established), check=False).stdout


def _wait_for_a_remote_command(lab: Lab, customer: str, host: Peer) -> None:
    def running() -> bool:
        made = _servers(lab, customer)
        return bool(made) and _ssh_session_from(host, made[0].id)

    wait_until(f"an SSH session from {host.link} to the new server", running, timeout=180)


def _cli_running(host: Peer) -> bool:
    return any(
        process.name() == "pulumi"
        for process in psutil.process_iter()
        if str(process.pid) in run(["ip", "netns", "pids", host.namespace]).stdout.split()
    )


def _status(plane: ControlPlane, customer: str, wanted: str, timeout: float) -> dict[str, Any]:
    views: list[dict[str, Any]] = []

    def reached() -> bool:
        views.append(plane.customer(customer))
        return views[-1].get("status") in (wanted, "failed")

    wait_until(f"{customer} to be {wanted}", reached, timeout=timeout, interval=2)
    # The whole history, unabridged: it says why a job ended otherwise.
    assert views[-1]["status"] == wanted, json.dumps(views[-1], indent=1)
    return views[-1]


def _events(plane: ControlPlane, customer: str) -> list[str]:
    return [entry["event"] for entry in plane.customer(customer).get("history", [])]


def _cancel(lab: Lab, plane: ControlPlane, customer: str, project: str) -> list[int]:
    """Cancel the customer; the ids of the servers their snapshots (in their project) were taken from."""
    status, answer = plane.post_event(cancellation(customer))
    assert (status, list(answer)) == (200, ["accepted"])
    _status(plane, customer, "deprovisioned", timeout=300)
    assert _servers(lab, customer) == []
    snapshots = lab.hetzner(project).images.get_all(type="snapshot")
    return [image.created_from.id for image in snapshots if image.labels.get("customer") == customer]


def _sign_up(
    lab: Lab, plane: ControlPlane, customer: str, host: Peer, projects: tuple[str, ...] = HETZNER_PROJECTS
) -> None:
    plane.start_worker(host, projects)
    status, answer = plane.post_event(signup(customer, gateway_image=lab.gateway_image()))
    assert (status, list(answer)) == (200, ["accepted"])


def _serves_then_cancels(lab: Lab, plane: ControlPlane, customer: str, view: dict[str, Any]) -> None:
    """One server, in the customer's Hetzner project, no lock left, the gateway serving; then a
    cancellation leaves only its snapshot."""
    assert plane.stack_locks(customer) == []
    [server] = _servers(lab, customer)
    in_project = _servers(lab, customer, (view["project"],))
    assert [made.id for made in in_project] == [server.id], "made with its project's token"
    assert view["outputs"]["server_id"] == str(server.id)
    assert lab.http_status(view["outputs"]["ipv4_address"], 8080, namespace=CLIENT.namespace) == 401
    assert _cancel(lab, plane, customer, view["project"]) == [server.id]


def _refusal(plane: ControlPlane, key: Identity, call: Callable[[BaseClient], object]) -> str:
    """The error code the object store answers a request made with `key`."""
    s3 = plane.object_store.client(key)
    with pytest.raises(ClientError) as refused:
        plane.object_store.call(lambda: call(s3))
    return str(refused.value.response["Error"]["Code"])


def test_the_object_store_admits_each_key_to_what_it_may_do_and_nothing_else(plane: ControlPlane) -> None:
    listing = f"/{BUCKET}?list-type=2"
    assert request(PROVISIONER.namespace, PROVISIONER.ipv4, OBJECT_STORE_PORT, "GET", listing)[0] == 403, "unsigned"
    workers, reader = plane.store_key(StoreKey.WORKERS), plane.store_key(StoreKey.READER)
    forged = dataclasses.replace(workers, secret_key=reader.secret_key)
    assert _refusal(plane, forged, lambda s3: s3.list_objects_v2(Bucket=BUCKET)) == "SignatureDoesNotMatch"
    put = {"Bucket": BUCKET, "Key": "lab-check/object", "Body": b"{}"}
    assert _refusal(plane, reader, lambda s3: s3.put_object(**put)) == "AccessDenied"
    assert _refusal(plane, workers, lambda s3: s3.create_bucket(Bucket="elsewhere")) == "AccessDenied"
    # What each may do, it can: the workers write and delete, the reader lists.
    writer = plane.object_store.client(workers)
    plane.object_store.call(lambda: writer.put_object(**put))
    assert plane.objects("lab-check/") == [put["Key"]]
    plane.object_store.call(lambda: writer.delete_object(Bucket=BUCKET, Key=put["Key"]))
    assert plane.objects("lab-check/") == []


def test_a_signup_outlives_its_worker_host_and_a_cancellation_leaves_only_the_snapshot(
    lab: Lab, plane: ControlPlane, hosts: tuple[Peer, ...]
) -> None:
    first, second = hosts
    # Hetzner has run out of the default plan's first choice: the signup is placed on its second.
    with lab.sold_out(("cpx22", "fsn1")):
        _sign_up(lab, plane, CUSTOMER, first)
        # The first host dies while its CLI runs the new server's first remote command over SSH.
        _wait_for_a_remote_command(lab, CUSTOMER, first)
    # Stock is back in fsn1 before the second host takes over: the placement recorded stays.
    plane.kill_host(first)
    assert len(plane.stack_locks(CUSTOMER)) == 1, "the dead CLI's lock is still in the object store"
    plane.start_worker(second)

    # Its lease lapses, the sweep queues the job again, and the second host clears the stack lock
    # the dead CLI left in the object store, then finishes the signup.
    view = _status(plane, CUSTOMER, "ready", timeout=360)
    takeover = next(entry for entry in view["history"] if entry["event"] == "took over")
    assert takeover["worker"].startswith(f"{second.link}:"), takeover
    assert "its stack lock" in takeover["detail"], takeover
    assert view["worker"].startswith(f"{second.link}:")
    assert plane.stack_names() == [f"organization/clawhosters/customer-{CUSTOMER}"]
    [server] = _servers(lab, CUSTOMER)
    assert (server.server_type.name, server.location.name) == ("cpx22", "nbg1")
    # What every deploy of the stack runs.
    settings = plane.get(f"/stacks/customer-{CUSTOMER}/settings")[1]["config"]
    assert (settings["clawhosters:server_type"], settings["clawhosters:location"]) == ("cpx22", "nbg1")
    # One server, the one the first host created: the state in the object store kept it.
    _serves_then_cancels(lab, plane, CUSTOMER, view)
    assert plane.stack_names() == []


def test_a_worker_host_killed_while_hetzner_makes_the_server_leaves_no_server_behind(
    lab: Lab, plane: ControlPlane, hosts: tuple[Peer, ...]
) -> None:
    customer, (first, second) = "soylent", hosts
    worker_log, server = f"worker-{first.link}", f"customer-{customer}-server"
    _sign_up(lab, plane, customer, first)
    wait_until("the server's create", lambda: f"{server} creating" in plane.log(worker_log), timeout=240)
    # Hetzner has made the server; the CLI still waits for it to be running, so its state does not know it.
    wait_until("the server in Hetzner", lambda: bool(_servers(lab, customer)), timeout=60, interval=0.25)
    plane.kill_host(first)
    assert f"{server} created" not in plane.log(worker_log), "the create finished before the host died"
    [orphan] = _servers(lab, customer)
    plane.start_worker(second)

    # The second host deletes the server the state never recorded, so the retried create is not refused
    # ("server name is already used"), and finishes the signup on a server of its own.
    view = _status(plane, customer, "ready", timeout=360)
    takeover = next(entry for entry in view["history"] if entry["event"] == "took over")
    assert f"deleted server {orphan.name} ({orphan.id}), never recorded" in takeover["detail"], takeover
    assert server in takeover["detail"], "the pending create is named"
    [made] = _servers(lab, customer)
    assert made.id != orphan.id and view["outputs"]["server_id"] == str(made.id)
    _serves_then_cancels(lab, plane, customer, view)


def test_an_object_store_outage_across_a_state_write_costs_attempts_and_no_server(
    lab: Lab, plane: ControlPlane, hosts: tuple[Peer, ...]
) -> None:
    customer, host = "globex", hosts[0]
    _sign_up(lab, plane, customer, host)
    step = f"customer-{customer}-packages creating"
    wait_until("the packages step", lambda: step in plane.log(f"worker-{host.link}"), timeout=240)
    with plane.object_store_down():
        # The CLI retries the state write after the step for about a minute, then gives up, unable to
        # delete its stack lock either; the next attempt cannot clear that lock while the store is down.
        wait_until("two failed attempts", lambda: _events(plane, customer).count("will retry") == 2, timeout=300)
    view = _status(plane, customer, "ready", timeout=300)
    first, second = [entry for entry in view["history"] if entry["event"] == "will retry"]
    assert "problem deleting the lock" in first["detail"], view["history"]
    assert second["attempt"] == 2, view["history"]
    [recovered] = [entry for entry in view["history"] if entry["event"] == "recovered"]
    assert f"customer-{customer}-packages" in recovered["detail"], view["history"]
    assert view["attempts"] == 3
    _serves_then_cancels(lab, plane, customer, view)


def test_redis_down_mid_up_cancels_the_operation_and_the_signup_finishes_after(
    lab: Lab, plane: ControlPlane, hosts: tuple[Peer, ...]
) -> None:
    customer, host = "initech", hosts[1]
    worker_log = f"worker-{host.link}"
    _sign_up(lab, plane, customer, host)
    server = f"customer-{customer}-server"
    wait_until("the server's create", lambda: f"{server} creating" in plane.log(worker_log), timeout=240)
    # Once the server is made, the CLI waits for its SSH as for a server still booting, and Redis goes
    # down: the cancellation lands on that wait, not on a create in flight (which could leave a server
    # the state does not know, for an operator to look at).
    with plane.ssh_unanswered(host):
        wait_until("the server", lambda: f"{server} created" in plane.log(worker_log), timeout=120)
        before = len(plane.log(worker_log))  # only what the worker logs once Redis is down counts
        with plane.redis_down():
            # Billing is told to deliver again later: nothing was stored, nothing half-created.
            status, _ = plane.post_event(signup("hooli", gateway_image=lab.gateway_image()))
            assert status == 503
            # The lease cannot be renewed: the watchdog cancels the CLI before the lease could lapse.
            cancelling = "cancelling the operation"
            wait_until("the cancellation", lambda: cancelling in plane.log(worker_log)[before:], timeout=60)
            wait_until("the CLI to stop", lambda: not _cli_running(host), timeout=plane.cancel_seconds + 10)
    view = _status(plane, customer, "ready", timeout=300)
    [cancelled] = [entry for entry in view["history"] if entry["event"] == "cancelled"]
    assert "could not be renewed" in (cancelled["detail"] or ""), view["history"]
    assert view["attempts"] == 2
    assert plane.customer("hooli") == {}
    _serves_then_cancels(lab, plane, customer, view)


def _drain(lab: Lab, project: str, stop: threading.Event) -> None:
    """Another client of the project spending every request its rate limit refills, until `stop`
    (bounded: at most 5,000 requests a round, rounds half a second apart). It reads with the project's
    read-only token: the project's bucket, counted apart from the workers' token."""
    request = urllib.request.Request(
        f"{lab.hetzner_endpoint}/locations", headers={"Authorization": f"Bearer {lab.project_read_token(project)}"}
    )
    while not stop.is_set():
        for _ in range(5000):
            try:
                urllib.request.urlopen(request, timeout=5).close()
            except urllib.error.HTTPError as refused:
                if refused.code == 429:
                    break
                raise
        stop.wait(0.5)


def _refused(lab: Lab, project: str, *, read_only: bool = False) -> int:
    """The 429s the emulator answered one of the project's tokens (its count is outside the bucket)."""
    return int(lab.hetzner_usage(project, read_only=read_only)["rate_limited"])


def test_a_signup_that_meets_its_projects_rate_limit_finishes_on_the_providers_retries(
    lab: Lab, plane: ControlPlane, hosts: tuple[Peer, ...]
) -> None:
    customer, project = "umbrella", SECOND_HETZNER_PROJECT
    stop = threading.Event()
    drainer = threading.Thread(target=_drain, args=(lab, project, stop), daemon=True)
    drainer.start()
    try:
        wait_until("the project's rate limit", lambda: _refused(lab, project, read_only=True) > 0, timeout=120)
        refused = _refused(lab, project)
        _sign_up(lab, plane, customer, hosts[0], projects=(project,))
        # The workers' token is the CLI's alone here: these 429s are the provider's requests.
        wait_until("the CLI's requests to be refused", lambda: _refused(lab, project) >= refused + 3, timeout=240)
    finally:
        stop.set()
        drainer.join(timeout=10)
    # The other client is done; the provider's client retries what was refused, and the first attempt
    # finishes.
    view = _status(plane, customer, "ready", timeout=300)
    assert view["project"] == project
    assert view["attempts"] == 1, view["history"]
    _serves_then_cancels(lab, plane, customer, view)


def _deploys(plane: ControlPlane) -> list[dict[str, Any]]:
    status, answer = plane.get("/jobs")
    assert status == 200, answer
    return [job for job in answer["jobs"] if job["kind"] == "deploy"]


def _ready(
    lab: Lab, plane: ControlPlane, hosts: tuple[Peer, ...], customers: tuple[str, ...]
) -> dict[str, dict[str, Any]]:
    """The customers signed up at once, on workers on every host, each one's view once ready."""
    for host in hosts:
        plane.start_worker(host)
    for customer in customers:
        status, _ = plane.post_event(signup(customer, gateway_image=lab.gateway_image()))
        assert status == 200
    return {customer: _status(plane, customer, "ready", timeout=600) for customer in customers}


def test_a_rollout_in_waves_runs_on_the_workers_and_outlives_a_worker_host(
    lab: Lab, plane: ControlPlane, hosts: tuple[Peer, ...], tmp_path: Path
) -> None:
    first, second = hosts
    customers = ("wave-a", "wave-b", "wave-c")
    views = _ready(lab, plane, hosts, customers)
    status, fleet = plane.get("/stacks")
    assert status == 200 and set(fleet["stacks"]) >= {f"customer-{customer}" for customer in customers}

    state = tmp_path / "rollout.json"
    stacks = [argument for customer in customers for argument in ("--stack", f"customer-{customer}")]
    plane.start_rollout(state, *stacks, "--canary", "customer-wave-a", "--first-batch", "2", "--concurrency", "2")

    # The first host dies while its CLI runs one of the rollout's deploys.
    def deploying_on_first() -> bool:
        running = [job for job in _deploys(plane) if job["status"] == "deploying"]
        return any(job["worker"].startswith(f"{first.link}:") for job in running) and _cli_running(first)

    wait_until("a deploy on the first host", deploying_on_first, timeout=300, interval=1)
    [interrupted] = [
        job for job in _deploys(plane) if job["status"] == "deploying" and job["worker"].startswith(f"{first.link}:")
    ]
    plane.kill_host(first)
    # A preview takes no stack lock, an `up` does: the CLI that died may have left one.
    left = plane.stack_locks(interrupted["customer_id"])

    assert plane.rollout_exit(timeout=600) == 0, plane.log("rollout")
    assert "3 of 3 stacks deployed; 0 failed" in plane.log("rollout")
    rollout = json.loads(state.read_text())
    assert rollout["waves"][0] == ["customer-wave-a"] and sorted(rollout["done"]) == sorted(
        f"customer-{customer}" for customer in customers
    )
    deploys = {job["event_id"]: job for job in _deploys(plane)}
    assert {job["commit"] for job in deploys.values()} == {plane.program_commit}, "the workers run what rolls out"
    taken = deploys[interrupted["event_id"]]
    assert taken["status"] == "deployed" and taken["worker"].startswith(f"{second.link}:"), taken
    takeover = next(entry for entry in taken["history"] if entry["event"] == "took over")
    assert ("its stack lock" in takeover["detail"]) == bool(left), (left, takeover)
    for customer in customers:
        # The same server, healthy, no lock left: a deploy changes no customer's machine.
        assert plane.stack_locks(customer) == []
        [server] = _servers(lab, customer)
        assert str(server.id) == views[customer]["outputs"]["server_id"]

    # A rule added by hand outside Pulumi, opening the metrics port.
    project, outputs = views["wave-b"]["project"], views["wave-b"]["outputs"]
    firewall = lab.hetzner(project).firewalls.get_by_id(int(outputs["firewall_id"]))
    reviewed = _rules(firewall.rules)
    metrics = str(lab.policy.inbound.metrics_port)
    by_hand = FirewallRule(direction="in", protocol="tcp", port=metrics, source_ips=["0.0.0.0/0", "::/0"])
    firewall.set_rules([*firewall.rules, by_hand])

    # An operator's `up` of one stack is the same deploy job, run by the host that is left. Its diff is
    # against the state, so the hand-made rule stays.
    one = plane.up_stack("customer-wave-b")
    assert one.returncode == 0, one.stdout + one.stderr
    assert f"server_id: {outputs['server_id']}" in one.stdout
    last = _last_deploy(plane, "wave-b")
    assert last["status"] == "deployed" and last["worker"].startswith(f"{second.link}:"), last
    assert last["commit"] == plane.program_commit and not last["refresh"]
    assert _rules(lab.hetzner(project).firewalls.get_by_id(firewall.id).rules) == reviewed | _rules([by_hand])

    # The fleet's drift audit, with the provisioner's settings and read-only tokens, names the change.
    audit = plane.audit_drift(tmp_path / "drift.json")
    assert audit.returncode == 1, audit.stdout + audit.stderr
    found = {entry["stack"]: entry for entry in json.loads((tmp_path / "drift.json").read_text())}
    assert set(found) == set(fleet["stacks"]), found
    assert found["customer-wave-b"]["cloud"]["verdict"] == "drift", found["customer-wave-b"]
    assert "firewall" in " ".join(found["customer-wave-b"]["cloud"]["details"]), found["customer-wave-b"]
    for customer in ("wave-a", "wave-c"):
        assert found[f"customer-{customer}"]["cloud"]["verdict"] == "ok", found[f"customer-{customer}"]

    # A drift repair refreshes the state first: its reviewed plan puts the firewall back, on the same server.
    repair = plane.up_stack("customer-wave-b", "--refresh")
    assert repair.returncode == 0, repair.stdout + repair.stderr
    assert f"server_id: {outputs['server_id']}" in repair.stdout
    repaired = _last_deploy(plane, "wave-b")
    assert repaired["status"] == "deployed" and repaired["refresh"], repaired
    assert _rules(lab.hetzner(project).firewalls.get_by_id(firewall.id).rules) == reviewed
    assert plane.stack_locks("wave-b") == []
    again = plane.audit_drift(tmp_path / "repaired.json", "--stack", "customer-wave-b")
    [after] = json.loads((tmp_path / "repaired.json").read_text())
    assert after["cloud"]["verdict"] == "ok", (after, again.stdout + again.stderr)


def _rules(rules: list[FirewallRule]) -> set[str]:
    return {json.dumps(rule.to_payload(), sort_keys=True) for rule in rules}


def _last_deploy(plane: ControlPlane, customer: str) -> dict[str, Any]:
    return max((job for job in _deploys(plane) if job["customer_id"] == customer), key=lambda job: job["received"])


def test_a_pull_request_preview_holds_no_secret_and_a_hostile_program_reaches_nothing(
    lab: Lab, plane: ControlPlane, hosts: tuple[Peer, ...], tmp_path: Path
) -> None:
    """As preview.yml runs it, on a runner of its own with the review token and read-only Hetzner tokens
    only: each stack's redacted state from the provisioner, the program confined. The unchanged program
    passes; a hostile one tries to read the job's secrets, open the state, reach the network, write
    the base tree and unsecret its stack's private key into the comment: every attempt fails, while
    the preview still reports, blocking on every stack. Nothing anywhere is changed."""
    customers = ("review-a", "review-b")
    views = _ready(lab, plane, hosts, customers)
    for host in hosts:
        plane.kill_host(host)  # a preview needs no worker
    status, fleet = plane.get("/stacks")
    assert status == 200
    stacks = fleet["stacks"]
    projects = {plane.get(f"/stacks/{stack}/settings")[1]["project"] for stack in stacks}
    reads = {project: lab.hetzner_usage(project, read_only=True)["requests"] for project in HETZNER_PROJECTS}
    writes = {project: lab.hetzner_usage(project)["requests"] for project in HETZNER_PROJECTS}
    review = DATA_DIR / "review"
    venv = hostile.virtualenv(review / "venv")

    program = hostile.program_copy(review / "unchanged", venv)
    canary = ("--canary", "customer-review-a", "--concurrency", "2")
    unchanged = plane.preview_fleet(program, tmp_path / "unchanged", *canary)
    assert unchanged.returncode == 0, unchanged.stdout + unchanged.stderr
    assert f"No blocking findings in {len(stacks)} stacks." in (tmp_path / "unchanged" / "fleet-preview.md").read_text()

    reports = review / "reports"
    reports.mkdir(exist_ok=True)
    run(["chown", CONFINED_USER, str(reports)])
    attempts = {
        "report": str(reports / "hostile.json"),
        "reach": {
            "the object store": [PROVISIONER.ipv4, OBJECT_STORE_PORT],
            "the provisioner's private listener": ["127.0.0.1", PRIVATE_API_PORT],
            "Hetzner's API": ["127.0.0.1", HETZNER_PORT],
            "the internet": [SINK_V4, 443],
        },
        "write": {
            "the base tree": str(REPO / "policy" / "__init__.py"),
            "the base virtualenv": str(REPO / ".venv" / "pyvenv.cfg"),
            "the toolchain": str(toolchain.cli_path().resolve()),
            "the plugin cache": str(toolchain.plugin_cache()),
        },
        "read": {"the CLI's environment": "/proc/{parent}/environ"},
    }
    program = hostile.program_copy(review / "hostile", venv, attempts)
    hostile_run = plane.preview_fleet(program, tmp_path / "hostile", *canary)
    assert hostile_run.returncode == 1, hostile_run.stdout + hostile_run.stderr
    summary = (tmp_path / "hostile" / "fleet-preview.md").read_text()
    assert f"{len(stacks)} of {len(stacks)} stacks have blocking findings" in summary
    assert "commands-match-rendering" in summary
    report = json.loads((reports / "hostile.json").read_text())
    assert report["uid"] == int(run(["id", "-u", CONFINED_USER]).stdout)
    held = [name for name in report["variables"] if name.startswith(("CLAW_", "HCLOUD_", "AWS_", "PULUMI_BACKEND"))]
    assert held == [] and "PULUMI_CONFIG_PASSPHRASE" not in report["variables"], report["variables"]
    tried = {what: outcome for what, outcome in report.items() if what not in ("uid", "variables")}
    assert len(tried) == 9 and all(outcome.startswith("refused") for outcome in tried.values()), tried
    # The canary's diff shows the unsecreted key: the redacted copy's marker, never the key.
    comment = summary + (tmp_path / "hostile" / "fleet-preview-full.md").read_text()
    state = json.loads(
        plane.pulumi("stack", "export", "--show-secrets", "--stack", "organization/clawhosters/customer-review-a")
    )
    [key] = [
        json.loads(resource["outputs"]["privateKeyOpenssh"]["plaintext"])
        for resource in state["deployment"]["resources"]
        if resource["urn"].endswith("-provisioning-key")
    ]
    body = key.splitlines()[1]
    assert "[redacted " in comment and body not in comment and body not in hostile_run.stdout + hostile_run.stderr

    for project in HETZNER_PROJECTS:
        used = lab.hetzner_usage(project, read_only=True)
        assert used["refused_writes"] == 0, used
        assert (used["requests"] > reads[project]) == (project in projects), (project, projects, used)
        assert lab.hetzner_usage(project)["requests"] == writes[project], "no write token was used"
    for customer in customers:
        [server] = _servers(lab, customer)
        assert str(server.id) == views[customer]["outputs"]["server_id"] and plane.stack_locks(customer) == []
        assert ":INPUT DROP" in run(in_ns(servers.namespace(server.id), "iptables-save", "-t", "filter")).stdout


def test_a_vps_that_streams_without_end_fails_its_change_within_bounds_while_the_worker_serves_others(
    lab: Lab, plane: ControlPlane, hosts: tuple[Peer, ...]
) -> None:
    """A customer with root on their VPS forces `yes` on the provisioning key's line in authorized_keys.
    The next change of their stack runs the baseline over SSH and streams: it fails within the
    operation's bounds, while another customer's deploy on the same worker host succeeds meanwhile,
    and the worker processes live on."""
    host, customers = hosts[0], ("hostile", "neighbour")
    bounds = {"CLAW_PROCESS_MEMORY_MIB": "512", "CLAW_OPERATION_SECONDS": "300"}
    plane.start_worker(host, workers=2, settings=bounds)
    for customer in customers:
        assert plane.post_event(signup(customer, gateway_image=lab.gateway_image()))[0] == 200
    views = {customer: _status(plane, customer, "ready", timeout=600) for customer in customers}
    master = psutil.Process(lab.pids[f"worker-{host.link}"])
    workers = set(master.children())

    [server] = _servers(lab, "hostile")
    servers.ServerBackend().machine(server.id).run("sed", "-i", 's/^/command="yes" /', "/root/.ssh/authorized_keys")
    # The customer lets their own key in: the baseline command runs again, and meets `yes`.
    change = subscription("hostile").event(
        "updated", "active", gateway_image=lab.gateway_image(), ssh_enabled=True, ssh_public_keys=[public_key()]
    )
    assert plane.post_event(change)[0] == 200
    wait_until("the baseline's session", lambda: _ssh_session_from(host, server.id), timeout=240)
    neighbour = plane.up_stack("customer-neighbour")
    assert neighbour.returncode == 0, neighbour.stdout + neighbour.stderr
    assert _last_deploy(plane, "neighbour")["worker"].startswith(f"{host.link}:")

    view = _status(plane, "hostile", "failed", timeout=400)
    assert view["attempts"] == 1 and "CLAW_PROCESS_MEMORY_MIB" in view["last_error"], view
    assert any(entry["event"] == "output dropped" for entry in view["history"]), view["history"]
    assert not _ssh_session_from(host, server.id)
    assert set(master.children()) == workers, "the worker processes are the same"
    assert [made.id for made in _servers(lab, "hostile")] == [server.id]
    assert _last_deploy(plane, "neighbour")["outputs"]["server_id"] == views["neighbour"]["outputs"]["server_id"]
