"""A stopped operation stops, down to its providers, and what a host sends is bounded.

The provisioner's real serve and worker processes, on Redis, run the real CLI and providers
(tests/provisioner/remote_runner.py: a script over SSH on a real sshd on loopback, a server made by
the hcloud provider on the lab's Hetzner emulator, whose creates can be held), as the platform runs
them on a worker host.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

import toolchain
from lab.hcloud_api.backend import MachineSpec, RecordingBackend
from provisioner.sessions import members, running
from tests.conftest import PROJECT_READ_TOKEN, PROJECT_TOKEN
from tests.hcloud_api.conftest import Emulator
from tests.loopback_sshd import LoopbackSshd, loopback_sshd
from tests.provisioner.conftest import Provisioner, wait_for
from tests.provisioner.conftest import running as deployment
from tests.provisioner.events import signup
from tests.provisioner.remote_runner import CONFIG
from tests.provisioner.standin import locks

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="sshd lets root in only when run as root")

LEASE_SECONDS = 8


class HeldCreates(RecordingBackend):
    """Hetzner still making each server until `release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.entered, self.release = threading.Event(), threading.Event()

    def create(self, machine: MachineSpec) -> None:
        self.entered.set()
        self.release.wait(timeout=600)
        super().create(machine)


@dataclass(frozen=True)
class Host:
    """A customer's host: an sshd whose root decides what the provisioning key's session runs."""

    sshd: LoopbackSshd
    directory: Path

    def program(self, script: str, **more: Any) -> dict[str, Any]:
        """The remote program's settings for a command running `script` here."""
        settings = {"host": "127.0.0.1", "port": self.sshd.port, "host_key": self.sshd.host_public_key}
        settings |= {"private_key": self.sshd.client_private_key, "create": script}
        return {key: str(value) for key, value in {**settings, **more}.items()}

    def force(self, command: str) -> None:
        """What a customer with root does: a forced command on the provisioning key's line."""
        keys = self.directory / "authorized_keys"
        keys.write_text(f'command="{command}" {keys.read_text()}')

    def sessions(self) -> list[psutil.Process]:
        """sshd's processes for open connections (the listener's children) and what they run."""
        listener = psutil.Process(int((self.directory / "sshd.pid").read_text()))
        return listener.children(recursive=True)


CUSTOMERS = ("acme", "initech", "hooli")


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[dict[str, Host]]:
    """An sshd per customer."""
    with contextlib.ExitStack() as started:
        found = {}
        for name in CUSTOMERS:
            (tmp_path / name).mkdir()
            found[name] = Host(started.enter_context(loopback_sshd(tmp_path / name)), tmp_path / name)
        yield found


@pytest.fixture
def hetzner(tmp_path: Path) -> Iterator[tuple[Emulator, HeldCreates]]:
    backend = HeldCreates()
    # The project the provisioner's workers have tokens for (tests/provisioner/conftest.py).
    tokens = [
        {"project": "default", "token": PROJECT_TOKEN},
        {"project": "default", "token": PROJECT_READ_TOKEN, "read_only": True},
    ]
    emulator = Emulator(tmp_path / "hetzner", {"action_seconds": 0.1, "tokens": tokens}, backend)
    emulator.start()
    yield emulator, backend
    backend.release.set()
    emulator.stop()


def _settings(tmp_path: Path, emulator: Emulator, programs: dict[str, dict[str, Any]], **more: str) -> dict[str, str]:
    # A CLI home of the test's own, whose plugin cache is the one setup.sh installed the providers in.
    toolchain.share_plugin_cache(tmp_path / "pulumi-home")
    return {
        "CLAW_PULUMI_BINARY": str(toolchain.cli_path()),
        "CLAW_RUNNER": "tests.provisioner.remote_runner:RunnerOnTheRemoteProgram",
        CONFIG: json.dumps(programs),
        "CLAW_LEASE_SECONDS": str(LEASE_SECONDS),
        "CLAW_CANCEL_SECONDS": "1",
        "CLAW_KILL_GRACE_SECONDS": "1",
        "HCLOUD_ENDPOINT": f"{emulator.url}/v1",
        "PULUMI_CONFIG_PASSPHRASE": "stopping-check",
        "PULUMI_HOME": str(tmp_path / "pulumi-home"),
        **more,
    }


def _worker_process(provisioner: Provisioner) -> psutil.Process:
    """The worker process running an operation: a child of the master that leads a session of its own
    (as the scheduler does) with processes in it."""
    master = psutil.Process(provisioner.processes["worker"].pid)

    def leader() -> psutil.Process | None:
        children = master.children()
        return next((child for child in children if members(child.pid, besides=child.pid)), None)

    found: psutil.Process = wait_for("the worker process", leader)
    return found


def _history(provisioner: Provisioner, customer: str) -> list[dict[str, Any]]:
    _, view = provisioner.get(f"/customers/{customer}")
    return list(view["history"])


def test_a_lease_that_runs_out_mid_create_and_mid_ssh_ends_every_process_before_the_next_holder_runs(
    request: pytest.FixtureRequest, tmp_path: Path, hosts: dict[str, Host], hetzner: tuple[Emulator, HeldCreates]
) -> None:
    emulator, creates = hetzner
    host, hold, script_pid = hosts["acme"], tmp_path / "hold", tmp_path / "script.pid"
    hold.touch()
    script = f"echo $$ > {script_pid}; while [ -e {hold} ]; do echo tick; sleep 0.2; done"
    programs = {"acme": host.program(script, server="true")}
    with deployment(request, tmp_path, "redis", settings=_settings(tmp_path, emulator, programs)) as provisioner:
        assert provisioner.redis is not None
        provisioner.start("worker")
        provisioner.post(signup("acme"))
        # Hetzner is making the server while the script runs over SSH: both providers are mid-operation.
        wait_for("the server's create", creates.entered.is_set, timeout=120)
        wait_for("the script over SSH", lambda: script_pid.exists() and running(int(script_pid.read_text())), 120)
        worker = _worker_process(provisioner)
        operation = members(worker.pid, besides=worker.pid)
        programs_seen = {Path(psutil.Process(pid).cmdline()[0]).name for pid in operation}
        assert {"pulumi", "pulumi-resource-hcloud", "pulumi-resource-command"} <= programs_seen, programs_seen

        # The store goes away: the lease cannot be renewed, and it lapses at most a lease after its last
        # renewal, which was at most a sixth of a lease before this.
        provisioner.redis.stop()
        lapses = time.monotonic() + LEASE_SECONDS * 5 / 6
        wait_for("every process of the operation to end", lambda: not any(map(running, operation)), LEASE_SECONDS)
        assert time.monotonic() < lapses, "the operation outlived the lease"
        assert members(worker.pid, besides=worker.pid) == []
        wait_for("the SSH session to close", lambda: host.sessions() == [], timeout=10)
        # Its next line meets the closed session.
        wait_for("the script to end", lambda: not running(int(script_pid.read_text())), timeout=10)
        assert "the stack lease could not be renewed" in provisioner.logs

        # That worker's host dies before the store is back; another worker takes the stack over.
        provisioner.kill("worker")
        creates.release.set()
        hold.unlink()
        provisioner.redis.start()
        import redis

        store = redis.Redis.from_url(provisioner.env["CLAW_QUEUE_URL"])
        wait_for("the lease to lapse", lambda: not store.exists("lock:stack:acme"), timeout=LEASE_SECONDS * 2)
        provisioner.start("worker")
        wait_for("the signup to finish", lambda: provisioner.status("acme") in ("ready", "failed"), timeout=240)
        history = _history(provisioner, "acme")
        assert provisioner.status("acme") == "ready", history
    # The CLI, terminated, wrote its state and released its lock; the server whose create was cut off
    # was deleted and made anew.
    [took_over] = [entry for entry in history if entry["event"] == "took over"]
    assert "deleted server" in took_over["detail"] and "pending operations" in took_over["detail"], took_over
    assert locks(provisioner.records) == []
    servers = emulator.client(PROJECT_TOKEN).servers.get_all()
    assert [server.labels for server in servers] == [{"managed-by": "engine-remote"}]


def test_hosts_that_stream_without_end_fail_within_their_bounds_while_another_customer_finishes(
    request: pytest.FixtureRequest, tmp_path: Path, hosts: dict[str, Host], hetzner: tuple[Emulator, HeldCreates]
) -> None:
    emulator, _ = hetzner
    # Two customers with root on their hosts force the provisioning key's command: one streams lines
    # (the command provider sends each to the CLI, which grows), one streams bytes without a newline
    # (upstream's line scanner stops at 64 KiB and the session stalls). A third is an ordinary host.
    hosts["acme"].force("yes")
    hosts["initech"].force("cat /dev/zero")
    programs = {name: host.program("echo configured") for name, host in hosts.items()}
    bounds = {"CLAW_OPERATION_SECONDS": "60", "CLAW_PROCESS_MEMORY_MIB": "256"}
    settings = _settings(tmp_path, emulator, programs, **bounds)
    with deployment(request, tmp_path, "redis", settings=settings) as provisioner:
        provisioner.start("worker", "--workers", "3")
        for customer in hosts:
            provisioner.post(signup(customer))
        master = psutil.Process(provisioner.processes["worker"].pid)
        workers = wait_for("three worker processes", lambda: len(master.children()) >= 4 and master.children())
        wait_for("every signup to end", lambda: all(provisioner.status(c) in ("ready", "failed") for c in hosts), 240)

        assert provisioner.status("hooli") == "ready"
        streamed, stalled = (provisioner.job(_newest(provisioner, customer)) for customer in ("acme", "initech"))
        assert (streamed["status"], streamed["attempts"]) == ("failed", 1), streamed
        assert "memory bound of 256 MiB (CLAW_PROCESS_MEMORY_MIB)" in streamed["last_error"], streamed
        dropped = [entry for entry in streamed["history"] if entry["event"] == "output dropped"]
        assert dropped and "bytes of the CLI's output were dropped" in dropped[0]["detail"], streamed["history"]
        assert (stalled["status"], stalled["attempts"]) == ("failed", 1), stalled
        assert "ran past its deadline of 60 s (CLAW_OPERATION_SECONDS)" in stalled["last_error"], stalled

        # The workers are the same processes, none holding more than its bound, and nothing of the
        # failed operations is left; the hosts have no session open.
        assert all(worker.is_running() for worker in workers)
        for worker in master.children():
            assert members(worker.pid, besides=worker.pid) == []
        assert all(host.sessions() == [] for host in hosts.values())
        logged = [line for line in provisioner.logs.splitlines() if '"line"' in line and streamed["event_id"] in line]
        assert sum(len(line) for line in logged) < 8 << 20, "the CLI's output was logged without bound"


def _newest(provisioner: Provisioner, customer: str) -> str:
    _, view = provisioner.get(f"/customers/{customer}")
    return str(view["event_id"])
