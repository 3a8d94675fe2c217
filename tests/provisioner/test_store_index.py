"""What the job store keeps beside the job records, on SQLite and a real Redis: each customer's newest
completed provision and billing job, the unfinished jobs and the metrics' counters, so that a stack's
settings, whether it exists, the metrics and the sweep cost the same whatever the number of records;
and the pruning of old ones. Billing's jobs are accepted as billing accepts them (`billing.accept`)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import pytest

from provisioner import billing
from provisioner.service import _StoreCollector
from provisioner.store import (
    ATTEMPT_BUCKETS,
    INDEX_KEY,
    OUTCOMES,
    STATES,
    Claim,
    Job,
    JobStore,
    KeyValue,
    Kind,
    Reader,
    Write,
    key_value,
)
from tests.provisioner.conftest import RedisServer

LEASE = 30.0


def _job(customer: str, created: int, kind: Kind = "provision", image: str = "gateway:1") -> Job:
    settings = {"clawhosters:customer_id": customer, "clawhosters:gateway_image": image}
    return Job(
        event_id=f"evt_{customer}{created}",
        kind=kind,
        customer_id=customer,
        created=created,
        config=settings if kind == "provision" else {},
    )


def _accept(store: JobStore, job: Job, status: billing.Status = "active") -> str:
    """Deliver the billing event `job` stands for (its customer's one subscription, in `status`, with
    the job's settings; a deprovision is the subscription's end): billing's outcome."""
    ended = job.kind == "deprovision"
    event = billing.SubscriptionEvent(
        event_id=job.event_id,
        type="customer.subscription.deleted" if ended else "customer.subscription.updated",
        created=job.created,
        stripe_customer=f"cus_{job.customer_id}",
        subscription=f"sub_{job.customer_id}",
        subscription_created=1,
        status="canceled" if ended else status,
        customer_id=job.customer_id,
        config=job.config,
        plan=None,
    )
    return billing.accept(store, event, grace_seconds=0, now=time.time())[0]


def _run(store: JobStore, job: Job, outcome: str = "done", seconds: float = 3.0) -> Job:
    """Accept the job and run one attempt of it to `outcome`, as a worker records it."""
    if job.kind == "deploy":
        store.accept_stack_job(job)
    else:
        assert _accept(store, job) == "accepted"
    assert store.lock(job.customer_id, "worker", LEASE)
    try:
        claim = store.claim(job.event_id, "worker", LEASE, time.time())
        assert isinstance(claim, Claim)
        ran = claim.job
        ran.state = "done" if outcome == "done" else "failed" if outcome == "failed" else "queued"
        ran.note(outcome, attempt=ran.attempts, seconds=seconds)
        assert store.update(ran, "worker", LEASE, operation_ended=True)
        return ran
    finally:
        store.unlock(job.customer_id, "worker")


@dataclass
class CountingKeyValue:
    """A store's keys, counting how many a caller reads."""

    kv: KeyValue
    read: int = 0
    listed: list[str] = field(default_factory=list)

    def get(self, key: str) -> str | None:
        self.read += 1
        return self.kv.get(key)

    def keys(self, prefix: str) -> list[str]:
        self.listed.append(prefix)
        return self.kv.keys(prefix)

    def many(self, keys: list[str]) -> list[str | None]:
        self.read += len(keys)
        return self.kv.many(keys)

    def transact(self, change: object, fence: object = None) -> bool:
        return self.kv.transact(change, fence)  # type: ignore[arg-type]

    def acquire(self, key: str, owner: str, seconds: float) -> bool:
        return self.kv.acquire(key, owner, seconds)

    def release(self, key: str, owner: str) -> None:
        self.kv.release(key, owner)

    def ping(self) -> None:
        self.kv.ping()


@pytest.fixture(params=["sqlite", "redis"])
def queue_url(request: pytest.FixtureRequest, tmp_path: object) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/queue.sqlite3"
    import redis

    server: RedisServer = request.getfixturevalue("redis_server")
    redis.Redis.from_url(server.url).flushall()
    return server.url + "/0"


def test_a_stacks_settings_and_the_metrics_cost_the_same_however_many_records(queue_url: str) -> None:
    counting = CountingKeyValue(key_value(queue_url))
    store = JobStore(counting)
    for index in range(100):
        customer = f"c{index:03d}"
        _run(store, _job(customer, 1000), "failed")
        _run(store, _job(customer, 1001, image="gateway:2"))
        _run(store, _job(customer, 1002, kind="deploy"))
    counting.read, counting.listed = 0, []
    last = store.last_provisioned("c042")
    assert last is not None and last.config["clawhosters:gateway_image"] == "gateway:2"
    assert (counting.read, counting.listed) == (2, []), "a pointer and the record it names"
    counting.read = 0
    assert store.stack_exists("c042")
    assert (counting.read, counting.listed) == (2, []), "a pointer and the record it names"

    counting.read = 0
    families = {family.name: family for family in _StoreCollector(store, lambda: 0).collect()}
    assert counting.read <= len(STATES) + len(OUTCOMES) * (len(ATTEMPT_BUCKETS) + 2), "a fixed set of counters"
    assert counting.listed == []
    jobs = {sample.labels["state"]: sample.value for sample in families["claw_jobs"].samples}
    assert (jobs["done"], jobs["failed"]) == (200, 100)


