"""The platform's control plane in the lab, as production runs it on several machines.

On the provisioner's host: the provisioner's API (`serve`), Redis (jobs, leases, the queue) and an
S3-compatible object store holding the stacks' state (SeaweedFS, `lab/object_store.py`), as
Hetzner's Object Storage does in production. On each worker host (a namespace with a hostname of its
own): `provisioner worker`, which drives the real CLI and providers against the lab's Hetzner and
reaches the servers over SSH. Billing's events arrive signed, as Stripe sends them, from the lab's
internet (the client's host) at the public listener. The operator and review API is the private
listener, on the provisioner host's loopback: the fleet tooling (a rollout, a preview, the drift audit)
runs on that host, as a self-hosted runner on the platform's private network would, so plain HTTP is
allowed there.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import toolchain
from fleet import sandbox
from lab.netns import connect_from, relay
from lab.object_store import REGION, Identity, ObjectStore
from lab.topology import CI_RUNNER, CLIENT, PROVISIONER, WORKER_HOSTS, Peer
from lab.world import HETZNER_PORT, HETZNER_PROJECT, HETZNER_PROJECTS, REPO, Lab, in_ns, run, wait_until
from provisioner.webhook import sign

REDIS_PORT = 6379
OBJECT_STORE_PORT = 9000
# The public listener (billing's webhook) and the private one (the operator and review API).
API_PORT = 8787
PRIVATE_API_PORT = 8788
PRIVATE_API_URL = f"http://127.0.0.1:{PRIVATE_API_PORT}"
# The user a pull request's program runs as on the workflow's runner (fleet.sandbox).
CONFINED_USER = "claw-preview"
BUCKET = "clawhosters-state"


class StoreKey(StrEnum):
    """The object store's keys: its own operator's, which makes the bucket; the platform hosts' (and an
    operator's `pulumi`), which read and write the state; a reader's (previews, the drift audit, the
    lab's own checks), which only reads it."""

    ADMIN = "admin"
    WORKERS = "workers"
    READER = "reader"


STORE_ACTIONS = {
    StoreKey.ADMIN: ("Admin",),
    StoreKey.WORKERS: (f"Read:{BUCKET}", f"Write:{BUCKET}", f"List:{BUCKET}"),
    StoreKey.READER: (f"Read:{BUCKET}", f"List:{BUCKET}"),
}


def _outside() -> dict[str, str]:
    """This process's environment without any of the platform's settings, tokens or state backend:
    where the workflows' jobs start from. The machine's Pulumi home, where the providers are
    installed, stays."""
    held_back = ("CLAW_", "HCLOUD_", "PULUMI_", "AWS_")
    return {key: value for key, value in os.environ.items() if key == "PULUMI_HOME" or not key.startswith(held_back)}


class _NamespacedConnection(http.client.HTTPConnection):
    """An HTTP connection made from inside a namespace: the lab's addresses are reachable only there."""

    def __init__(self, namespace: str, host: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.namespace = namespace

    def connect(self) -> None:
        self.sock = connect_from(self.namespace, self.host, self.port, self.timeout or 10)


def request(
    namespace: str, host: str, port: int, method: str, path: str, body: bytes | None = None, **headers: str
) -> tuple[int, bytes]:
    connection = _NamespacedConnection(namespace, host, port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@dataclass
class ControlPlane:
    lab: Lab
    # Short, so that a dead worker host's stack is taken over within a test's patience, and the
    # watchdog trips (at half the lease) well inside a lab signup, which takes under half a minute.
    lease_seconds: float = 12
    cancel_seconds: float = 5
    kill_grace_seconds: float = 0.5
    # Whether the pull-request runner's host is set up (`_ci_runner`).
    _runner_ready: bool = False

    @property
    def program_commit(self) -> str:
        """The commit the workers run (this checkout's), which a rollout names."""
        return run(["git", "-C", str(REPO), "rev-parse", "HEAD"]).stdout.strip()

    @property
    def backend_url(self) -> str:
        endpoint = f"http://{PROVISIONER.ipv4}:{OBJECT_STORE_PORT}"
        return f"s3://{BUCKET}?endpoint={endpoint}&region={REGION}&use_path_style=true"

    @property
    def webhook_secret(self) -> str:
        return self.lab.secret("webhook.secret", 32)

    @property
    def operator_token(self) -> str:
        return self.lab.secret("operator.token", 32)

    @property
    def review_token(self) -> str:
        return self.lab.secret("review.token", 32)

    @property
    def directory(self) -> Path:
        return self.lab.state_dir / "control-plane"

    def environment(self, host: Peer, projects: tuple[str, ...] = HETZNER_PROJECTS) -> dict[str, str]:
        """What a platform host's service unit sets: the provisioner's settings and the secrets."""
        platform = self.lab.default_settings().platform.model_dump(mode="json", exclude_defaults=True)
        return {
            **os.environ,
            "CLAW_WEBHOOK_SECRET": self.webhook_secret,
            "CLAW_OPERATOR_TOKEN": self.operator_token,
            "CLAW_REVIEW_TOKEN": self.review_token,
            "CLAW_PLATFORM": json.dumps(platform),
            "CLAW_QUEUE_URL": f"redis://{PROVISIONER.ipv4}:{REDIS_PORT}/0",
            "CLAW_STATE_DIR": str(self.directory / host.link),
            "CLAW_PUBLIC_BIND": f"{PROVISIONER.ipv4}:{API_PORT}",
            "CLAW_PRIVATE_BIND": f"127.0.0.1:{PRIVATE_API_PORT}",
            "CLAW_PULUMI_BACKEND_URL": self.backend_url,
            "CLAW_LEASE_SECONDS": str(self.lease_seconds),
            "CLAW_CANCEL_SECONDS": str(self.cancel_seconds),
            "CLAW_KILL_GRACE_SECONDS": str(self.kill_grace_seconds),
            "CLAW_CANCELLATION_GRACE_SECONDS": "0",
            "CLAW_RETRY_BASE_SECONDS": "5",
            "CLAW_PROGRAM_COMMIT": self.program_commit,
            # The fleet spans two of the lab cloud's projects, each with its own token and budget, and a
            # read-only token that a signup's placement reads Hetzner's availability with.
            "CLAW_HETZNER_PROJECTS": json.dumps(
                [
                    {"name": project, "token_env": _token_variable(project), "read_token_env": _read_variable(project)}
                    for project in projects
                ]
            ),
            **{_token_variable(project): self.lab.project_token(project) for project in HETZNER_PROJECTS},
            **{_read_variable(project): self.lab.project_read_token(project) for project in HETZNER_PROJECTS},
            # The emulator serves inside every platform host's namespace.
            "HCLOUD_ENDPOINT": f"http://127.0.0.1:{HETZNER_PORT}/v1",
            "PULUMI_CONFIG_PASSPHRASE": self.lab.passphrase,
            **self._object_store_credentials(StoreKey.WORKERS),
            # Only the workers write the customers' records.
            **({"CLAW_HETZNER_DNS_TOKEN": self.lab.dns_token} if host in WORKER_HOSTS else {}),
        }

    @property
    def object_store(self) -> ObjectStore:
        return ObjectStore(PROVISIONER.namespace, PROVISIONER.ipv4, OBJECT_STORE_PORT, self.directory / "object-store")

    def store_key(self, key: StoreKey) -> Identity:
        secret = self.lab.secret(f"object-store.{key}.secret", 40)
        return Identity(f"clawhosters-{key}", secret, STORE_ACTIONS[key])

    def _object_store_credentials(self, key: StoreKey) -> dict[str, str]:
        return {
            **self.store_key(key).environment(),
            # SeaweedFS, like many S3-compatible stores, sends no CRC checksum with some answers: the
            # CLI's S3 driver would warn on each.
            "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
        }

    def start(self) -> None:
        """Redis, the object store with the state bucket, and the provisioner's API."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._start_redis()
        store = self.object_store
        server = store.command({key.value: self.store_key(key) for key in StoreKey})
        self.lab.spawn("object-store", in_ns(PROVISIONER.namespace, *server), self.directory / "object-store.log")
        for name, port in (("Redis", REDIS_PORT), ("the object store", OBJECT_STORE_PORT)):
            wait_until(name, lambda port=port: _answers(PROVISIONER.ipv4, port), timeout=30)
        admin = store.client(self.store_key(StoreKey.ADMIN))
        store.call(lambda: admin.create_bucket(Bucket=BUCKET))
        workers = self.store_key(StoreKey.WORKERS)
        wait_until("the object store to take a write", lambda: store.accepts_writes(workers, BUCKET), timeout=60)
        self._provisioner("api", PROVISIONER, "serve")
        for address, port in ((PROVISIONER.ipv4, API_PORT), ("127.0.0.1", PRIVATE_API_PORT)):
            wait_until(f"the provisioner's {port}", lambda a=address, p=port: _answers(a, p), timeout=30)

    def _start_redis(self) -> None:
        # Every write on disk before it is answered: a Redis that dies loses no accepted event.
        redis = [
            "redis-server",
            *("--bind", PROVISIONER.ipv4, "--port", str(REDIS_PORT), "--protected-mode", "no"),
            *("--dir", str(self.directory), "--save", "", "--appendonly", "yes", "--appendfsync", "always"),
        ]
        self.lab.spawn("redis", in_ns(PROVISIONER.namespace, *redis), self.directory / "redis.log")

    @contextmanager
    def redis_down(self) -> Iterator[None]:
        """Redis killed (SIGKILL) and, when the block ends, started again on its append-only file."""
        redis = self.lab.pids["redis"]  # `ip netns exec` execs the server: the same process
        os.kill(redis, signal.SIGKILL)
        wait_until("Redis to stop", lambda: not _answers(PROVISIONER.ipv4, REDIS_PORT))
        try:
            yield
        finally:
            with suppress(ChildProcessError):
                os.waitpid(redis, 0)
            self._start_redis()
            wait_until("Redis", lambda: _answers(PROVISIONER.ipv4, REDIS_PORT), timeout=30)

    def start_worker(
        self,
        host: Peer,
        projects: tuple[str, ...] = HETZNER_PROJECTS,
        workers: int = 1,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        """`workers` worker processes on the host, spreading new customers over `projects`; `settings`
        are more of the provisioner's variables."""
        arguments = ("worker", "--workers", str(workers))
        self._provisioner(f"worker-{host.link}", host, *arguments, projects=projects, settings=settings)

    def _provisioner(
        self,
        name: str,
        host: Peer,
        *arguments: str,
        projects: tuple[str, ...] = HETZNER_PROJECTS,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        # A host of its own: its own network and hostname (the job history names the worker by it).
        command = in_ns(
            host.namespace,
            *("unshare", "--uts", "--", "sh", "-c", 'hostname "$0" && exec "$@"', host.link),
            *(sys.executable, "-m", "provisioner", *arguments),
        )
        environment = self.environment(host, projects) | dict(settings or {})
        self.lab.spawn(name, command, self.directory / f"{name}.log", env=environment)

    def start_rollout(self, state: Path, *arguments: str) -> None:
        """`python -m fleet rollout --provisioner --commit <the workers' commit>`, as the deploy workflow
        runs it."""
        command = in_ns(
            PROVISIONER.namespace,
            *(sys.executable, "-m", "fleet", "rollout", "--provisioner", "--commit", self.program_commit),
            *("--state", str(state), *arguments),
        )
        self.lab.spawn("rollout", command, self.directory / "rollout.log", env=self._operator())

    def up_stack(self, stack: str, *arguments: str) -> subprocess.CompletedProcess[str]:
        """An operator's `python -m fleet up --provisioner --commit <the workers' commit>` of one stack."""
        command = in_ns(
            PROVISIONER.namespace,
            *(sys.executable, "-m", "fleet", "up", "--provisioner", "--commit", self.program_commit),
            *("--stack", stack, *arguments),
        )
        return run(command, check=False, timeout=600, env=self._operator(), cwd=REPO)

    def _operator(self) -> dict[str, str]:
        """What the deploy workflow and an operator hold: the API's URL and the operator token, and no
        Hetzner token, state backend or passphrase."""
        return _outside() | {"CLAW_PROVISIONER_URL": PRIVATE_API_URL, "CLAW_OPERATOR_TOKEN": self.operator_token}

    def preview_fleet(self, program_dir: Path, out: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
        """`python -m fleet preview --settings-from-provisioner --confine`, as the pull-request workflow runs
        it on its runner (a host of its own, `CI_RUNNER`): the base branch's tooling, toolchain and pack
        judging `program_dir` (a copy the confined user can read, with its own virtualenv: see
        tests/lab/hostile.py), with the review token and the read-only Hetzner tokens only."""
        self._ci_runner()
        out.mkdir(parents=True, exist_ok=True)
        command = in_ns(
            CI_RUNNER.namespace,
            *(sys.executable, "-m", "fleet", "preview", "--settings-from-provisioner", "--confine", CONFINED_USER),
            *("--program-dir", str(program_dir), "--policy-pack", str(REPO / "policy")),
            *("--out", str(out / "fleet-preview.md"), "--full-report", str(out / "fleet-preview-full.md"), *arguments),
        )
        return run(command, check=False, timeout=1200, env=self._reviewer(), cwd=REPO)

    def _ci_runner(self) -> None:
        """The runner's host, once: the confined user, a tunnel to the private listener (as a runner
        joined to the private network has), and its packet filter. Here Hetzner's API and the tunnel
        listen on the runner's loopback, where a real runner reaches them over the network the filter
        refuses the confined user anyway: the lab refuses them by port."""
        if self._runner_ready:
            return
        if run(["id", "-u", CONFINED_USER], check=False).returncode != 0:
            run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", CONFINED_USER])
        relay(PRIVATE_API_PORT, CI_RUNNER.namespace, PROVISIONER.namespace)
        for rule in sandbox.packet_filter(CONFINED_USER):
            run(in_ns(CI_RUNNER.namespace, *rule))
        for port in (HETZNER_PORT, PRIVATE_API_PORT):
            refuse = ["-I", "OUTPUT", "1", "-m", "owner", "--uid-owner", CONFINED_USER, "-d", "127.0.0.1"]
            run(in_ns(CI_RUNNER.namespace, "iptables", *refuse, "-p", "tcp", "--dport", str(port), "-j", "REJECT"))
        self._runner_ready = True

    def audit_drift(self, out: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
        """`python -m drift --settings-from-provisioner --json <out>`, as a reader (`_reader`)."""
        command = in_ns(
            PROVISIONER.namespace,
            *(sys.executable, "-m", "drift", "--settings-from-provisioner"),
            *("--out", str(out.with_suffix(".md")), "--json", str(out), *arguments),
        )
        return run(command, check=False, timeout=600, env=self._reader(), cwd=REPO)

    def _reviewer(self) -> dict[str, str]:
        """What the pull-request workflow's preview job holds: the review token and each Hetzner project's
        read-only token; no passphrase, state backend or object-store key, no write or operator token."""
        read_tokens = {project: f"HCLOUD_READ_TOKEN_{index}" for index, project in enumerate(HETZNER_PROJECTS)}
        return _outside() | {
            "CLAW_PROVISIONER_URL": PRIVATE_API_URL,
            "CLAW_REVIEW_TOKEN": self.review_token,
            "CLAW_HETZNER_READ_TOKENS": json.dumps(read_tokens),
            **{variable: self.lab.project_read_token(project) for project, variable in read_tokens.items()},
            "HCLOUD_TOKEN": self.lab.project_read_token(HETZNER_PROJECT),
            "HCLOUD_ENDPOINT": f"http://127.0.0.1:{HETZNER_PORT}/v1",
        }

    def _reader(self) -> dict[str, str]:
        """What the drift audit holds: the reviewer's tokens, and the state backend with its passphrase and
        the object store's read-only key (a refresh preview reads the real state); never a write token or
        the operator token."""
        return self._reviewer() | {
            "PULUMI_BACKEND_URL": self.backend_url,
            "PULUMI_CONFIG_PASSPHRASE": self.lab.passphrase,
            **self._object_store_credentials(StoreKey.READER),
        }

    def rollout_exit(self, timeout: float) -> int:
        """The rollout's exit code, once it has ended."""
        pid = self.lab.pids["rollout"]
        ended: list[int] = []

        def exited() -> bool:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                ended.append(os.waitstatus_to_exitcode(status))
            return bool(ended)

        wait_until("the rollout to end", exited, timeout=timeout, interval=2)
        return ended[0]

    def kill_host(self, host: Peer) -> None:
        """A host that dies at once: every process on it, the CLIs and providers too, by SIGKILL."""
        for pid in run(["ip", "netns", "pids", host.namespace]).stdout.split():
            with suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        wait_until(f"{host.link} to die", lambda: not run(["ip", "netns", "pids", host.namespace]).stdout.strip())

    def log(self, name: str) -> str:
        """What a control-plane process (`api`, `worker-<host>`, `redis`, `object-store`) wrote so far."""
        path = self.directory / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    @contextmanager
    def object_store_down(self) -> Iterator[None]:
        """The object store refuses every connection, also those already open, until the block ends."""
        rule = ["INPUT", "-p", "tcp", "--dport", str(OBJECT_STORE_PORT), "-j", "REJECT", "--reject-with", "tcp-reset"]
        run(in_ns(PROVISIONER.namespace, "iptables", "-I", *rule))
        try:
            yield
        finally:
            run(in_ns(PROVISIONER.namespace, "iptables", "-D", *rule))

    @contextmanager
    def ssh_unanswered(self, host: Peer) -> Iterator[None]:
        """The host's new SSH connections go unanswered until the block ends: its CLIs wait for a new
        server as for one still booting."""
        rule = ["OUTPUT", "-p", "tcp", "--dport", "22", "--syn", "-j", "DROP"]
        for tool in ("iptables", "ip6tables"):
            run(in_ns(host.namespace, tool, "-I", *rule))
        try:
            yield
        finally:
            for tool in ("iptables", "ip6tables"):
                run(in_ns(host.namespace, tool, "-D", *rule))

    def objects(self, prefix: str) -> list[str]:
        """The keys in the state bucket under `prefix`, listed with the reader's key."""
        return self.object_store.keys(self.store_key(StoreKey.READER), BUCKET, prefix)

    def stack_locks(self, customer_id: str) -> list[str]:
        """The lock files a self-managed backend keeps for the customer's stack (pkg/backend/diy/lock.go)."""
        return self.objects(f".pulumi/locks/organization/clawhosters/customer-{customer_id}/")

    # -- billing and the operator ---------------------------------------------------------------
    def post_event(self, body: bytes) -> tuple[int, dict[str, Any]]:
        signature = sign(body, self.webhook_secret, int(time.time()))
        status, answer = request(
            CLIENT.namespace,
            PROVISIONER.ipv4,
            API_PORT,
            "POST",
            "/webhooks/billing",
            body,
            **{"Stripe-Signature": signature, "Content-Type": "application/json"},
        )
        return status, json.loads(answer or b"{}")

    def get(self, path: str) -> tuple[int, dict[str, Any]]:
        authorization = f"Bearer {self.operator_token}"
        status, answer = request(
            PROVISIONER.namespace, "127.0.0.1", PRIVATE_API_PORT, "GET", path, Authorization=authorization
        )
        return status, json.loads(answer or b"{}")

    def customer(self, customer_id: str) -> dict[str, Any]:
        status, view = self.get(f"/customers/{customer_id}")
        return view if status == 200 else {}

    def pulumi(self, *arguments: str) -> str:
        """The pinned CLI in an operator's shell on the provisioner's host, on the shared backend."""
        environment = {
            **self.environment(PROVISIONER),
            **toolchain.cli_environment(backend_url=self.backend_url),
        }
        binary = str(toolchain.LINK.resolve() / "bin" / "pulumi")
        # Outside any project directory: there `stack ls` would name the project's stacks by short names.
        return run(in_ns(PROVISIONER.namespace, binary, *arguments), env=environment, cwd=self.directory).stdout

    def stack_names(self) -> list[str]:
        return [stack["name"] for stack in json.loads(self.pulumi("stack", "ls", "--all", "--json"))]


def _token_variable(project: str) -> str:
    # The first project's token is the one every other tool reads, HCLOUD_TOKEN.
    return "HCLOUD_TOKEN" if project == HETZNER_PROJECT else f"HCLOUD_TOKEN_{project.upper().replace('-', '_')}"


def _read_variable(project: str) -> str:
    return f"HCLOUD_READ_TOKEN_{project.upper().replace('-', '_')}"


def _answers(address: str, port: int) -> bool:
    try:
        connect_from(PROVISIONER.namespace, address, port, 1).close()
    except OSError:
        return False
    return True
