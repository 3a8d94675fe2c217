"""Jobs per second through the provisioner, and each event's time from webhook to finished job, with
a stand-in stack runner that does no work, on SQLite and on Redis, with 1 and 4 worker processes.

Real `serve` and `worker` processes, a real Redis server and the lab's emulation of Hetzner's API
(which each signup's placement reads) are started and stopped by PID.

    python -m bench.provisioner_throughput [--jobs 200] [--repeat 3]
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
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import spread, table, write_section
from provisioner.runner import Log
from provisioner.settings import ProvisionerSettings
from provisioner.webhook import sign
from tests.provisioner.events import signup

REPO = Path(__file__).resolve().parent.parent
# Throwaway credentials of a benchmark run on loopback.
SECRET = "whsec_bench_0123456789abcdef"  # noqa: S105
TOKEN = "bench-token-0123456789abcdef"  # noqa: S105
HETZNER_TOKEN = "bench" + "0" * 59


class NoopRunner:
    """A StackRunner that does nothing, so the figures are the queue's own."""

    def __init__(self, settings: ProvisionerSettings) -> None:
        self.settings = settings

    def up(self, project: str, customer_id: str, config: Mapping[str, str], log: Log) -> dict[str, Any]:
        return {}

    def deploy(
        self, project: str, customer_id: str, config: Mapping[str, str], log: Log, *, refresh: bool = False
    ) -> dict[str, Any]:
        return {}

    def destroy(self, project: str, customer_id: str, log: Log) -> None:
        return None

    def remove(self, project: str, customer_id: str, log: Log) -> None:
        return None

    def redacted_state(self, project: str, customer_id: str, log: Log) -> dict[str, Any]:
        return {"version": 3, "deployment": {}}

    def clear_stale_lock(self, project: str, customer_id: str, log: Log, clis: Collection[str]) -> list[str]:
        return []


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait(check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise TimeoutError("the provisioner did not finish in time")


@contextmanager
def _processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for process in started:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _request(url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> dict[str, Any]:
    request = urllib.request.Request(url, data=body, headers=headers or {}, method="POST" if body else "GET")  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (our local server)
        result: dict[str, Any] = json.loads(response.read())
        return result


def _run(queue_url: str, hetzner: str, workers: int, jobs: int, directory: Path) -> tuple[float, float, list[float]]:
    """(intake seconds, seconds from the first event to the last finished job, each event's seconds
    from its webhook to its finished job)."""
    bind, private = f"127.0.0.1:{_port()}", f"127.0.0.1:{_port()}"
    env = {
        **os.environ,
        "CLAW_WEBHOOK_SECRET": SECRET,
        "CLAW_OPERATOR_TOKEN": TOKEN,
        "CLAW_QUEUE_URL": queue_url,
        "CLAW_STATE_DIR": str(directory / "state"),
        "CLAW_PLATFORM": json.dumps({"provisioner_cidrs": ["203.0.113.0/28"]}),
        "CLAW_PUBLIC_BIND": bind,
        "CLAW_PRIVATE_BIND": private,
        "CLAW_RUNNER": "bench.provisioner_throughput:NoopRunner",
        # A worker starts only with its Hetzner project's token; the runner above never uses it, each
        # signup's placement reads the emulator's availability with it.
        "HCLOUD_TOKEN": HETZNER_TOKEN,
        "HCLOUD_ENDPOINT": hetzner,
        # The queue's own overhead: each job's share of the Hetzner budget is the least there is, so no
        # job waits for it (bench.hetzner_requests measures what operations really ask of Hetzner).
        "CLAW_HETZNER_REQUESTS_PER_OPERATION": "1",
        "PYTHONPATH": str(REPO),
    }
    with _processes() as processes:
        for role in (["serve"], ["worker", "--workers", str(workers)]):
            with (directory / f"{role[0]}.log").open("ab") as log:
                processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "provisioner", *role],
                        env=env,
                        cwd=REPO,
                        stdout=log,
                        stderr=log,
                        start_new_session=True,
                    )
                )
        host, port = bind.rsplit(":", 1)
        _wait(lambda: socket.socket().connect_ex((host, int(port))) == 0, 20)
        time.sleep(1)  # let the workers start polling
        started = time.monotonic()
        posted: dict[str, float] = {}
        for index in range(jobs):
            event_id = f"evt_bench{index:06d}"
            body = signup(f"bench-{index:06d}", event_id)
            headers = {"Stripe-Signature": sign(body, SECRET, int(time.time())), "Content-Type": "application/json"}
            posted[event_id] = time.time()
            _request(f"http://{bind}/webhooks/billing", body, headers)
        intake = time.monotonic() - started
        listed: list[dict[str, Any]] = []

        def finished() -> bool:
            listed[:] = _request(f"http://{private}/jobs", headers={"Authorization": f"Bearer {TOKEN}"})["jobs"]
            return sum(job["status"] == "ready" for job in listed) == jobs

        _wait(finished, 300)
        total = time.monotonic() - started
        # The job history's "done" time is the worker's clock: the same machine's as `posted`.
        latency = [
            next(entry["at"] for entry in job["history"] if entry["event"] == "done") - posted[job["event_id"]]
            for job in listed
        ]
        return intake, total, latency


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.provisioner_throughput")
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    redis_binary = shutil.which("redis-server")
    if redis_binary is None:
        parser.error("needs redis-server")
    rows = []
    with tempfile.TemporaryDirectory() as temporary, _processes() as services:
        directory = Path(temporary)
        redis_port = _port()
        command = [redis_binary, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--dir", temporary]
        services.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, start_new_session=True))
        _wait(lambda: socket.socket().connect_ex(("127.0.0.1", redis_port)) == 0, 20)
        hetzner_port = _port()
        emulator = [sys.executable, "-m", "lab.hcloud_api", "--state", str(directory / "hetzner")]
        emulator += ["--listen", f"127.0.0.1:{hetzner_port}", "--token", f"default={HETZNER_TOKEN}"]
        services.append(subprocess.Popen([*emulator, "--rate-limit", "1000000"], cwd=REPO, start_new_session=True))
        _wait(lambda: socket.socket().connect_ex(("127.0.0.1", hetzner_port)) == 0, 20)
        hetzner = f"http://127.0.0.1:{hetzner_port}/v1"
        for backend in ("sqlite", "redis"):
            for workers in (1, 4):
                intake, total, p50, p95 = [], [], [], []
                for run in range(args.repeat):
                    if backend == "sqlite":
                        queue_url = f"sqlite:///{directory / f'queue-{workers}-{run}.sqlite3'}"
                    else:
                        subprocess.run(
                            ["redis-cli", "-p", str(redis_port), "flushall"], check=True, capture_output=True
                        )
                        queue_url = f"redis://127.0.0.1:{redis_port}/0"
                    seconds_in, seconds_all, latency = _run(queue_url, hetzner, workers, args.jobs, directory)
                    intake.append(args.jobs / seconds_in)
                    total.append(args.jobs / seconds_all)
                    cuts = statistics.quantiles(latency, n=20)
                    p50.append(cuts[9] * 1000)
                    p95.append(cuts[18] * 1000)
                rows.append(
                    [
                        backend,
                        str(workers),
                        spread(intake, " /s", 0),
                        spread(total, " /s", 1),
                        spread(p50, " ms", 0),
                        spread(p95, " ms", 0),
                    ]
                )
    body = (
        f"{args.jobs} signed signup events posted one after another to a real `serve` (Starlette on uvicorn), "
        f"run by real `worker` processes with a runner that does no work (each signup placed on a read of the "
        f"lab's emulated Hetzner API); {args.repeat} runs each, median "
        "[min, max]. Webhook to done: from posting an event to its job's `done` entry (p50 and p95 over the "
        "events of a run; the events queue up behind each other, so this grows with the batch). Real stacks "
        "take minutes each, so in production the queue is never the bottleneck; this measures its overhead.\n\n"
        + table(
            ["backend", "workers", "webhooks accepted", "jobs finished (end to end)", "webhook to done p50", "p95"],
            rows,
        )
    )
    print(write_section("Provisioner throughput", body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
