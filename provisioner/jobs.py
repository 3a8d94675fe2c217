"""The job queue (huey: SQLite by default, Redis for several machines) and the job itself.

huey takes a task off the queue before running it, so a worker killed mid-job would lose it; the
job store keeps the truth instead, and a sweep (every minute, and when a worker starts) puts every
due, unfinished job whose stack lease is free back on the queue.

Fencing: a job runs only while its worker holds the stack lease. A heartbeat renews it and survives
store errors; a watchdog stops the operation once the lease has gone unrenewed for half its length
(or was lost, or the attempt ran past CLAW_OPERATION_SECONDS): SIGINT to the CLI, then after
CLAW_CANCEL_SECONDS every process of the operation, providers included, gets SIGTERM and after
CLAW_KILL_GRACE_SECONDS SIGKILL (provisioner.sessions), and the lease is let go only once none is
left. So the operation has stopped, down to the last provider, before the lease can lapse and another
worker can take the stack. The stack's own lock is the second fence: a worker that takes over a stack
whose last operation did not end cleanly (its CLI killed, or exited unable to delete its lock) clears
the locks that operation's CLIs left and its pending operations first, and says so in the job's
history; until that has succeeded the stack counts as not cleanly ended.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import logging
import os
import resource
import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path
from typing import Any

import psutil
from hcloud import Client
from huey import Huey, MemoryHuey, RedisHuey, SqliteHuey, crontab
from huey.consumer import Consumer
from huey.exceptions import RetryTask

from config.loader import settings_from_mapping
from fleet import resize
from fleet.desired import stack_config
from fleet.failures import describe
from fleet.output import OUTPUT_LIMIT, DroppedOutput
from fleet.rollout import DeployFailed
from provisioner import placement, sessions, snapshots
from provisioner.runner import StackRunner, left_its_lock
from provisioner.settings import ProvisionerSettings
from provisioner.store import FINISHED, Claim, DeployRefused, Job, JobStore, Placement, StoreUnavailable, key_value

log = logging.getLogger("provisioner")
_STARTED = uuid.uuid4().hex[:8]
LOCKED_RETRY_SECONDS = 2
PRUNE_LEASE, PRUNE_EVERY_SECONDS = "lock:prune", 3600
# Set in a worker process when it must stop: its running operation is cancelled at once.
STOP = threading.Event()


def worker_id() -> str:
    # Per process: the consumer forks its workers after this module is imported.
    return f"{os.uname().nodename}:{os.getpid()}:{_STARTED}"


@cache
def settings() -> ProvisionerSettings:
    return ProvisionerSettings.from_env(os.environ)


@cache
def store() -> JobStore:
    return JobStore(key_value(settings().queue_url))


def make_huey(queue_url: str) -> Huey:
    # results=False: the job store keeps every outcome; huey's result rows would only pile up.
    if queue_url.startswith("sqlite:///"):
        path = Path(queue_url.removeprefix("sqlite://"))
        path.parent.mkdir(parents=True, exist_ok=True)
        # Several processes open the file at once, and the first to switch a new file to WAL
        # mode holds it exclusively for a moment: SQLite's busy timeout does not cover that.
        for _ in range(100):
            try:
                return SqliteHuey("clawhosters-provisioner", filename=str(path), timeout=10, results=False)
            except sqlite3.OperationalError as error:
                if "locked" not in str(error):
                    raise
                time.sleep(0.05)
        raise RuntimeError(f"{path} stayed locked")
    import redis

    # Bounded waits: an outage must show as an error, never as a call that hangs (huey blocks 1 s per read).
    pool = redis.ConnectionPool.from_url(queue_url, socket_timeout=5, socket_connect_timeout=2)
    return RedisHuey("clawhosters-provisioner", connection_pool=pool, results=False)


# The queue URL is validated (naming the variable) by settings(), which every entry point calls
# first; a bad value must not fail here with a traceback, or create anything.
_QUEUE_URL = os.environ.get("CLAW_QUEUE_URL", str(ProvisionerSettings.model_fields["queue_url"].default))
huey = (
    make_huey(_QUEUE_URL)
    if _QUEUE_URL.startswith(("sqlite:///", "redis://", "rediss://"))
    else MemoryHuey("clawhosters-provisioner", results=False)
)


@cache
def runner() -> StackRunner:
    module, _, attribute = settings().runner.partition(":")
    factory = getattr(importlib.import_module(module), attribute)
    stack_runner: StackRunner = factory(settings())
    return stack_runner


def queue_depth() -> int:
    return int(huey.pending_count()) + int(huey.scheduled_count())


def enqueue(job: Job) -> None:
    wait = job.run_after - time.time()
    if wait > 0:
        run_job.schedule(args=(job.event_id,), delay=wait)
    else:
        run_job(job.event_id)


def desired_config(job: Job, config: ProvisionerSettings, *, decommission: bool = False) -> dict[str, str]:
    """The stack's complete config: the customer's settings, the platform's, and the decommission flag."""
    desired = stack_config(job.config, config.platform)
    if decommission:
        desired["clawhosters:decommission"] = "true"
    return desired


