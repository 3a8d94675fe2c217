"""The durable record of accepted events and their jobs, on SQLite or Redis (the queue's backend).

An event is stored before the webhook answers 2xx, so it is never lost. Every change that reads
before it writes is one transaction (SQLite `BEGIN IMMEDIATE`, Redis `WATCH`/`MULTI`). Per
customer, the newest billing job wins (what the customer's subscriptions say the instance must
become, `provisioner.billing`, which also keeps `billing:<customer>`): it supersedes a queued older
one, and one that is no longer the newest when a worker picks it up never runs. A deploy (a
rollout's step for one stack) is ordered apart from billing's events: it waits while the customer's
newest event is still to run, a newer deploy of the stack supersedes it, and a cancellation ends it.
A scheduled snapshot of the stack is ordered the same way, apart from deploys.

Jobs take a per-stack lease while they run, and every write a running job makes is fenced by it:
it commits only while no other worker holds the lease. `holder:<customer>` names the operation that
is running on the stack; it is cleared only when that operation's CLI exited on its own and left no
lock, so the next worker to take the stack knows when it has to clear a stale stack lock first.

Every write of a job record also keeps, in the same transaction, what would otherwise need a read of
every record: each customer's newest completed provision (`provisioned:<customer>`, the settings a
deploy runs with and the fleet preview reads) and newest completed billing job
(`completed:<customer>`, whether the stack exists, so billing's change of it goes through the gated
deploy), the unfinished jobs (`open:<event id>`, what the sweep looks at) and the metrics' counters
(`metric:*`, changed by increments, so writers never conflict on them). Finished records are pruned
after the retention period, never one a pointer names.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import threading
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

# provision and deprovision come from billing; a deploy re-applies the customer's last provisioned
# settings with the workers' program (a rollout's per-stack step); a snapshot is the platform's own
# daily snapshot of the customer's server (`platform:backups` mode "snapshots", provisioner/snapshots.py).
Kind = Literal["provision", "deprovision", "deploy", "snapshot"]
BILLING_KINDS: tuple[Kind, ...] = ("provision", "deprovision")
# noted: a billing event that changes nothing for the instance (provisioner.billing); it never runs.
State = Literal["queued", "running", "done", "failed", "superseded", "stale", "noted"]
STATES: tuple[State, ...] = ("queued", "running", "done", "failed", "superseded", "stale", "noted")
FINISHED: tuple[State, ...] = ("done", "failed", "superseded", "stale", "noted")
# How an attempt at a stack operation ended (its history entry), and the metrics' latency buckets.
OUTCOMES = ("done", "will retry", "failed", "cancelled")
ATTEMPT_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
# Written once the index and the counters below exist for every record (JobStore.build_index).
INDEX_KEY, INDEX_VERSION = "index:version", "1"


class HistoryEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    at: float
    event: str
    attempt: int | None = None
    worker: str | None = None
    detail: str | None = None
    seconds: float | None = None


class Job(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: str
    kind: Kind
    customer_id: str
    # When the billing provider created the event. A billing job accepted after one with a later time
    # gets a second more than that one: a customer's jobs are ordered as they were accepted.
    created: int
    # The customer's stack config (`clawhosters:*` keys), already validated; empty for a deprovision
    # and a deploy (which runs the settings of the customer's last completed provision).
    config: dict[str, str] = Field(default_factory=dict)
    state: State = "queued"
    attempts: int = 0
    run_after: float = 0
    last_error: str | None = None
    outputs: dict[str, Any] = Field(default_factory=dict)
    worker: str | None = None
    # A deploy: the program commit the rollout is of, which the worker must be running.
    commit: str | None = None
    # A deploy that repairs drift: the stack's state is refreshed from the cloud before its preview.
    refresh: bool = False
    # The Hetzner project the customer's servers live in, once a worker has run the job.
    project: str | None = None
    # A provision: the plan the customer's subscription selects (CLAW_PLANS), which places a new server
    # and whose change resizes a running one (provisioner/placement.py); None (a job stored before
    # plans): the default plan.
    plan: str | None = None
    received: float = Field(default_factory=time.time)
    updated: float = Field(default_factory=time.time)
    history: list[HistoryEntry] = Field(default_factory=list)

    @property
    def order(self) -> tuple[int, str]:
        return (self.created, self.event_id)

    @property
    def status(self) -> str:
        """What an operator sees for the customer."""
        if self.state in ("done", "running"):
            return _STATUS[self.kind][self.state == "running"]
        return self.state

    def note(self, event: str, **fields: Any) -> None:
        self.updated = time.time()
        self.history.append(HistoryEntry(at=self.updated, event=event, **fields))


# (done, running) by kind.
_STATUS = {
    "provision": ("ready", "provisioning"),
    "deprovision": ("deprovisioned", "deprovisioning"),
    "deploy": ("deployed", "deploying"),
    "snapshot": ("snapshotted", "snapshotting"),
}


class Placement(BaseModel):
    """Where a customer's server is: its location chosen once, when the customer is first placed, and
    kept until a cancellation has removed the server, whatever Hetzner's stock or the plans do later;
    its type changed only by a change of plan (provisioner/placement.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    server_type: str
    location: str
    # The plan it was chosen for (a customer provisioned before placements were recorded: the plan it
    # was first recorded under, its type and location kept).
    plan: str
    # The server's disk: its first type's, kept by every resize (a resize never shrinks a disk).
    disk_gb: int = Field(ge=1)
    at: float


class Holder(BaseModel):
    """The operation running on a stack, until its CLI has exited on its own."""

    worker: str
    event_id: str
    started: float
    # Each CLI the operation started, as `host:pid`: how a stack lock names its holder.
    clis: list[str] = Field(default_factory=list)


@dataclass(frozen=True)
class DeployRefused:
    """Why a stack cannot be deployed or snapshotted: no such customer, or one that has cancelled."""

    reason: str
    unknown: bool = False


class StoreUnavailable(RuntimeError):
    """The store (SQLite file or Redis) cannot be reached or stays busy."""


@dataclass(frozen=True)
class Add:
    """A counter's change, applied by the store without reading the counter: concurrent transactions
    that count never conflict over it."""

    amount: float


Reader = Callable[[str], str | None]
Write = str | Add | None
# A transaction body: reads what it needs, returns the writes (None deletes a key) or None to abort.
Change = Callable[[Reader], dict[str, Write] | None]


@dataclass(frozen=True)
class Fence:
    """Commit only while no other worker holds `lock`; the commit renews it for `owner`."""

    lock: str
    owner: str
    seconds: float


class KeyValue(Protocol):
    def get(self, key: str) -> str | None: ...
    def keys(self, prefix: str) -> list[str]: ...
    def many(self, keys: list[str]) -> list[str | None]: ...
    def transact(self, change: Change, fence: Fence | None = None) -> bool: ...
    def acquire(self, key: str, owner: str, seconds: float) -> bool: ...
    def release(self, key: str, owner: str) -> None: ...
    def ping(self) -> None: ...


class SqliteKeyValue:
    # Long enough to ride out another process's write, short enough that an outage shows.
    BUSY_SECONDS = 10
    # Keys per SELECT of `many` (SQLite's limit on parameters is 32,766 since 3.32, 999 before).
    MANY_BATCH = 500

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._local = threading.local()
        for _ in range(100):  # the same WAL switch race as the queue's file (see jobs.make_huey)
            try:
                self._initialise()
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error):
                    raise
                time.sleep(0.05)
        raise RuntimeError(f"{path} stayed locked")

    def _initialise(self) -> None:
        db = self._connection()
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE IF NOT EXISTS claw_kv (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("CREATE TABLE IF NOT EXISTS claw_locks (key TEXT PRIMARY KEY, owner TEXT, expires REAL)")

    def _connection(self) -> sqlite3.Connection:
        # One connection per thread and per process: a connection must never cross a fork.
        pid = os.getpid()
        if getattr(self._local, "pid", None) != pid:
            self._local.db = sqlite3.connect(self._path, timeout=self.BUSY_SECONDS, isolation_level=None)
            self._local.db.execute("PRAGMA synchronous=FULL")
            self._local.pid = pid
        connection: sqlite3.Connection = self._local.db
        return connection

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as error:
            raise StoreUnavailable(f"sqlite: {error}") from error

    def get(self, key: str) -> str | None:
        with self._errors():
            row = self._connection().execute("SELECT value FROM claw_kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def keys(self, prefix: str) -> list[str]:
        # A range on the primary key: the index finds the prefix's keys without reading the others.
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        with self._errors():
            rows = self._connection().execute("SELECT key FROM claw_kv WHERE key >= ? AND key < ?", (prefix, upper))
            return [str(row[0]) for row in rows]

    def many(self, keys: list[str]) -> list[str | None]:
        found: dict[str, str] = {}
        with self._errors():
            for start in range(0, len(keys), self.MANY_BATCH):
                batch = keys[start : start + self.MANY_BATCH]
                marks = ",".join("?" * len(batch))
                rows = self._connection().execute(f"SELECT key, value FROM claw_kv WHERE key IN ({marks})", batch)  # noqa: S608 (placeholders only)
                found.update((str(key), str(value)) for key, value in rows)
        return [found.get(key) for key in keys]

    def transact(self, change: Change, fence: Fence | None = None) -> bool:
        with self._errors():
            db = self._connection()
            db.execute("BEGIN IMMEDIATE")
            try:
                now = time.time()
                if fence is not None:
                    row = db.execute("SELECT owner, expires FROM claw_locks WHERE key = ?", (fence.lock,)).fetchone()
                    if row is not None and row[0] != fence.owner and row[1] >= now:
                        db.execute("ROLLBACK")
                        return False
                writes = change(lambda key: self._read(db, key))
                if writes is None:
                    db.execute("ROLLBACK")
                    return False
                for key, value in writes.items():
                    if value is None:
                        db.execute("DELETE FROM claw_kv WHERE key = ?", (key,))
                    elif isinstance(value, Add):
                        db.execute(
                            "INSERT INTO claw_kv VALUES (?, ?) "
                            "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS REAL) + excluded.value",
                            (key, value.amount),
                        )
                    else:
                        db.execute("INSERT OR REPLACE INTO claw_kv VALUES (?, ?)", (key, value))
                if fence is not None:
                    db.execute(
                        "INSERT OR REPLACE INTO claw_locks VALUES (?, ?, ?)",
                        (fence.lock, fence.owner, now + fence.seconds),
                    )
                db.execute("COMMIT")
                return True
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    @staticmethod
    def _read(db: sqlite3.Connection, key: str) -> str | None:
        row = db.execute("SELECT value FROM claw_kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def acquire(self, key: str, owner: str, seconds: float) -> bool:
        now = time.time()
        with self._errors():
            cursor = self._connection().execute(
                "INSERT INTO claw_locks VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE SET owner = excluded.owner, "
                "expires = excluded.expires WHERE claw_locks.owner = excluded.owner OR claw_locks.expires < ?",
                (key, owner, now + seconds, now),
            )
        return cursor.rowcount == 1

    def release(self, key: str, owner: str) -> None:
        with self._errors():
            self._connection().execute("DELETE FROM claw_locks WHERE key = ? AND owner = ?", (key, owner))

    def ping(self) -> None:
        with self._errors():
            self._connection().execute("SELECT count(*) FROM claw_locks").fetchone()


_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisKeyValue:
    def __init__(self, url: str) -> None:
        import redis

        # Bounded waits: an outage must show as an error, never as a call that hangs.
        self._redis = redis.Redis.from_url(url, decode_responses=True, socket_timeout=5, socket_connect_timeout=2)
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._release = self._redis.register_script(_RELEASE)
        self._errors_type: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError)
        self._watch_error = redis.WatchError

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except self._errors_type as error:
            raise StoreUnavailable(f"redis: {error}") from error

    def get(self, key: str) -> str | None:
        with self._errors():
            value = self._redis.get(key)
        return None if value is None else str(value)

    def keys(self, prefix: str) -> list[str]:
        with self._errors():
            return [str(key) for key in self._redis.scan_iter(match=prefix + "*", count=500)]

    def many(self, keys: list[str]) -> list[str | None]:
        if not keys:
            return []
        with self._errors():
            return [None if value is None else str(value) for value in self._redis.mget(keys)]

    def transact(self, change: Change, fence: Fence | None = None) -> bool:
        with self._errors():
            for _ in range(200):
                with self._redis.pipeline() as pipe:
                    try:
                        if fence is not None:
                            pipe.watch(fence.lock)
                            holder = pipe.get(fence.lock)
                            if holder is not None and holder != fence.owner:
                                return False

                        def read(key: str, pipe: Any = pipe) -> str | None:
                            pipe.watch(key)
                            value = pipe.get(key)
                            return None if value is None else str(value)

                        writes = change(read)
                        if writes is None:
                            return False
                        pipe.multi()
                        for key, value in writes.items():
                            if value is None:
                                pipe.delete(key)
                            elif isinstance(value, Add):
                                pipe.incrbyfloat(key, value.amount)
                            else:
                                pipe.set(key, value)
                        if fence is not None:
                            pipe.set(fence.lock, fence.owner, px=int(fence.seconds * 1000))
                        pipe.execute()
                        return True
                    except self._watch_error:
                        continue  # another writer changed a key we read: read again
        raise StoreUnavailable("redis: a transaction kept conflicting")

    def acquire(self, key: str, owner: str, seconds: float) -> bool:
        with self._errors():
            return bool(self._acquire(keys=[key], args=[owner, int(seconds * 1000)]))

    def release(self, key: str, owner: str) -> None:
        with self._errors():
            self._release(keys=[key], args=[owner])

    def ping(self) -> None:
        with self._errors():
            self._redis.ping()


def key_value(queue_url: str) -> KeyValue:
    if queue_url.startswith("sqlite:///"):
        # Beside the queue's file, not in it: the job records and huey's queue are written by
        # different processes at different rates.
        queue = Path(queue_url.removeprefix("sqlite://"))
        return SqliteKeyValue(queue.with_name(queue.name + ".jobs"))
    return RedisKeyValue(queue_url)


def _job(raw: str | Add | None) -> Job | None:
    return Job.model_validate_json(raw) if isinstance(raw, str) else None


def _counted(old: Job | None, new: Job | None) -> dict[str, float]:
    """How a job record's write changes the metrics' counters: jobs by state, and the attempts it adds
    to its history (duration buckets, count, sum)."""
    changes: dict[str, float] = defaultdict(float)
    if old is not None:
        changes[f"metric:jobs:{old.state}"] -= 1
    if new is not None:
        changes[f"metric:jobs:{new.state}"] += 1
        for entry in new.history[len(old.history) if old is not None else 0 :]:
            if entry.event in OUTCOMES and entry.seconds is not None:
                prefix = f"metric:attempts:{entry.event}:"
                for bound in ATTEMPT_BUCKETS:
                    if entry.seconds <= bound:
                        changes[f"{prefix}{bound}"] += 1
                changes[prefix + "count"] += 1
                changes[prefix + "sum"] += entry.seconds
    return changes


def _is_open(job: Job | None) -> bool:
    return job is not None and job.state not in FINISHED


def _settles(job: Job | None) -> tuple[str, ...]:
    """The pointers a completed billing job competes for, each held by the customer's newest by order:
    `completed` (whether the stack exists), and for a provision `provisioned` (its settings)."""
    if job is None or job.state != "done" or job.kind not in BILLING_KINDS:
        return ()
    return ("completed", "provisioned") if job.kind == "provision" else ("completed",)


class IndexedKeyValue:
    """The store's keys, where every write of a job record also keeps, in its transaction, the index and
    the counters derived from it (see the module's docstring)."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv
        self.get, self.keys, self.many, self.ping = kv.get, kv.keys, kv.many, kv.ping
        self.acquire, self.release = kv.acquire, kv.release

    def transact(self, change: Change, fence: Fence | None = None) -> bool:
        def indexed(read: Reader) -> dict[str, Write] | None:
            writes = change(read)
            if not writes:
                return writes
            derived: dict[str, Write] = {}
            counts: dict[str, float] = defaultdict(float)
            for key, value in writes.items():
                if key.startswith("job:"):
                    old, new = _job(read(key)), _job(value)
                    for counter, amount in _counted(old, new).items():
                        counts[counter] += amount
                    derived.update(self._pointers(read, old, new))
            derived.update({counter: Add(amount) for counter, amount in counts.items() if amount})
            return {**writes, **derived}

        return self._kv.transact(indexed, fence)

    @staticmethod
    def _pointers(read: Reader, old: Job | None, new: Job | None) -> dict[str, Write]:
        writes: dict[str, Write] = {}
        job = new or old
        assert job is not None
        if _is_open(new) != _is_open(old):
            writes[f"open:{job.event_id}"] = "1" if _is_open(new) else None
        for name in _settles(new):
            key = f"{name}:{job.customer_id}"
            pointer = read(key)
            current = _job(read(f"job:{pointer}")) if pointer else None
            if current is None or current.order <= job.order:
                writes[key] = job.event_id
        return writes


DeployOutcome = Literal["accepted", "duplicate"]
# While the customer's billing event is still to run, a deploy waits for it this long between tries.
DEPLOY_WAIT_SECONDS = 5.0


@dataclass(frozen=True)
class Claim:
    job: Job
    # The operation that last ran on this stack and did not end cleanly (its CLI may have left a lock).
    previous: Holder | None


class JobStore:
    def __init__(self, kv: KeyValue) -> None:
        self.kv: KeyValue = IndexedKeyValue(kv)

    def build_index(self) -> bool:
        """Derive the index and the counters from every job record, once per store, so that a store an
        earlier version wrote gains them; True when this call built them. Every process calls it before
        its first write (processes of an earlier version, which do not keep the index, must be stopped)."""
        if self.kv.get(INDEX_KEY) == INDEX_VERSION:
            return False
        counts: dict[str, float] = dict.fromkeys(self.kv.keys("metric:"), 0.0)
        writes: dict[str, Write] = dict.fromkeys(
            self.kv.keys("open:") + self.kv.keys("provisioned:") + self.kv.keys("completed:")
        )
        newest: dict[str, Job] = {}  # by pointer
        for job in self.jobs():
            for counter, amount in _counted(None, job).items():
                counts[counter] = counts.get(counter, 0.0) + amount
            if _is_open(job):
                writes[f"open:{job.event_id}"] = "1"
            for key in (f"{name}:{job.customer_id}" for name in _settles(job)):
                if key not in newest or newest[key].order < job.order:
                    newest[key] = job
        writes.update({key: job.event_id for key, job in newest.items()})
        writes.update({counter: str(amount) for counter, amount in counts.items()})
        writes[INDEX_KEY] = INDEX_VERSION
        return self.kv.transact(lambda read: None if read(INDEX_KEY) == INDEX_VERSION else writes)

    def counters(self) -> dict[str, float]:
        """The metrics' counters (`metric:*`, see IndexedKeyValue), absent ones as 0."""
        names = [f"metric:jobs:{state}" for state in STATES] + [
            f"metric:attempts:{outcome}:{part}" for outcome in OUTCOMES for part in (*ATTEMPT_BUCKETS, "count", "sum")
        ]
        return {name: float(value or 0) for name, value in zip(names, self.kv.many(names), strict=True)}

    @staticmethod
    def _lock(customer_id: str) -> str:
        return f"lock:stack:{customer_id}"

    def newest_billing_job(self, read: Reader, customer_id: str) -> Job | None:
        """The customer's newest billing job, read inside a transaction."""
        return self._read_job(read, read(f"customer:{customer_id}"))

    @staticmethod
    def make_newest(latest: Job | None, job: Job) -> dict[str, Write]:
        """The writes that store `job` as its customer's newest billing job, superseding `latest` if it
        has not started (part of the transaction that read `latest`)."""
        writes: dict[str, Write] = {f"customer:{job.customer_id}": job.event_id}
        if latest is not None and latest.state == "queued":
            latest.state = "superseded"
            latest.note("superseded", detail=f"by {job.event_id}")
            writes[f"job:{latest.event_id}"] = latest.model_dump_json()
        writes[f"job:{job.event_id}"] = job.model_dump_json()
        return writes

    def accept_stack_job(self, job: Job) -> tuple[DeployOutcome, Job] | DeployRefused:
        """Store a deploy or a snapshot of a customer's stack; the reason when there is no stack (then
        nothing changes). A newer job of the same kind supersedes a queued older one (its pointer is
        `<kind>:<customer>`); neither touches the customer's billing events."""
        result: list[tuple[DeployOutcome, Job] | DeployRefused] = []

        def change(read: Reader) -> dict[str, Write] | None:
            result.clear()
            existing = read(f"job:{job.event_id}")
            if existing is not None:
                result.append(("duplicate", Job.model_validate_json(existing)))
                return None
            latest = self._read_job(read, read(f"customer:{job.customer_id}"))
            if latest is None:
                result.append(DeployRefused(f"unknown customer {job.customer_id}", unknown=True))
                return None
            if latest.kind == "deprovision":
                result.append(DeployRefused(f"customer {job.customer_id} has cancelled ({latest.event_id})"))
                return None
            fresh = job.model_copy(deep=True)
            fresh.note("accepted")
            writes: dict[str, Write] = {}
            earlier = self._read_job(read, read(f"{job.kind}:{job.customer_id}"))
            if earlier is not None and earlier.state == "queued":
                earlier.state = "superseded"
                earlier.note("superseded", detail=f"by {fresh.event_id}")
                writes[f"job:{earlier.event_id}"] = earlier.model_dump_json()
                # A drift repair still to run is not undone by the newer deploy: that one repairs too.
                fresh.refresh = fresh.refresh or earlier.refresh
            writes[f"job:{fresh.event_id}"] = fresh.model_dump_json()
            writes[f"{job.kind}:{job.customer_id}"] = fresh.event_id
            result.append(("accepted", fresh))
            return writes

        self.kv.transact(change)
        return result[0]

    @staticmethod
    def _read_job(read: Reader, event_id: str | None) -> Job | None:
        raw = read(f"job:{event_id}") if event_id else None
        return Job.model_validate_json(raw) if raw else None

    def get(self, event_id: str) -> Job | None:
        raw = self.kv.get(f"job:{event_id}")
        return None if raw is None else Job.model_validate_json(raw)

    def jobs(self) -> list[Job]:
        keys = self.kv.keys("job:")
        found = [Job.model_validate_json(raw) for raw in self.kv.many(keys) if raw is not None]
        return sorted(found, key=lambda job: job.received)

    def latest(self, customer_id: str) -> Job | None:
        event_id = self.kv.get(f"customer:{customer_id}")
        return None if event_id is None else self.get(event_id)

    def last_provisioned(self, customer_id: str) -> Job | None:
        """The newest provision that completed: the settings the customer's stack last had."""
        return self._read_job(self.kv.get, self.kv.get(f"provisioned:{customer_id}"))

    def keep_redacted_state(self, customer_id: str, export: Mapping[str, Any] | None) -> None:
        """Keep the customer's stack state with every secret replaced (fleet.redact), as the worker
        left it after an operation, for a pull request's preview; None forgets it (the stack is gone).
        Compressed: a state is tens of kilobytes of JSON."""
        packed = None if export is None else base64.b64encode(zlib.compress(json.dumps(export).encode())).decode()
        self.kv.transact(lambda _read: {f"redacted:{customer_id}": packed})

    def redacted_state(self, customer_id: str) -> dict[str, Any] | None:
        packed = self.kv.get(f"redacted:{customer_id}")
        return None if packed is None else dict(json.loads(zlib.decompress(base64.b64decode(packed))))

    def stack_exists(self, customer_id: str) -> bool:
        """Whether the customer's newest completed billing job is a provision (a completed decommission
        removes the stack): a change to it then goes through the gated deploy."""
        completed = self._read_job(self.kv.get, self.kv.get(f"completed:{customer_id}"))
        return completed is not None and completed.kind == "provision"

    def placement(self, customer_id: str) -> Placement | None:
        raw = self.kv.get(f"placement:{customer_id}")
        return None if raw is None else Placement.model_validate_json(raw)

    def record_placement(
        self, customer_id: str, placement: Placement, owner: str, seconds: float, *, over: Placement | None = None
    ) -> Placement | None:
        """Record where the customer's server is, in place of `over` (None: where nothing is recorded
        yet). Returns the placement recorded afterwards: `placement`, or the one found when it was not
        `over` (nothing is written then); None when another worker holds the stack."""
        recorded: list[Placement | None] = []

        def change(read: Reader) -> dict[str, str | None] | None:
            recorded.clear()
            raw = read(f"placement:{customer_id}")
            existing = None if raw is None else Placement.model_validate_json(raw)
            if existing != over:
                recorded.append(existing)
                return None
            recorded.append(placement)
            return {f"placement:{customer_id}": placement.model_dump_json()}

        # The fence is checked before `change` reads anything: nothing recorded means fenced out.
        self.kv.transact(change, Fence(self._lock(customer_id), owner, seconds))
        return recorded[0] if recorded else None

    def release_placement(self, customer_id: str, owner: str, seconds: float) -> bool:
        """Forget the placement once the customer's server is gone: a new signup is placed afresh."""
        return self.kv.transact(
            lambda _read: {f"placement:{customer_id}": None}, Fence(self._lock(customer_id), owner, seconds)
        )

    def deployable(self) -> list[str]:
        """Every customer with a completed provision whose newest event is not a cancellation, sorted:
        the fleet's stacks."""
        customers = [key.removeprefix("provisioned:") for key in self.kv.keys("provisioned:")]
        newest_ids = self.kv.many([f"customer:{customer}" for customer in customers])
        newest = self.kv.many([f"job:{event_id}" for event_id in newest_ids])
        return sorted(
            customer
            for customer, raw in zip(customers, newest, strict=True)
            if (latest := _job(raw)) is not None and latest.kind != "deprovision"
        )

    def project_of(self, customer_id: str, projects: list[str]) -> str:
        """The Hetzner project the customer's servers live in: assigned once, to the project with the
        fewest customers so far, and kept (a server cannot move between projects)."""
        chosen: list[str] = []

        def change(read: Reader) -> dict[str, Write] | None:
            chosen.clear()
            assigned = read(f"project:{customer_id}")
            if assigned is not None:
                chosen.append(assigned)
                return None
            counts = {name: int(read(f"project-customers:{name}") or 0) for name in projects}
            least = min(projects, key=lambda name: (counts[name], projects.index(name)))
            chosen.append(least)
            return {f"project:{customer_id}": least, f"project-customers:{least}": str(counts[least] + 1)}

        self.kv.transact(change)
        return chosen[0]

    def take_requests(self, project: str, requests: int, per_hour: int, now: float) -> float:
        """Spend `requests` of the project's hourly budget, shared by every worker: 0 when granted, else
        the seconds until the budget has them (nothing is spent then). A token bucket as Hetzner's own:
        full at `per_hour`, refilling at `per_hour` an hour."""
        wait: list[float] = []
        refill = per_hour / 3600

        def change(read: Reader) -> dict[str, Write] | None:
            wait.clear()
            raw = read(f"budget:{project}")
            tokens, updated = (float(part) for part in raw.split()) if raw else (float(per_hour), now)
            tokens = min(float(per_hour), tokens + max(0.0, now - updated) * refill)
            if tokens < requests:
                wait.append((requests - tokens) / refill)
                return None
            wait.append(0.0)
            return {f"budget:{project}": f"{tokens - requests} {now}"}

        self.kv.transact(change)
        return wait[0]

    def lock(self, customer_id: str, owner: str, seconds: float) -> bool:
        """Take or renew the customer's stack lease."""
        return self.kv.acquire(self._lock(customer_id), owner, seconds)

    def unlock(self, customer_id: str, owner: str) -> None:
        self.kv.release(self._lock(customer_id), owner)

    def claim(self, event_id: str, owner: str, seconds: float, now: float) -> Claim | float | None:
        """Start a job under its stack lease (taken by the caller): the Claim, None when the job must not
        run (finished, superseded, not the customer's newest), or the seconds until it is due."""
        outcome: list[Claim | float | None] = []

        def change(read: Reader) -> dict[str, Write] | None:
            outcome.clear()
            raw = read(f"job:{event_id}")
            job = Job.model_validate_json(raw) if raw else None
            if job is None or job.state in FINISHED:
                outcome.append(None)
                return None
            superseded_by = self._newer_than(read, job)
            if superseded_by is not None:
                job.state = "superseded"
                job.note("superseded", detail=superseded_by)
                outcome.append(None)
                return {f"job:{event_id}": job.model_dump_json()}
            if job.kind not in BILLING_KINDS:
                billing = self._read_job(read, read(f"customer:{job.customer_id}"))
                if billing is not None and billing.state not in FINISHED:
                    # The customer's own change goes first; a deploy or snapshot runs on what it left.
                    outcome.append(DEPLOY_WAIT_SECONDS)
                    return None
            if job.run_after > now:
                outcome.append(job.run_after - now)
                return None
            holder_raw = read(f"holder:{job.customer_id}")
            previous = Holder.model_validate_json(holder_raw) if holder_raw else None
            writes: dict[str, Write] = {}
            if previous is not None and previous.event_id != event_id:
                earlier_raw = read(f"job:{previous.event_id}")
                earlier = Job.model_validate_json(earlier_raw) if earlier_raw else None
                if earlier is not None and earlier.state == "running":
                    earlier.state = "superseded"
                    earlier.note(
                        "interrupted", worker=previous.worker, detail=f"its worker is gone; {event_id} is newer"
                    )
                    writes[f"job:{earlier.event_id}"] = earlier.model_dump_json()
            job.state, job.attempts, job.worker = "running", job.attempts + 1, owner
            job.note("started", attempt=job.attempts, worker=owner)
            writes[f"job:{event_id}"] = job.model_dump_json()
            # Until the stack is cleared, a lock any earlier CLI left may still be there: they stay named.
            earlier_clis = previous.clis if previous is not None else []
            holder = Holder(worker=owner, event_id=event_id, started=now, clis=earlier_clis)
            writes[f"holder:{job.customer_id}"] = holder.model_dump_json()
            outcome.append(Claim(job, previous))
            return writes

        customer = self._customer_of(event_id)
        if customer is None:
            return None
        if not self.kv.transact(change, Fence(self._lock(customer), owner, seconds)):
            return outcome[0] if outcome else None
        return outcome[0]

    def _newer_than(self, read: Reader, job: Job) -> str | None:
        """Why `job` must not run any more, if something newer replaced it."""
        if job.kind in BILLING_KINDS:
            if read(f"customer:{job.customer_id}") != job.event_id:
                return "a newer event for this customer arrived"
            return None
        if read(f"{job.kind}:{job.customer_id}") != job.event_id:
            return f"a newer {job.kind} of this stack arrived"
        billing = self._read_job(read, read(f"customer:{job.customer_id}"))
        if billing is not None and billing.kind == "deprovision":
            return f"the customer cancelled ({billing.event_id})"
        return None

    def _customer_of(self, event_id: str) -> str | None:
        job = self.get(event_id)
        return None if job is None else job.customer_id

    def note_cli(self, customer_id: str, owner: str, seconds: float, cli: str) -> bool:
        """Name a CLI process of the operation running on the stack (`host:pid`), fenced by its lease:
        a stack lock that names it is the operation's own. False when the worker holds the stack no more."""

        def change(read: Reader) -> dict[str, str | None] | None:
            raw = read(f"holder:{customer_id}")
            holder = Holder.model_validate_json(raw) if raw else None
            if holder is None or holder.worker != owner:
                return None
            holder.clis.append(cli)
            return {f"holder:{customer_id}": holder.model_dump_json()}

        return self.kv.transact(change, Fence(self._lock(customer_id), owner, seconds))

    def update(self, job: Job, owner: str, seconds: float, *, operation_ended: bool) -> bool:
        """Write a running job's progress, fenced by its stack lease; `operation_ended` says the CLI
        exited on its own and left no lock, so the stack holds no lock of ours any more."""

        def change(read: Reader) -> dict[str, Write]:
            writes: dict[str, Write] = {f"job:{job.event_id}": job.model_dump_json()}
            if operation_ended:
                holder = read(f"holder:{job.customer_id}")
                if holder is not None and Holder.model_validate_json(holder).worker == owner:
                    writes[f"holder:{job.customer_id}"] = None
            return writes

        return self.kv.transact(change, Fence(self._lock(job.customer_id), owner, seconds))

    def retry(self, event_id: str) -> str | None:
        """Queue a failed job again; the reason when it may not be (then nothing changes)."""
        refusal: list[str] = []

        def change(read: Reader) -> dict[str, Write] | None:
            refusal.clear()
            raw = read(f"job:{event_id}")
            job = Job.model_validate_json(raw) if raw else None
            if job is None or job.state != "failed":
                refusal.append(f"{event_id} is not a failed job")
                return None
            newer = self._newer_than(read, job)
            if newer is not None:
                refusal.append(f"{event_id} may not run again, it would undo what followed it: {newer}")
                return None
            job.state, job.attempts, job.run_after, job.last_error = "queued", 0, 0, None
            job.note("retried", detail="by an operator")
            return {f"job:{event_id}": job.model_dump_json()}

        self.kv.transact(change)
        return refusal[0] if refusal else None

    def defer(self, event_id: str, until: float) -> None:
        """Hold a queued job back until `until` (the sweep queues it again only once it is due)."""

        def change(read: Reader) -> dict[str, Write] | None:
            raw = read(f"job:{event_id}")
            job = Job.model_validate_json(raw) if raw else None
            if job is None or job.state != "queued" or job.run_after >= until:
                return None
            job.run_after = until
            return {f"job:{event_id}": job.model_dump_json()}

        self.kv.transact(change)

    def runnable(self, now: float) -> list[Job]:
        """Jobs that should be in the queue: not finished, and due; oldest first."""
        keys = [f"job:{key.removeprefix('open:')}" for key in self.kv.keys("open:")]
        found = [job for raw in self.kv.many(keys) if (job := _job(raw)) is not None]
        due = [job for job in found if job.state in ("queued", "running") and job.run_after <= now]
        return sorted(due, key=lambda job: job.received)

    def prune(self, before: float) -> int:
        """Delete the finished job records last changed before `before`, but never one that a customer's
        newest-event, newest-deploy, newest-snapshot, newest-provision or newest-completed pointer names:
        ordering, a redelivery's deduplication, the stack's settings and whether it exists rest on those.
        The number deleted."""
        pruned = 0
        for job in self.jobs():
            if job.state not in FINISHED or job.updated >= before:
                continue

            def change(read: Reader, event_id: str = job.event_id) -> dict[str, Write] | None:
                current = _job(read(f"job:{event_id}"))
                if current is None or current.state not in FINISHED or current.updated >= before:
                    return None
                pointers = ("customer", "deploy", "snapshot", "provisioned", "completed")
                if any(read(f"{pointer}:{current.customer_id}") == event_id for pointer in pointers):
                    return None
                return {f"job:{event_id}": None}

            pruned += self.kv.transact(change)
        return pruned
