"""A fleet preview's cost to the control plane: the fleet's list and every stack's settings and project,
read from a real `serve` (its private listener) as `python -m fleet preview --settings-from-provisioner`
reads them, with a store holding the job histories of a fleet of customers (each: a signup, a plan
change and a deploy, all done), on SQLite and on Redis. Also a `/metrics` scrape.

    python -m bench.fleet_settings [--customers 5000] [--sample 5000]

`--sample N` reads the settings of the first N stacks only and projects the whole fleet's time from
them (for a store whose reads are slow).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import SecretStr

from bench.common import spread, table, write_section
from fleet.control import Provisioner
from provisioner.store import HistoryEntry, Job, JobStore, key_value

REPO = Path(__file__).resolve().parent.parent
# Throwaway credentials of a benchmark run on loopback.
SECRET = "whsec_bench_0123456789abcdef"  # noqa: S105
TOKEN = "bench-token-0123456789abcdef"  # noqa: S105
IMAGE = "ghcr.io/openclaw/gateway:1.4.2@sha256:" + "ab" * 32
BATCH = 250


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def _process(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as output:
        process = subprocess.Popen(command, env=env, cwd=REPO, stdout=output, stderr=output, start_new_session=True)
    try:
        yield process
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _wait(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not come up")


def _done(job: Job, now: float, seconds: float) -> Job:
    """The job as a worker leaves it after one successful attempt."""
    worker = "bench:1:0"
    job.state, job.attempts, job.project, job.worker = "done", 1, "default", worker
    job.history = [
        HistoryEntry(at=now, event="accepted"),
        HistoryEntry(at=now, event="started", attempt=1, worker=worker),
        HistoryEntry(at=now + seconds, event="done", attempt=1, worker=worker, seconds=seconds),
    ]
    return job


def _customer_jobs(index: int, now: float) -> list[Job]:
    """One customer's history: a signup, a plan change, a rollout's deploy; each done."""
    customer = f"bench-{index:06d}"
    settings = {"clawhosters:customer_id": customer, "clawhosters:gateway_image": IMAGE}
    signup, change = (
        Job(
            event_id=f"evt_b{index:06d}{suffix}",
            kind="provision",
            customer_id=customer,
            created=created,
            config={**settings, "clawhosters:server_type": server_type},
        )
        for suffix, created, server_type in (("a", 1_700_000_000, "cx23"), ("b", 1_700_000_100, "cx33"))
    )
    deploy = Job(event_id=f"deploy-r1-{customer}", kind="deploy", customer_id=customer, created=1_700_000_200)
    return [_done(signup, now, 28.0), _done(change, now, 9.0), _done(deploy, now, 6.0)]


def _seed(queue_url: str, customers: int) -> int:
    """The customers' job records and pointers, written as the provisioner's own runs leave them."""
    store = JobStore(key_value(queue_url))
    now, records = time.time(), 0
    for start in range(0, customers, BATCH):
        writes: dict[str, str | None] = {}
        for index in range(start, min(start + BATCH, customers)):
            jobs = _customer_jobs(index, now)
            writes.update({f"job:{job.event_id}": job.model_dump_json() for job in jobs})
            writes[f"customer:{jobs[1].customer_id}"] = jobs[1].event_id
            writes[f"deploy:{jobs[2].customer_id}"] = jobs[2].event_id
            records += len(jobs)
        store.kv.transact(lambda _read, writes=writes: writes)  # type: ignore[misc]
    return records


def _measure(queue_url: str, customers: int, sample: int, directory: Path) -> list[str]:
    records = _seed(queue_url, customers)
    public, private = _port(), _port()
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("CLAW_")},
        "CLAW_WEBHOOK_SECRET": SECRET,
        "CLAW_OPERATOR_TOKEN": TOKEN,
        "CLAW_REVIEW_TOKEN": TOKEN[::-1],
        "CLAW_QUEUE_URL": queue_url,
        "CLAW_STATE_DIR": str(directory / "state"),
        "CLAW_PLATFORM": json.dumps({"provisioner_cidrs": ["203.0.113.0/28"]}),
        "CLAW_PUBLIC_BIND": f"127.0.0.1:{public}",
        "CLAW_PRIVATE_BIND": f"127.0.0.1:{private}",
        "PYTHONPATH": str(REPO),
    }
    command = [sys.executable, "-m", "provisioner", "serve"]
    with _process(command, env, directory / "serve.log"):
        _wait("serve", lambda: _listening(private), 600)  # a store without its index gains it first
        reader = Provisioner(url=f"http://127.0.0.1:{private}", token=SecretStr(TOKEN[::-1]), unavailable_seconds=5)
        started = time.monotonic()
        stacks = reader.stacks()
        listing = time.monotonic() - started
        assert len(stacks) == customers, f"the fleet has {len(stacks)} stacks, not {customers}"
        per_stack = []
        for stack in stacks[:sample]:
            started = time.monotonic()
            reader.settings(stack)
            reader.project(stack)  # the preview's read token is its project's (CLAW_HETZNER_READ_TOKENS)
            per_stack.append(time.monotonic() - started)
        scrapes = []
        for _ in range(5):
            started = time.monotonic()
            with urllib.request.urlopen(f"http://127.0.0.1:{private}/metrics", timeout=600) as response:
                response.read()
            scrapes.append(time.monotonic() - started)
    whole = listing + statistics.mean(per_stack) * customers
    return [
        queue_url.split(":", 1)[0],
        f"{customers:,} ({records:,} records)",
        f"{listing:.2f} s",
        spread([value * 1000 for value in per_stack], " ms", 1),
        f"{whole:.0f} s" + ("" if sample >= customers else f" (projected from {sample})"),
        spread([value * 1000 for value in scrapes], " ms", 1),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet_settings")
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--sample", type=int, default=5000, help="stacks whose settings are read")
    args = parser.parse_args(argv)
    redis_binary = shutil.which("redis-server")
    if redis_binary is None:
        parser.error("needs redis-server")
    sample = min(args.sample, args.customers)
    rows = []
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        rows.append(_measure(f"sqlite:///{directory / 'queue.sqlite3'}", args.customers, sample, directory))
        port = _port()
        redis = [redis_binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", temporary]
        with _process(redis, dict(os.environ), directory / "redis.log"):
            _wait("redis", lambda: _listening(port), 20)
            rows.append(_measure(f"redis://127.0.0.1:{port}/0", args.customers, sample, directory))
    body = (
        f"A fleet preview's reads from the provisioner (`fleet preview --settings-from-provisioner` with "
        f"each project's read token): `GET /stacks`, then for each stack `GET /stacks/<stack>/settings` "
        f"twice (its config, its project), over HTTP from one client to a real `serve`, whose store holds "
        f"{args.customers:,} customers' job histories (a signup, a plan change and a deploy each, all "
        "done). Per stack: median [min, max] of the stack's two reads. Whole preview: the list plus the "
        "mean per stack times the fleet. `/metrics`: 5 scrapes.\n\n"
        + table(
            ["backend", "customers", "GET /stacks", "one stack's settings", "whole preview's reads", "/metrics"],
            rows,
        )
    )
    print(write_section("Fleet preview: the control plane's reads", body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