def _event(message: str, job: Job, **fields: object) -> None:
    # Structured, and never with the job's config: that stays in the store.
    log.info(message, extra={"event_id": job.event_id, "customer": job.customer_id, "kind": job.kind, **fields})


class OperationStopped(RuntimeError):
    """A CLI may not run: the operation is being stopped, or the CLI could not be named as its own."""


# What a process of an operation says when it reached its memory bound (RLIMIT_DATA): Go's runtime
# (the CLI, the language host, every provider) and Python (the program, the policy pack).
OUT_OF_MEMORY = ("fatal error: runtime: cannot allocate memory", "fatal error: runtime: out of memory", "MemoryError")


class Fence:
    """The lease heartbeat and the watchdog that stops the operation when the lease is at risk or the
    attempt has run past its deadline; while it holds, each CLI the operation starts is named in the
    stack's holder record before it can take the stack lock."""

    def __init__(self, customer_id: str, owner: str, config: ProvisionerSettings) -> None:
        self.customer_id, self.owner, self.config = customer_id, owner, config
        self.started = self.last_renewed = time.monotonic()
        self.lost = threading.Event()
        self.done = threading.Event()
        self.reason: str | None = None
        self.overran = False
        self.killed = False
        self._interrupted: set[int] = set()
        self._threads = [
            threading.Thread(target=self._heartbeat, daemon=True),
            threading.Thread(target=self._watchdog, daemon=True),
        ]

    def __enter__(self) -> Fence:
        sessions.PROCESSES.on_cli = self._name_cli
        sessions.PROCESSES.kill_grace_seconds = self.config.kill_grace_seconds
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.done.set()
        for thread in self._threads:
            thread.join()
        sessions.PROCESSES.on_cli = None
        # The lease is let go only once nothing of the operation is left running.
        if sessions.end_own_operation(0, self.config.kill_grace_seconds).signalled:
            self.killed = True

    def _name_cli(self, pid: int) -> None:
        if self.reason is not None:
            raise OperationStopped(f"the operation is being stopped: {self.reason}")
        # Before the CLI can lock the stack: a lock it leaves is then known to be this operation's.
        holder = f"{os.uname().nodename}:{pid}"
        if not store().note_cli(self.customer_id, self.owner, self.config.lease_seconds, holder):
            raise OperationStopped("another worker holds the stack lease")

    def _heartbeat(self) -> None:
        while not self.done.wait(self.config.lease_seconds / 6):
            # The lease runs from when the store was asked, at the latest: count from before the call.
            asked = time.monotonic()
            try:
                if store().lock(self.customer_id, self.owner, self.config.lease_seconds):
                    self.last_renewed = asked
                else:
                    self.lost.set()  # another worker holds the stack now
                    return
            except Exception as error:  # an outage: keep trying, the watchdog decides
                log.warning("lease renewal failed", extra={"customer": self.customer_id, "error": repr(error)})

    def _watchdog(self) -> None:
        while not self.done.wait(0.05):
            if self.reason is None:
                self.reason = self._risk()
                if self.reason is None:
                    continue
                log.warning("cancelling the operation", extra={"customer": self.customer_id, "reason": self.reason})
            # Once tripped, every process of the operation is ended, also one the runner starts after.
            clis = sessions.interrupt_children(self._interrupted)
            ending = sessions.end_own_operation(self.config.cancel_seconds, self.config.kill_grace_seconds)
            if ending.signalled & clis:
                self.killed = True

    def _risk(self) -> str | None:
        unrenewed = time.monotonic() - self.last_renewed
        if self.lost.is_set():
            return "the stack lease was lost to another worker"
        if unrenewed > self.config.lease_seconds / 2:
            return f"the stack lease could not be renewed for {unrenewed:.1f} s"
        if time.monotonic() - self.started > self.config.operation_seconds:
            self.overran = True
            deadline = self.config.operation_seconds
            return f"the operation ran past its deadline of {deadline:g} s (CLAW_OPERATION_SECONDS)"
        if STOP.is_set():
            return "the worker is stopping"
        return None


