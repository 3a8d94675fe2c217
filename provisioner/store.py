"""The durable record of accepted events and their jobs, on SQLite or Redis (the queue's backend).

An event is stored before the webhook answers 2xx, so it is never lost. Jobs take a per-stack
lease while they run: one operation per customer stack at a time, and a worker that dies simply
stops renewing its lease, so another worker can take the job over after it expires.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

Kind = Literal["provision", "deprovision"]
State = Literal["queued", "running", "done", "failed", "cancelled"]


class Job(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: str
    kind: Kind
    customer_id: str
    # The stack config (`clawhosters:*` keys), already validated; empty for a deprovision.
    config: dict[str, str] = Field(default_factory=dict)
    state: State = "queued"
    attempts: int = 0
    run_after: float = 0
    last_error: str | None = None
    outputs: dict[str, Any] = Field(default_factory=dict)
    created: float = Field(default_factory=time.time)
    updated: float = Field(default_factory=time.time)

    @property
    def status(self) -> str:
        """What an operator sees for the customer."""
        if self.state == "done":
            return "ready" if self.kind == "provision" else "deprovisioned"
        if self.state == "running":
            return "provisioning" if self.kind == "provision" else "deprovisioning"
        return self.state


class KeyValue(Protocol):
    def add(self, key: str, value: str) -> bool: ...
    def get(self, key: str) -> str | None: ...
    def put(self, key: str, value: str) -> None: ...
    def keys(self, prefix: str) -> list[str]: ...
    def acquire(self, key: str, owner: str, seconds: float) -> bool: ...
    def release(self, key: str, owner: str) -> None: ...


class SqliteKeyValue:
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
        if getattr(self._local, "db", None) is None:
            self._local.db = sqlite3.connect(self._path, timeout=60, isolation_level=None)
        connection: sqlite3.Connection = self._local.db
        return connection

    def add(self, key: str, value: str) -> bool:
        cursor = self._connection().execute("INSERT OR IGNORE INTO claw_kv VALUES (?, ?)", (key, value))
        return cursor.rowcount == 1

    def get(self, key: str) -> str | None:
        row = self._connection().execute("SELECT value FROM claw_kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put(self, key: str, value: str) -> None:
        self._connection().execute("INSERT OR REPLACE INTO claw_kv VALUES (?, ?)", (key, value))

    def keys(self, prefix: str) -> list[str]:
        rows = self._connection().execute("SELECT key FROM claw_kv WHERE substr(key, 1, ?) = ?", (len(prefix), prefix))
        return [str(row[0]) for row in rows]

    def acquire(self, key: str, owner: str, seconds: float) -> bool:
        now = time.time()
        cursor = self._connection().execute(
            "INSERT INTO claw_locks VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE SET owner = excluded.owner, "
            "expires = excluded.expires WHERE claw_locks.owner = excluded.owner OR claw_locks.expires < ?",
            (key, owner, now + seconds, now),
        )
        return cursor.rowcount == 1

    def release(self, key: str, owner: str) -> None:
        self._connection().execute("DELETE FROM claw_locks WHERE key = ? AND owner = ?", (key, owner))


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

        self._redis = redis.Redis.from_url(url, decode_responses=True)
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._release = self._redis.register_script(_RELEASE)

    def add(self, key: str, value: str) -> bool:
        return bool(self._redis.set(key, value, nx=True))

    def get(self, key: str) -> str | None:
        value = self._redis.get(key)
        return None if value is None else str(value)

    def put(self, key: str, value: str) -> None:
        self._redis.set(key, value)

    def keys(self, prefix: str) -> list[str]:
        return [str(key) for key in self._redis.scan_iter(match=prefix + "*", count=500)]

    def acquire(self, key: str, owner: str, seconds: float) -> bool:
        return bool(self._acquire(keys=[key], args=[owner, int(seconds * 1000)]))

    def release(self, key: str, owner: str) -> None:
        self._release(keys=[key], args=[owner])


def key_value(queue_url: str) -> KeyValue:
    if queue_url.startswith("sqlite:///"):
        # Beside the queue's file, not in it: the job records and huey's queue are written by
        # different processes at different rates.
        queue = Path(queue_url.removeprefix("sqlite://"))
        return SqliteKeyValue(queue.with_name(queue.name + ".jobs"))
    return RedisKeyValue(queue_url)


class JobStore:
    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    def accept(self, job: Job) -> bool:
        """Store a new job for its event; False when the event was seen before (a redelivery)."""
        if not self.kv.add(f"job:{job.event_id}", job.model_dump_json()):
            return False
        pending = self.latest(job.customer_id)
        if job.kind == "provision" and pending and pending.kind == "deprovision" and pending.state == "queued":
            # The customer came back within the grace period: the stack stays.
            pending.state, pending.last_error = "cancelled", f"superseded by {job.event_id}"
            self.save(pending)
        self.kv.put(f"customer:{job.customer_id}", job.event_id)
        return True

    def get(self, event_id: str) -> Job | None:
        raw = self.kv.get(f"job:{event_id}")
        return None if raw is None else Job.model_validate_json(raw)

    def save(self, job: Job) -> None:
        job.updated = time.time()
        self.kv.put(f"job:{job.event_id}", job.model_dump_json())

    def jobs(self) -> list[Job]:
        found = [self.get(key.removeprefix("job:")) for key in self.kv.keys("job:")]
        return sorted((job for job in found if job is not None), key=lambda job: job.created)

    def latest(self, customer_id: str) -> Job | None:
        event_id = self.kv.get(f"customer:{customer_id}")
        return None if event_id is None else self.get(event_id)

    def lock(self, customer_id: str, owner: str, seconds: float) -> bool:
        """Take or renew the customer's stack lease."""
        return self.kv.acquire(f"lock:stack:{customer_id}", owner, seconds)

    def unlock(self, customer_id: str, owner: str) -> None:
        self.kv.release(f"lock:stack:{customer_id}", owner)

    def runnable(self, now: float) -> list[Job]:
        """Jobs that should be in the queue: not finished, and due."""
        return [job for job in self.jobs() if job.state in ("queued", "running") and job.run_after <= now]
