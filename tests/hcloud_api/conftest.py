"""The emulator served by a real uvicorn on 127.0.0.1, and Hetzner's own client pointed at it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import uvicorn
from hcloud import Client
from hcloud.images import Image
from hcloud.server_types import ServerType
from hcloud.servers import BoundServer

from lab.hcloud_api.app import create_app
from lab.hcloud_api.backend import MachineBackend, RecordingBackend
from lab.hcloud_api.config import EmulatorConfig

ACME = "A" * 32 + "cme0" * 8
OTHER = "O" * 32 + "ther" * 8
FAST_ACTIONS = 0.05


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Emulator:
    """One emulator process-in-a-thread; `restart()` serves the same state directory again."""

    state_dir: Path
    settings: dict[str, Any] = field(default_factory=dict)
    backend: MachineBackend = field(default_factory=RecordingBackend)
    port: int = field(default_factory=free_port)
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        values = {
            "state_dir": self.state_dir,
            "port": self.port,
            "tokens": [{"project": "acme", "token": ACME}, {"project": "other", "token": OTHER}],
            "action_seconds": FAST_ACTIONS,
            "rate_limit": {"limit": 100_000},
        } | self.settings
        app = create_app(EmulatorConfig.model_validate(values), self.backend)
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            assert self._thread.is_alive(), "uvicorn stopped while starting"
            time.sleep(0.01)

    def stop(self) -> None:
        assert self._server is not None and self._thread is not None
        self._server.should_exit = True
        self._thread.join(timeout=10)
        assert not self._thread.is_alive(), "uvicorn did not stop"

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self, token: str = ACME) -> Client:
        return Client(token=token, api_endpoint=f"{self.url}/v1", poll_interval=0.02, poll_max_retries=250)

    def get(self, path: str, token: str | None = ACME, **params: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.get(f"{self.url}{path}", headers=headers, params=params, timeout=10)

    def post(self, path: str, body: Any = None, token: str = ACME, raw: bytes | None = None) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        if raw is not None:
            return requests.post(f"{self.url}{path}", data=raw, headers=headers, timeout=10)
        return requests.post(f"{self.url}{path}", json=body, headers=headers, timeout=10)


@pytest.fixture
def start_emulator(tmp_path: Path) -> Iterator[Callable[..., Emulator]]:
    started: list[Emulator] = []

    def start(backend: MachineBackend | None = None, **settings: Any) -> Emulator:
        emulator = Emulator(tmp_path / f"state{len(started)}", settings, backend or RecordingBackend())
        emulator.start()
        started.append(emulator)
        return emulator

    yield start
    for emulator in started:
        if emulator._thread is not None and emulator._thread.is_alive():
            emulator.stop()


@pytest.fixture
def emulator(start_emulator: Callable[..., Emulator]) -> Emulator:
    return start_emulator()


@pytest.fixture
def client(emulator: Emulator) -> Client:
    return emulator.client()


def create_server(client: Client, name: str, server_type: str = "cx23", **options: Any) -> BoundServer:
    """A server, once its create and start actions are done."""
    response = client.servers.create(
        name=name, server_type=ServerType(name=server_type), image=Image(name="debian-12"), **options
    )
    response.action.wait_until_finished()
    for action in response.next_actions:
        action.wait_until_finished()
    return client.servers.get_by_id(response.server.id)