@huey.task()
def run_job(event_id: str) -> None:
    if STOP.is_set():
        raise RetryTask(delay=LOCKED_RETRY_SECONDS)  # back on the queue for another worker
    job = store().get(event_id)
    if job is None or job.state in FINISHED:
        return
    if job.run_after > time.time():
        raise RetryTask(delay=job.run_after - time.time())
    config, owner = settings(), worker_id()
    if not store().lock(job.customer_id, owner, config.lease_seconds):
        raise RetryTask(delay=LOCKED_RETRY_SECONDS)  # another operation on this stack is running
    try:
        project = _admit(job, config)
        claim = store().claim(event_id, owner, config.lease_seconds, time.time())
        if isinstance(claim, float):
            raise RetryTask(delay=claim)  # a duplicate queue entry, still inside its backoff
        if claim is not None:
            claim.job.project = project
            _run(claim, config, owner, project)
    finally:
        try:
            store().unlock(job.customer_id, owner)
        except StoreUnavailable as error:  # the lease lapses on its own
            log.warning("could not release the stack lease", extra={"event_id": event_id, "error": str(error)})


def _admit(job: Job, config: ProvisionerSettings) -> str:
    """The job's Hetzner project, once its request budget can pay for the operation; until then the
    job waits in the queue (its stack lease released), so no CLI ever waits for a token."""
    projects = {project.name: project for project in config.hetzner_projects}
    name = store().project_of(job.customer_id, list(projects))
    project = projects.get(name)
    if project is None:
        log.error(
            "the customer's Hetzner project is not configured", extra={"customer": job.customer_id, "project": name}
        )
        raise RetryTask(delay=60)
    cost = snapshots.REQUESTS if job.kind == "snapshot" else config.hetzner_requests_per_operation
    wait = store().take_requests(name, cost, project.requests_per_hour, time.time())
    if wait > 0:
        _event("waiting for the Hetzner budget", job, project=name, seconds=round(wait, 1))
        store().defer(job.event_id, time.time() + wait)  # or the minutely sweep would queue it again
        raise RetryTask(delay=wait)
    return name


