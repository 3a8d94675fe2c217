"""The job queue (huey: SQLite by default, Redis for several machines) and the job itself.

huey takes a task off the queue before running it, so a worker killed mid-job would lose it; the
job store keeps the truth instead, and a periodic sweep puts every due, unfinished job whose stack
lease has lapsed back on the queue. A job runs only while its worker holds the stack lease, which
a heartbeat renews.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from functools import cache
from pathlib import Path

from huey import Huey, RedisHuey, SqliteHuey, crontab
from huey.exceptions import RetryTask

from provisioner.runner import StackRunner
from provisioner.settings import ProvisionerSettings
from provisioner.store import Job, JobStore, key_value

log = logging.getLogger("provisioner")
_STARTED = uuid.uuid4().hex[:8]


def worker_id() -> str:
    # Per process: the consumer forks its workers after this module is imported.
    return f"{os.uname().nodename}:{os.getpid()}:{_STARTED}"


LOCKED_RETRY_SECONDS = 2
FINISHED = ("done", "failed", "cancelled")


@cache
def settings() -> ProvisionerSettings:
    return ProvisionerSettings.from_env(os.environ)


@cache
def store() -> JobStore:
    return JobStore(key_value(settings().queue_url))


def make_huey(queue_url: str) -> Huey:
    if queue_url.startswith("sqlite:///"):
        path = Path(queue_url.removeprefix("sqlite://"))
        path.parent.mkdir(parents=True, exist_ok=True)
        # Several processes open the file at once, and the first to switch a new file to WAL
        # mode holds it exclusively for a moment: SQLite's busy timeout does not cover that.
        for _ in range(100):
            try:
                return SqliteHuey("clawhosters-provisioner", filename=str(path), timeout=60)
            except sqlite3.OperationalError as error:
                if "locked" not in str(error):
                    raise
                time.sleep(0.05)
        raise RuntimeError(f"{path} stayed locked")
    return RedisHuey("clawhosters-provisioner", url=queue_url)


huey = make_huey(os.environ.get("CLAW_QUEUE_URL", ProvisionerSettings.model_fields["queue_url"].default))


@cache
def runner() -> StackRunner:
    module, _, attribute = settings().runner.partition(":")
    factory = getattr(importlib.import_module(module), attribute)
    stack_runner: StackRunner = factory(settings())
    return stack_runner


def enqueue(job: Job) -> None:
    wait = job.run_after - time.time()
    if wait > 0:
        run_job.schedule(args=(job.event_id,), delay=wait)
    else:
        run_job(job.event_id)


def _event(message: str, job: Job, **fields: object) -> None:
    # Structured, and never with the job's config: that stays in the store.
    record = {"event": message, "event_id": job.event_id, "customer": job.customer_id, "kind": job.kind, **fields}
    log.info(json.dumps(record))


class _Heartbeat(threading.Thread):
    def __init__(self, job: Job, seconds: float) -> None:
        super().__init__(daemon=True)
        self.job, self.seconds, self.stopped = job, seconds, threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.seconds / 3):
            store().lock(self.job.customer_id, worker_id(), self.seconds)


@huey.task()
def run_job(event_id: str) -> None:
    job = store().get(event_id)
    if job is None or job.state in FINISHED:
        return
    if job.run_after > time.time():
        raise RetryTask(delay=job.run_after - time.time())
    config = settings()
    if not store().lock(job.customer_id, worker_id(), config.lease_seconds):
        raise RetryTask(delay=LOCKED_RETRY_SECONDS)  # another operation on this stack is running
    heartbeat = _Heartbeat(job, config.lease_seconds)
    heartbeat.start()
    try:
        job = store().get(event_id) or job  # as it is now that the lease is ours
        if job.state in FINISHED:
            return
        if job.run_after > time.time():  # a duplicate queue entry, still inside its backoff
            raise RetryTask(delay=job.run_after - time.time())
        job.state, job.attempts = "running", job.attempts + 1
        store().save(job)
        _event("started", job, attempt=job.attempts)
        _run(job, config)
    finally:
        heartbeat.stopped.set()
        heartbeat.join()
        store().unlock(job.customer_id, worker_id())


def _run(job: Job, config: ProvisionerSettings) -> None:
    def output(line: str) -> None:
        log.info(json.dumps({"event": "pulumi", "event_id": job.event_id, "line": line.rstrip()}))

    try:
        if job.kind == "provision":
            job.outputs = runner().up(job.customer_id, job.config, output)
        else:
            runner().destroy(job.customer_id, output)
    except Exception as error:
        job.last_error = f"{type(error).__name__}: {str(error)[-500:]}"
        if job.attempts >= config.max_attempts:
            job.state = "failed"
            store().save(job)
            _event("failed", job, error=job.last_error)
            return
        job.state = "queued"
        job.run_after = time.time() + config.retry_base_seconds * 2 ** (job.attempts - 1)
        store().save(job)
        _event("will retry", job, error=job.last_error, at=job.run_after)
        enqueue(job)
        return
    job.state, job.last_error = "done", None
    store().save(job)
    _event("done", job)


@huey.periodic_task(crontab(minute="*"))
def sweep() -> None:
    """Re-queue due, unfinished jobs that no live worker holds (lost with a crashed worker)."""
    recover()


def recover() -> int:
    requeued = 0
    for job in store().runnable(time.time()):
        probe = f"sweep:{worker_id()}"
        if store().lock(job.customer_id, probe, 1):  # the stack is free: nobody is running it
            store().unlock(job.customer_id, probe)
            run_job(job.event_id)
            requeued += 1
    return requeued
