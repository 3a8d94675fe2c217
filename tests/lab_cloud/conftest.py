"""The lab's Hetzner Cloud with machines: the API emulator on `ServerBackend`, on the lab's internet,
driven by Hetzner's own client; SSH sessions come from the lab's client namespace."""

from __future__ import annotations

import base64
import contextlib
import io
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hcloud import APIException, Client
from hcloud.images import Image
from hcloud.server_types import ServerType
from hcloud.servers import BoundServer, CreateServerResponse

from lab import servers
from lab.netns import connect_from
from lab.servers import ServerBackend
from lab.world import Lab, down
from tests.hcloud_api.conftest import ACME, Emulator

BOOT_SECONDS = 120
ACTION_SECONDS = 180


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.lab)


@pytest.fixture(scope="session")
def internet() -> Iterator[None]:
    """The lab's internet: the one a running lab suite built, or one of our own."""
    assert os.geteuid() == 0, "the servers are machines in network namespaces: run the tests as root"
    if servers.router_is_up():
        yield
        return
    lab = Lab()
    try:
        lab.internet()
        yield
    finally:
        down(lab.state_dir)


@pytest.fixture
def backend(internet: None) -> Iterator[ServerBackend]:
    servers.down()  # whatever an interrupted run left
    started = ServerBackend()
    try:
        started.start()
        yield started
    finally:
        servers.down()


@dataclass
class Cloud:
    emulator: Emulator
    client: Client
    backend: ServerBackend

    def order(self, name: str, image: Image | None = None, **options: Any) -> CreateServerResponse:
        return self.client.servers.create(
            name=name, server_type=ServerType(name="cx23"), image=image or Image(name="debian-12"), **options
        )

    def running(self, response: CreateServerResponse) -> BoundServer:
        """The server, once its create and start actions are done."""
        response.action.wait_until_finished()
        for action in response.next_actions:
            action.wait_until_finished()
        return self.client.servers.get_by_id(response.server.id)

    def create(self, name: str, image: Image | None = None, **options: Any) -> BoundServer:
        return self.running(self.order(name, image, **options))


@pytest.fixture
def cloud(tmp_path: Path, backend: ServerBackend) -> Iterator[Cloud]:
    emulator = Emulator(tmp_path / "hetzner", {"action_seconds": 0.2}, backend)
    emulator.start()
    # Machine actions take seconds: poll every 0.25 s, for ACTION_SECONDS at most.
    client = Client(
        token=ACME,
        api_endpoint=f"{emulator.url}/v1",
        poll_interval=0.25,
        poll_max_retries=int(ACTION_SECONDS / 0.25),
    )
    try:
        yield Cloud(emulator, client, backend)
    finally:
        for server in client.servers.get_all():
            with contextlib.suppress(APIException):
                server.delete().wait_until_finished()
        emulator.stop()


@dataclass(frozen=True)
class KeyPair:
    private: paramiko.PKey
    public: str


@pytest.fixture(scope="session")
def keys() -> KeyPair:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return KeyPair(paramiko.Ed25519Key.from_private_key(io.StringIO(pem.decode())), public.decode() + " lab-cloud")


def console_host_key(console: Path) -> paramiko.PKey | None:
    """The server's ED25519 host key as cloud-init prints it to the console (the last time)."""
    text = console.read_text(errors="replace") if console.exists() else ""
    start = text.rfind("-----BEGIN SSH HOST KEY KEYS-----")
    block = text[start : text.find("-----END SSH HOST KEY KEYS-----", start)] if start >= 0 else ""
    line = next((line for line in block.splitlines() if line.startswith("ssh-ed25519 ")), None)
    return None if line is None else paramiko.Ed25519Key(data=base64.b64decode(line.split()[1]))


class Shell:
    """An SSH session as root from a lab namespace, the server's host key pinned."""

    def __init__(self, namespace: str, host: str, key: paramiko.PKey, host_key: paramiko.PKey) -> None:
        self.client = paramiko.SSHClient()
        self.client.get_host_keys().add(host, host_key.get_name(), host_key)
        self.client.connect(
            host,
            username="root",
            pkey=key,
            sock=connect_from(namespace, host, 22, 5),
            timeout=5,
            auth_timeout=10,
            banner_timeout=10,
            allow_agent=False,
            look_for_keys=False,
        )

    def run(self, command: str, timeout: float = 60) -> str:
        _, stdout, stderr = self.client.exec_command(command, timeout=timeout)
        status = stdout.channel.recv_exit_status()
        output = stdout.read().decode()
        assert status == 0, f"{command!r} exited {status}: {stderr.read().decode()}{output}"
        return output.strip()

    def close(self) -> None:
        self.client.close()


def shell(namespace: str, host: str, key: paramiko.PKey, console: Path, timeout: float = BOOT_SECONDS) -> Shell:
    """A session once the server answers SSH with the console's host key, and cloud-init is done."""
    deadline = time.monotonic() + timeout
    failure: Exception | None = None
    while time.monotonic() < deadline:
        host_key = console_host_key(console)
        if host_key is not None:
            try:
                session = Shell(namespace, host, key, host_key)
            except (OSError, EOFError, paramiko.SSHException) as error:
                failure = error  # not up yet, or its keys are not installed yet
            else:
                session.run("cloud-init status --wait", timeout=max(1.0, deadline - time.monotonic()))
                return session
        time.sleep(1)
    raise AssertionError(f"{host} did not answer SSH within {timeout:.0f} s: {failure}")
