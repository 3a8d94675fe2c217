"""Real services for the provisioner's tests: a Redis server, the lab's emulation of Hetzner's API
(which a signup's placement reads), and the provisioner's own serve and worker processes, all started
here and stopped by PID."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from provisioner.sessions import members, session_of
from provisioner.store import JobStore, key_value
from provisioner.webhook import sign
from tests.conftest import PROJECT_READ_TOKEN, PROJECT_TOKEN
from tests.hcloud_api.conftest import Emulator
from tests.provisioner.standin import backend_dir

REPO = Path(__file__).resolve().parents[2]
SECRET = "whsec_test_0123456789abcdef"
TOKEN = "operator-token-0123456789"
REVIEW_TOKEN = "review-token-0123456789"
PLATFORM = json.dumps({"firewall_mode": "shared", "shared_firewall_id": 4242, "provisioner_cidrs": ["203.0.113.0/28"]})
# The workers' Hetzner project (on the session's emulator, tests/conftest.py `hetzner_api`).
PROJECTS = json.dumps([{"name": "default", "token_env": "HCLOUD_TOKEN", "read_token_env": "HCLOUD_READ_TOKEN"}])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(what: str, check: Any, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class RedisServer:
    """A real redis-server with an append-only file, as the README tells operators to run it."""

    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server must be installed (setup.sh installs it)"
        arguments = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--dir", str(self.directory)]
        self.process = subprocess.Popen(
            [binary, *arguments, "--appendonly", "yes", "--appendfsync", "always"], stdout=subprocess.DEVNULL
        )
        wait_for("redis", lambda: _connects(self.port))

    def stop(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _connects(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def sold_out(hetzner: Emulator, *pairs: tuple[str, str]) -> Iterator[None]:
    """Hetzner out of these (server type, location) pairs until the block ends."""
    stock = [{"server_type": server_type, "location": location} for server_type, location in pairs]
    assert requests.put(f"{hetzner.url}/_lab/stock", json={"sold_out": stock}, timeout=10).status_code == 200
    try:
        yield
    finally:
        requests.put(f"{hetzner.url}/_lab/stock", json={"sold_out": []}, timeout=10).raise_for_status()


@dataclass
class Provisioner:
    """One provisioner deployment: its environment, its processes, and a client for its API."""

    env: dict[str, str]
    records: Path
    backend: str
    redis: RedisServer | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """The public listener's: the billing webhook and a health check."""
        return f"http://{self.env['CLAW_PUBLIC_BIND']}"

    @property
    def private_url(self) -> str:
        """The private listener's: the operator and review API, readiness and metrics."""
        return f"http://{self.env['CLAW_PRIVATE_BIND']}"

    def start(self, role: str, *arguments: str) -> None:
        with (self.records.parent / f"{role}.log").open("ab") as log:
            self.processes[role] = subprocess.Popen(
                [sys.executable, "-m", "provisioner", role, *arguments],
                env=self.env,
                cwd=REPO,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )

    def kill(self, role: str) -> None:
        """SIGKILL to every process of the role, as when its host dies: its own, its worker processes',
        and their operations' (each worker process leads a session of its own, provisioner.sessions)."""
        process = self.processes.pop(role)
        tree = [process.pid, *(child.pid for child in psutil.Process(process.pid).children(recursive=True))]
        for leader in [pid for pid in tree if session_of(pid) == pid]:
            for member in [leader, *members(leader)]:
                with suppress(ProcessLookupError):
                    os.kill(member, signal.SIGKILL)
        process.wait(timeout=20)

    @property
    def logs(self) -> str:
        return "".join(path.read_text() for path in self.records.parent.glob("*.log"))

    def cli(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "provisioner", *arguments],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
        )

    def post(
        self, body: bytes, signature: str | None = "sign", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(f"{self.url}/webhooks/billing", data=body, method="POST")
        if signature == "sign":
            signature = sign(body, SECRET, int(time.time()))
        if signature is not None:
            request.add_header("Stripe-Signature", signature)
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        return _call(request)

    def get(self, path: str, token: str | None = TOKEN) -> tuple[int, dict[str, Any]]:
        return self.call("GET", path, None, token)

    def call(
        self, method: str, path: str, body: bytes | None = None, token: str | None = TOKEN
    ) -> tuple[int, dict[str, Any]]:
        """The operator API."""
        request = urllib.request.Request(f"{self.private_url}{path}", data=body, method=method)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        return _call(request)

    def status(self, customer_id: str) -> str | None:
        code, body = self.get(f"/customers/{customer_id}")
        return body.get("status") if code == 200 else None

    def job(self, event_id: str) -> dict[str, Any]:
        code, body = self.get("/jobs")
        assert code == 200
        return next(job for job in body["jobs"] if job["event_id"] == event_id)


def _call(request: urllib.request.Request) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def deploy(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    backend: str,
    platform: str = PLATFORM,
    settings: dict[str, str] | None = None,
) -> Provisioner:
    """A provisioner on `backend` with its serve process running (workers are started by the test);
    `settings` are more of its variables."""
    server: RedisServer | None = None
    if backend == "redis":
        server = request.getfixturevalue("redis_server")
        import redis

        redis.Redis.from_url(server.url).flushall()
        queue_url = server.url + "/0"
    else:
        queue_url = f"sqlite:///{tmp_path / 'queue.sqlite3'}"
    hetzner: Emulator = request.getfixturevalue("hetzner_api")
    records = tmp_path / "records"
    backend_dir(records).mkdir(parents=True)
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("CLAW_")},
        "CLAW_WEBHOOK_SECRET": SECRET,
        "CLAW_OPERATOR_TOKEN": TOKEN,
        "CLAW_REVIEW_TOKEN": REVIEW_TOKEN,
        "CLAW_QUEUE_URL": queue_url,
        "CLAW_STATE_DIR": str(tmp_path / "state"),
        "CLAW_PLATFORM": platform,
        "CLAW_PUBLIC_BIND": f"127.0.0.1:{free_port()}",
        "CLAW_PRIVATE_BIND": f"127.0.0.1:{free_port()}",
        # The real AutomationRunner, driving the stand-in pulumi CLI (tests/provisioner/bin/pulumi); a
        # deploy's health gate asks the stand-in's hosts (tests/provisioner/hosts.py).
        "CLAW_PULUMI_BINARY": str(Path(__file__).parent / "bin" / "pulumi"),
        "CLAW_RUNNER": "tests.provisioner.hosts:RunnerWithStandInHosts",
        "CLAW_STANDIN_PYTHON": sys.executable,
        "CLAW_LEASE_SECONDS": "2",
        "CLAW_CANCEL_SECONDS": "0.5",
        "CLAW_KILL_GRACE_SECONDS": "0.3",
        "CLAW_PULUMI_BACKEND_URL": f"file://{backend_dir(records)}",
        "CLAW_STOP_GRACE_SECONDS": "0.5",
        "CLAW_RETRY_BASE_SECONDS": "0.2",
        "CLAW_MAX_ATTEMPTS": "2",
        "CLAW_CANCELLATION_GRACE_SECONDS": "2",
        "CLAW_STANDIN_DIR": str(records),
        # A worker needs its Hetzner projects' tokens; the stand-in CLI never calls Hetzner, a signup's
        # placement reads the emulator's availability with the read-only one.
        "CLAW_HETZNER_PROJECTS": PROJECTS,
        "HCLOUD_TOKEN": PROJECT_TOKEN,
        "HCLOUD_READ_TOKEN": PROJECT_READ_TOKEN,
        "HCLOUD_ENDPOINT": f"{hetzner.url}/v1",
        "PYTHONPATH": str(REPO),
        **(settings or {}),
    }
    deployment = Provisioner(env, records, backend, server)
    deployment.start("serve")
    for listener in ("CLAW_PUBLIC_BIND", "CLAW_PRIVATE_BIND"):
        wait_for(listener, lambda listener=listener: _connects(int(env[listener].rsplit(":", 1)[1])))
    return deployment