def _run(claim: Claim, config: ProvisionerSettings, owner: str, project: str) -> None:
    job = claim.job
    dropped: list[int] = []

    def output(line: str) -> None:
        if isinstance(line, DroppedOutput):
            dropped.append(line.dropped)
        log.info("pulumi", extra={"event_id": job.event_id, "line": line.rstrip()})

    _event("started", job, attempt=job.attempts)
    started = time.time()
    failure: Exception | None = None
    # Until cleared, a stack whose last operation did not end cleanly may still hold its stack lock.
    stale = claim.previous is not None
    with Fence(job.customer_id, owner, config) as fence:
        try:
            if claim.previous is not None:
                cleared = runner().clear_stale_lock(project, job.customer_id, output, claim.previous.clis)
                stale = False
                job.note(
                    "took over" if claim.previous.worker != owner else "recovered",
                    worker=owner,
                    detail=f"{claim.previous.event_id} on {claim.previous.worker} did not end cleanly; "
                    f"cleared: {', '.join(cleared) or 'nothing'}",
                )
            if job.kind == "provision" and store().stack_exists(job.customer_id):
                # A billing change of a running server (a change of plan, a setting): reviewed as a
                # rollout's step is, the preview with the pack, `up` held to its plan, the health gate.
                recorded, placed = _replanned(job, config, project)
                job.config = placement.placed_config(job.config, placed)
                job.outputs = runner().deploy(project, job.customer_id, desired_config(job, config), output)
                if placed != recorded:
                    _record_placement(job, placed, owner, config, over=recorded)
            elif job.kind == "provision":
                job.config = _placed(job, config, project, owner)
                job.outputs = runner().up(project, job.customer_id, desired_config(job, config), output)
            elif job.kind == "deploy":
                job.outputs = _deploy(job, config, project, output)
            elif job.kind == "snapshot":
                job.outputs = _snapshot(job, config, project, fence)
            else:
                _deprovision(job, config, project, output)
            _keep_redacted_state(job, project, output)
        except Exception as error:
            failure = error
            stale = stale or left_its_lock(error)
    seconds = time.time() - started
    if dropped:
        job.note(
            "output dropped",
            attempt=job.attempts,
            detail=f"{sum(dropped)} bytes of the CLI's output were dropped "
            f"(each command keeps its first and last {OUTPUT_LIMIT // 2} bytes)",
        )
    bound = _bound_reached(fence, failure, config)
    ended = not (fence.killed or stale)
    if fence.reason is not None and failure is not None and bound is None:
        job.state, job.run_after = "queued", time.time()
        job.note("cancelled", attempt=job.attempts, worker=owner, detail=fence.reason, seconds=seconds)
        _event("cancelled", job, reason=fence.reason)
        if _record(job, owner, config, operation_ended=ended) and not STOP.is_set():
            _requeue(job)
        return
    if failure is not None:
        job.last_error = bound or describe(failure)
        # A deploy that the preview or the health gate refused would be refused again: the rollout counts
        # it. An operation that met its bounds would meet them again, holding a worker each time. A job no
        # choice of its plan fits (nothing available for a signup, nothing a running server can be resized
        # to in its location) waits for an operator: the plans, or a retry once Hetzner has stock.
        refused = isinstance(failure, DeployFailed | placement.NoPlacement)
        if job.attempts >= config.max_attempts or refused or bound is not None:
            job.state = "failed"
            job.note("failed", attempt=job.attempts, worker=owner, detail=job.last_error, seconds=seconds)
            _record(job, owner, config, operation_ended=ended)
            _event("failed", job, error=job.last_error)
            return
        job.state = "queued"
        job.run_after = time.time() + config.retry_base_seconds * 2 ** (job.attempts - 1)
        job.note("will retry", attempt=job.attempts, worker=owner, detail=job.last_error, seconds=seconds)
        if _record(job, owner, config, operation_ended=ended):
            _event("will retry", job, error=job.last_error, at=job.run_after)
            _requeue(job)
        return
    job.state, job.last_error = "done", None
    job.note("done", attempt=job.attempts, worker=owner, seconds=seconds)
    _record(job, owner, config, operation_ended=True)
    _event("done", job, seconds=round(seconds, 3))


def _placed(job: Job, config: ProvisionerSettings, project: str, owner: str) -> dict[str, str]:
    """The signup's settings on the customer's placement: the one recorded, or, for a new customer, the
    first choice of their plan Hetzner has available now, recorded before anything is created."""
    recorded = store().placement(job.customer_id)
    how = "as recorded"
    if recorded is None:
        fresh, how = placement.place(config.plans, placement.plan_name(job), _offer(config, project))
        recorded = _record_placement(job, fresh, owner, config, over=None)
    job.note("placed", attempt=job.attempts, detail=f"{recorded.server_type} in {recorded.location}, {how}")
    return placement.placed_config(job.config, recorded)


def _replanned(job: Job, config: ProvisionerSettings, project: str) -> tuple[Placement | None, Placement]:
    """The running server's placement (None where none is recorded yet) and where the job puts it: the
    same while the plan stays, else the new plan's type for it in its location, never another location."""
    plan = placement.plan_name(job)
    recorded = store().placement(job.customer_id)
    current, how = recorded, "as recorded"
    if current is None:
        last = store().last_provisioned(job.customer_id)
        if last is None:
            raise RuntimeError(f"customer {job.customer_id} has no completed provision, so its server is unknown")
        current, how = placement.adopted(last, plan), "kept as it runs (provisioned before placements were recorded)"
    placed = current
    if current.plan != plan:
        server = settings_from_mapping(job.config).customer.server_name
        placed = placement.change_plan(config.plans, plan, current, _offer(config, project), server)
        how = f"plan {plan} (was {current.plan}): its first choice in {placed.location} the server can run"
    job.note("placed", attempt=job.attempts, detail=f"{placed.server_type} in {placed.location}, {how}")
    return recorded, placed


def _hetzner(config: ProvisionerSettings, project: str) -> Client:
    """Hetzner's client on the project's token (writes: a snapshot, a deletion)."""
    token = config.hetzner_tokens(os.environ)[project].get_secret_value()
    return resize.hetzner_client({"HCLOUD_TOKEN": token})