def _expected_counters(store: JobStore) -> dict[str, float]:
    """The counters computed from the job records themselves."""
    expected: Counter[str] = Counter({f"metric:jobs:{state}": 0 for state in STATES})
    for job in store.jobs():
        expected[f"metric:jobs:{job.state}"] += 1
        for entry in job.history:
            if entry.event in OUTCOMES and entry.seconds is not None:
                prefix = f"metric:attempts:{entry.event}:"
                for bound in ATTEMPT_BUCKETS:
                    expected[f"{prefix}{bound}"] += entry.seconds <= bound
                expected[prefix + "count"] += 1
                expected[prefix + "sum"] += entry.seconds
    return {name: value for name, value in expected.items() if value}


def test_the_counters_and_the_newest_provision_follow_every_write(queue_url: str) -> None:
    store = JobStore(key_value(queue_url))
    _run(store, _job("acme", 1000), seconds=0.5)
    _run(store, _job("acme", 1001, image="gateway:2"), seconds=40)
    _run(store, _job("acme", 1002, image="gateway:3"), "failed", seconds=7)
    _run(store, _job("acme", 1003, kind="deploy"), "will retry", seconds=2000)
    assert _accept(store, _job("globex", 1000)) == "accepted"
    assert _accept(store, _job("globex", 1001, image="gateway:2")) == "accepted"  # supersedes the queued one
    assert _accept(store, _job("acme", 999)) == "stale", "older than acme's newest"
    assert _accept(store, _job("acme", 1004, image="gateway:3"), "past_due") == "noted", "kept as it is"
    _run(store, _job("initech", 1000))
    _run(store, _job("initech", 1001, kind="deprovision"))
    last = store.last_provisioned("acme")
    assert last is not None and last.config["clawhosters:gateway_image"] == "gateway:2", "the failed one never ran"
    assert store.last_provisioned("globex") is None
    assert [store.stack_exists(customer) for customer in ("acme", "globex", "initech")] == [True, False, False]
    actual = {name: value for name, value in store.counters().items() if value}
    assert actual == pytest.approx(_expected_counters(store))
    assert (actual["metric:jobs:stale"], actual["metric:jobs:noted"]) == (1, 1)
    assert sorted(job.event_id for job in store.runnable(time.time() + 10_000)) == [
        "evt_acme1003",
        "evt_globex1001",
    ]


def test_a_store_written_before_the_index_gains_it_once(queue_url: str) -> None:
    raw = key_value(queue_url)
    writer = JobStore(raw)
    for customer in ("acme", "globex", "initech"):
        _run(writer, _job(customer, 1000), seconds=12)
        _run(writer, _job(customer, 1001, image="gateway:2"), seconds=20)
    _run(writer, _job("wayne", 1000))
    _run(writer, _job("wayne", 1001, kind="deprovision"))
    assert _accept(writer, _job("initech", 1002, kind="deprovision")) == "accepted"
    assert _accept(writer, _job("umbrella", 1000)) == "accepted"
    records = {key: raw.get(key) for key in raw.keys("job:")}

    # The same records as an earlier version left them: nothing beside them.
    def forget(read: Reader) -> dict[str, Write]:
        prefixes = ("open:", "provisioned:", "completed:", "metric:", INDEX_KEY)
        derived = [key for prefix in prefixes for key in raw.keys(prefix)]
        return dict.fromkeys(derived)

    raw.transact(forget)
    store = JobStore(raw)
    assert store.deployable() == [] and store.counters()["metric:jobs:done"] == 0
    assert not store.stack_exists("acme")
    assert store.build_index()
    assert not store.build_index(), "built once"
    assert {key: raw.get(key) for key in raw.keys("job:")} == records, "the records themselves are untouched"
    assert store.deployable() == ["acme", "globex"], "initech cancelled, umbrella never ran, wayne gone"
    stacks = [store.stack_exists(customer) for customer in ("acme", "initech", "umbrella", "wayne")]
    assert stacks == [True, True, False, False], "initech's decommission has not run yet"
    last = store.last_provisioned("acme")
    assert last is not None and last.config["clawhosters:gateway_image"] == "gateway:2"
    assert [job.customer_id for job in store.runnable(time.time())] == ["initech", "umbrella"]
    assert {name: value for name, value in store.counters().items() if value} == pytest.approx(
        _expected_counters(store)
    )


def test_pruning_deletes_old_finished_records_but_none_a_pointer_names(queue_url: str) -> None:
    store = JobStore(key_value(queue_url))
    _run(store, _job("acme", 1000))
    _run(store, _job("acme", 1001, image="gateway:2"), "failed")
    _run(store, _job("acme", 1002, kind="deploy"))
    _run(store, _job("acme", 1003, kind="deploy"))
    assert _accept(store, _job("acme", 1004, image="gateway:2"), "past_due") == "noted"
    _run(store, _job("globex", 1000))
    assert _accept(store, _job("globex", 1001, kind="deprovision")) == "accepted"  # queued: never pruned
    assert store.prune(before=time.time() - 3600) == 0, "nothing is old enough"
    assert store.prune(before=time.time() + 1) == 2, "acme's first deploy and the noted event"
    assert sorted(job.event_id for job in store.jobs()) == [
        "evt_acme1000",  # acme's newest completed provision: its settings
        "evt_acme1001",  # acme's newest billing event: what orders later ones
        "evt_acme1003",  # acme's newest deploy
        "evt_globex1000",
        "evt_globex1001",
    ]
    assert store.counters()["metric:jobs:done"] == 3, "the pruned deploy no longer counts"
    assert store.counters()["metric:attempts:done:count"] == 4, "the attempts it made still do"