@contextmanager
def running(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    backend: str,
    platform: str = PLATFORM,
    settings: dict[str, str] | None = None,
) -> Iterator[Provisioner]:
    """A deployment for one test, stopped afterwards whatever the test did."""
    deployment = deploy(request, tmp_path, backend, platform, settings)
    try:
        yield deployment
    finally:
        _stop(deployment)


def _stop(deployment: Provisioner) -> None:
    for role in list(deployment.processes):
        deployment.kill(role)
    if (
        deployment.redis is not None
        and deployment.redis.process is not None
        and deployment.redis.process.poll() is not None
    ):
        deployment.redis.start()  # a test that stopped Redis leaves it running for the next


@pytest.fixture(params=["sqlite", "redis"])
def provisioner(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Provisioner]:
    with running(request, tmp_path, request.param) as deployment:
        yield deployment


@pytest.fixture
def sqlite_provisioner(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Provisioner]:
    """For behaviour that does not depend on the store (the sequence of stack operations)."""
    with running(request, tmp_path, "sqlite") as deployment:
        yield deployment


@pytest.fixture
def redis_provisioner(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Provisioner]:
    """For what only Redis can show here: the queue's server going away."""
    with running(request, tmp_path, "redis") as deployment:
        yield deployment


@pytest.fixture(params=["sqlite", "redis"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[JobStore, JobStore]]:
    """Two workers' views of one store."""
    if request.param == "redis":
        import redis

        server: RedisServer = request.getfixturevalue("redis_server")
        redis.Redis.from_url(server.url).flushall()
        url = server.url + "/0"
    else:
        url = f"sqlite:///{tmp_path / 'queue.sqlite3'}"
    yield JobStore(key_value(url)), JobStore(key_value(url))