def _offer(config: ProvisionerSettings, project: str) -> placement.Offer:
    """Hetzner's server types and their availability now, read with the project's read-only token."""
    token = config.hetzner_read_tokens(os.environ)[project].get_secret_value()
    return placement.read_offer(resize.hetzner_client({"HCLOUD_TOKEN": token}), stopped=STOP.is_set)


def _record_placement(
    job: Job, placed: Placement, owner: str, config: ProvisionerSettings, *, over: Placement | None
) -> Placement:
    """Record where the customer's server is (in place of `over`); the placement recorded."""
    recorded = store().record_placement(job.customer_id, placed, owner, config.lease_seconds, over=over)
    if recorded is None:
        raise RuntimeError("the stack lease passed to another worker before the placement was recorded")
    return recorded


def _bound_reached(fence: Fence, failure: Exception | None, config: ProvisionerSettings) -> str | None:
    """Why a failed attempt met one of the operation's bounds, if it did: its deadline or its memory."""
    if failure is None:
        return None
    if fence.overran:
        return f"stopped: {fence.reason}"
    # A failed CLI command's report (fleet.failures) holds the errors the CLI reported; what a process
    # said as it died is in the CLI's output, which the Automation API's error it was raised from holds.
    text = "\n".join(str(error) for error in (failure, failure.__cause__) if error is not None)
    said = next((marker for marker in OUT_OF_MEMORY if marker in text), None)
    if said is not None:
        bound = f"its memory bound of {config.process_memory_mib} MiB (CLAW_PROCESS_MEMORY_MIB)"
        return f"stopped: a process of the operation reached {bound}: {said}"
    return None


def _deploy(job: Job, config: ProvisionerSettings, project: str, output: Callable[[str], None]) -> dict[str, Any]:
    """The customer's last provisioned settings, previewed with the pack, `up` held to that plan, then
    the health gate (fleet.rollout.DeployStack); a drift repair refreshes the stack's state first."""
    if job.commit is not None and job.commit != config.program_commit:
        raise DeployFailed(
            f"the rollout is of commit {job.commit}, this worker runs {config.program_commit or 'an unnamed commit'} "
            "(CLAW_PROGRAM_COMMIT): deploy the workers first, then resume the rollout"
        )
    last = store().last_provisioned(job.customer_id)
    if last is None:
        raise DeployFailed(f"customer {job.customer_id} has no completed provision, so its settings are unknown")
    return runner().deploy(project, job.customer_id, desired_config(last, config), output, refresh=job.refresh)


def _snapshot(job: Job, config: ProvisionerSettings, project: str, fence: Fence) -> dict[str, Any]:
    """The day's scheduled snapshot of the customer's server, and the oldest beyond the retention deleted;
    the wait for Hetzner ends as soon as the worker stops or the fence trips."""
    client = _hetzner(config, project)
    return snapshots.take(
        client, job.customer_id, config.platform.backups, lambda: STOP.is_set() or fence.reason is not None
    )


def _keep_redacted_state(job: Job, project: str, output: Callable[[str], None]) -> None:
    """After an operation, the stack's state with every secret replaced, kept for a pull request's
    preview (GET /stacks/<stack>/state); forgotten with the stack. The operation stands either way. A
    scheduled snapshot is taken outside Pulumi and leaves the state as it was: the copy kept stands."""
    if job.kind == "snapshot":
        return
    try:
        gone = job.kind == "deprovision"
        store().keep_redacted_state(
            job.customer_id, None if gone else runner().redacted_state(project, job.customer_id, output)
        )
    except Exception as error:  # a copy not kept is a preview's finding, not the operation's failure
        job.note("redacted state not kept", attempt=job.attempts, detail=" ".join(str(error).split())[:500])


def _deprovision(job: Job, config: ProvisionerSettings, project: str, output: Callable[[str], None]) -> None:
    """Snapshot (an up with `clawhosters:decommission`), destroy, remove the stack."""
    last = store().last_provisioned(job.customer_id)
    if last is not None:
        # The program snapshots the server (kept for platform:snapshot_retention_days) and lifts
        # the protections that would otherwise stop the destroy.
        runner().up(project, job.customer_id, desired_config(last, config, decommission=True), output)
        job.note("snapshot", attempt=job.attempts, detail="up with clawhosters:decommission=true")
    # The final snapshot is what stays: the scheduled ones go (Hetzner's backups go with the server).
    deleted = snapshots.prune(_hetzner(config, project), job.customer_id, keep=0)
    if deleted:
        job.note("scheduled snapshots deleted", attempt=job.attempts, detail=", ".join(map(str, deleted)))
    runner().destroy(project, job.customer_id, output)
    job.note("destroyed", attempt=job.attempts)
    runner().remove(project, job.customer_id, output)
    # The server is gone: a new signup of the customer is placed afresh.
    store().release_placement(job.customer_id, worker_id(), config.lease_seconds)


def _record(job: Job, owner: str, config: ProvisionerSettings, *, operation_ended: bool) -> bool:
    """Write the job's outcome under the lease, waiting out an outage: the fence refuses the write once
    another worker has taken the stack, and that worker records the takeover instead."""
    deadline = time.monotonic() + max(60.0, 5 * config.lease_seconds)
    while True:
        try:
            if store().update(job, owner, config.lease_seconds, operation_ended=operation_ended):
                return True
            log.warning("not recorded: another worker holds the stack", extra={"event_id": job.event_id})
            return False
        except StoreUnavailable as error:
            if time.monotonic() > deadline or STOP.is_set():
                log.error("not recorded: the store is down", extra={"event_id": job.event_id, "error": str(error)})
                return False
            time.sleep(0.2)


def _requeue(job: Job) -> None:
    try:
        enqueue(job)
    except Exception as error:  # the sweep finds it in the store
        log.warning("could not requeue", extra={"event_id": job.event_id, "error": repr(error)})


def submit_snapshots(day: date | None = None) -> list[str]:
    """With `platform:backups` mode "snapshots", the day's scheduled snapshot of every stack, each
    accepted once (a newer one supersedes a queued older one); the ids of those accepted now."""
    if settings().platform.backups.mode != "snapshots":
        return []
    day = day or datetime.now(UTC).date()
    accepted = []
    for customer in store().deployable():
        job = Job(
            event_id=snapshots.job_id(customer, day), kind="snapshot", customer_id=customer, created=int(time.time())
        )
        outcome = store().accept_stack_job(job)
        if isinstance(outcome, DeployRefused) or outcome[0] != "accepted":
            continue
        accepted.append(outcome[1].event_id)
        _requeue(outcome[1])
    return accepted


@huey.periodic_task(crontab(minute="0"))
def schedule_snapshots() -> None:
    """Every hour: the day's first tick submits the day's snapshots, a later one what it missed."""
    submit_snapshots()


@huey.periodic_task(crontab(minute="*"))
def sweep() -> None:
    """Re-queue due, unfinished jobs that no live worker holds (lost with a crashed worker); prune."""
    recover()
    prune()


def prune() -> int:
    """Delete finished job records past the retention period (JobStore.prune), at most once an hour for
    the whole platform: the first sweep to take the store's pruning lease does it."""
    if not store().kv.acquire(PRUNE_LEASE, uuid.uuid4().hex, PRUNE_EVERY_SECONDS):
        return 0
    pruned = store().prune(time.time() - settings().job_retention_days * 86400)
    if pruned:
        log.info("pruned finished job records", extra={"count": pruned})
    return pruned


def recover() -> int:
    requeued = 0
    for job in store().runnable(time.time()):
        probe = f"sweep:{worker_id()}"
        if store().lock(job.customer_id, probe, 1):  # the stack is free: nobody is running it
            store().unlock(job.customer_id, probe)
            run_job(job.event_id)
            requeued += 1
    return requeued


_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def _stop_requested(signum: int, frame: Any) -> None:
    STOP.set()


class GracefulConsumer(Consumer):  # type: ignore[misc]
    """huey's consumer with the stop behaviour systemd, Docker and Kubernetes expect.

    SIGTERM (and SIGINT) stop taking jobs and give running operations CLAW_STOP_GRACE_SECONDS to
    finish; then each worker stops its operation (the CLI gets SIGINT, every process of the
    operation SIGTERM and SIGKILL after CLAW_CANCEL_SECONDS and CLAW_KILL_GRACE_SECONDS) and records
    it. Workers die with the master: each asks the kernel for SIGTERM when its parent dies.

    Each worker process leads a session of its own, which holds its operation's processes
    (provisioner.sessions), and sets RLIMIT_DATA (CLAW_PROCESS_MEMORY_MIB), which they inherit. The
    master adopts the orphans of its descendants (a child subreaper): when a worker process dies (the
    OOM killer's usual pick), its CLI, told by the kernel to cancel (`bin/pulumi`), gets
    CLAW_CANCEL_SECONDS to do so, then the master ends what is left of the dead worker's session.
    """

    def __init__(
        self,
        *args: Any,
        stop_grace_seconds: float,
        cancel_seconds: float,
        kill_grace_seconds: float,
        memory_bytes: int,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._stop_grace, self._cancel, self._kill_grace = stop_grace_seconds, cancel_seconds, kill_grace_seconds
        self._memory_bytes = memory_bytes
        self._master = os.getpid()
        self._orphaned: dict[int, sessions.Ending] = {}
        self._orphans_checked = 0.0
        _prctl(_PR_SET_CHILD_SUBREAPER, 1)

    def _create_process(self, process: Any, name: str) -> Any:
        def run() -> None:
            os.setsid()  # the session that holds this worker's operations
            resource.setrlimit(resource.RLIMIT_DATA, (self._memory_bytes, self._memory_bytes))
            self._set_child_signal_handlers()
            process.initialize()
            try:
                while not STOP.is_set() and not self.stop_flag.is_set():
                    process.loop()
            except Exception:
                log.exception("worker process died", extra={"process": name})
            finally:
                process.shutdown()

        return self.environment.create_process(run, name)

    def _set_child_signal_handlers(self) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, _stop_requested)
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != self._master:  # the master died before prctl took effect
            STOP.set()

    def _set_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._graceful_stop)
        signal.signal(signal.SIGINT, self._graceful_stop)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def _graceful_stop(self, signum: int, frame: Any) -> None:
        log.info("stopping", extra={"signal": signal.Signals(signum).name, "grace_seconds": self._stop_grace})
        self._received_signal, self._restart, self._graceful = True, False, True

    def loop(self, health_check_ts: float | None = None) -> float | None:
        if time.monotonic() - self._orphans_checked >= 0.2:
            self._orphans_checked = time.monotonic()
            self._end_orphans()
        return super().loop(health_check_ts)  # type: ignore[no-any-return]

    def _end_orphans(self) -> None:
        """Reap adopted orphans, and end the operations of worker processes that died: their CLIs got
        SIGINT from the kernel and may cancel gracefully for CLAW_CANCEL_SECONDS, then what is left of
        the session gets SIGTERM and SIGKILL, well before the dead worker's stack lease can lapse."""
        ours = {process.pid for _, process in self.worker_threads} | {self.scheduler.pid}
        for child in psutil.Process().children():
            if child.pid in ours:
                continue  # huey reaps its own processes
            if not sessions.running(child.pid):
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(child.pid, os.WNOHANG)
                continue
            session = sessions.session_of(child.pid)
            # A live worker ends its own operation's processes; only a dead one's are the master's.
            if session is not None and session != os.getsid(0) and not sessions.running(session):
                self._orphaned.setdefault(session, sessions.Ending(session, self._cancel, self._kill_grace))
        for session, ending in list(self._orphaned.items()):
            if ending.step():
                log.info("ended the operation of a dead worker process", extra={"session": session})
                del self._orphaned[session]

    def stop(self, graceful: bool = False) -> None:
        self.stop_flag.set()
        processes = [process for _, process in self.worker_threads] + [self.scheduler]
        deadline = time.monotonic() + self._stop_grace
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in processes:
            if process.is_alive() and process.pid:
                os.kill(process.pid, signal.SIGTERM)  # stop the running operation
        deadline = time.monotonic() + self._cancel + self._kill_grace + 5
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
        # A worker killed here leaves its operation's processes: they end with it.
        for process in processes:
            if process.pid:
                sessions.Ending(process.pid, 0, self._kill_grace).run()
        log.info("stopped")


def consume(workers: int) -> None:
    config = settings()
    try:
        recover()
    except StoreUnavailable as error:  # the periodic sweep catches up once the store is back
        log.warning("could not sweep at start", extra={"error": str(error)})
    # No store or queue connection may cross the fork into the worker processes.
    huey.storage.close()
    consumer = GracefulConsumer(
        huey,
        workers=workers,
        worker_type="process",  # separate processes: the Automation API keeps process-global state
        periodic=True,
        max_delay=1.0,
        stop_grace_seconds=config.stop_grace_seconds,
        cancel_seconds=config.cancel_seconds,
        kill_grace_seconds=config.kill_grace_seconds,
        memory_bytes=config.process_memory_mib << 20,
    )
    consumer.run()
