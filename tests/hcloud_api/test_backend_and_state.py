"""The machine hooks decide when actions finish; state survives restarts, in a thread and as the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from hcloud import Client
from hcloud.actions import ActionFailedException
from hcloud.firewalls import FirewallRule
from hcloud.images import Image
from hcloud.server_types import ServerType

from lab.hcloud_api.backend import MachineError, MachineSpec, RecordingBackend, ServerFirewall
from tests.hcloud_api.conftest import ACME, Emulator, create_server, free_port
from tests.keys import public_key

REPO = Path(__file__).resolve().parents[2]


class HeldPowerOff(RecordingBackend):
    """Power-off returns only once the test lets it; power-on can be made to fail."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.refuse_power_on = False

    def power_off(self, machine: MachineSpec) -> None:
        assert self.release.wait(timeout=10), "power-off was never released"
        super().power_off(machine)

    def power_on(self, machine: MachineSpec) -> None:
        if self.refuse_power_on:
            raise MachineError("the machine did not boot")
        super().power_on(machine)


def test_an_action_runs_until_the_machine_is_done(start_emulator: Callable[..., Emulator]) -> None:
    backend = HeldPowerOff()
    client = start_emulator(backend).client()
    server = create_server(client, "held")
    action = client.servers.power_off(server)
    time.sleep(0.3)  # several times the configured action time
    assert client.actions.get_by_id(action.id).status == "running"
    assert client.servers.get_by_id(server.id).status == "stopping"
    backend.release.set()
    action.wait_until_finished()
    assert client.servers.get_by_id(server.id).status == "off"
    backend.refuse_power_on = True
    failing = client.servers.power_on(server)
    with pytest.raises(ActionFailedException):
        failing.wait_until_finished()
    assert failing.error == {"code": "action_failed", "message": "the machine did not boot"}
    assert client.servers.get_by_id(server.id).status == "off"


def test_the_hooks_each_action_calls(start_emulator: Callable[..., Emulator]) -> None:
    backend = RecordingBackend()
    client = start_emulator(backend).client()
    server = create_server(client, "hooked")
    client.servers.power_off(server).wait_until_finished()
    client.servers.change_type(server, ServerType(name="cx33"), upgrade_disk=True).wait_until_finished()
    client.servers.create_image(server).action.wait_until_finished()
    client.servers.rebuild(server, Image(name="debian-13")).action.wait_until_finished()
    client.servers.delete(server).wait_until_finished()
    hooks = [hook for hook, server_id in backend.calls if server_id == server.id]
    # Create (its firewall, none, in force before it boots) and first boot; resize, then Hetzner boots
    # it; snapshot; rebuild (off, overwrite, boot); delete, and its filter goes.
    create, resize = ["create", "apply_firewall", "power_on"], ["power_off", "resize", "power_on"]
    rebuild, delete = ["power_off", "rebuild", "power_on"], ["delete", "apply_firewall"]
    assert hooks == [*create, *resize, "snapshot", *rebuild, *delete]
    assert backend.firewall_calls == [(server.id, ServerFirewall()), (server.id, ServerFirewall())]
    assert backend.running == set()


def test_state_survives_a_restart_and_running_actions_finish(start_emulator: Callable[..., Emulator]) -> None:
    backend = HeldPowerOff()
    emulator = start_emulator(backend)
    client = emulator.client()
    key = client.ssh_keys.create(name="prov", public_key=public_key(comment="persist"))
    server = create_server(client, "kept", ssh_keys=[key], labels={"customer": "acme"})
    firewall = client.firewalls.create(
        name="kept", rules=[FirewallRule(direction="in", protocol="icmp", source_ips=["0.0.0.0/0"])]
    )
    snapshot = client.servers.create_image(server)
    snapshot.action.wait_until_finished()
    client.servers.change_protection(server, delete=True, rebuild=True)
    held = client.servers.power_off(server)
    emulator.stop()
    backend.release.set()  # the abandoned hook of the stopped emulator may return now

    emulator.backend = RecordingBackend()
    emulator.start()
    client = emulator.client()
    held.wait_until_finished()
    assert ("power_off", server.id) in emulator.backend.calls
    again = client.servers.get_by_id(server.id)
    assert (again.status, again.labels, again.protection) == (
        "off",
        {"customer": "acme"},
        {"delete": True, "rebuild": True},
    )
    assert again.public_net.ipv4.ip == server.public_net.ipv4.ip
    assert client.ssh_keys.get_by_name("prov").fingerprint == key.fingerprint
    assert client.firewalls.get_by_id(firewall.firewall.id).rules[0].protocol == "icmp"
    assert client.images.get_by_id(snapshot.image.id).status == "available"
    newer = client.ssh_keys.create(name="newer", public_key=public_key(comment="persist-2"))
    assert newer.id > max(server.id, snapshot.action.id, held.id)


def _serve(state: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "lab.hcloud_api", "--state", str(state), "--listen", f"127.0.0.1:{port}"]
    return subprocess.Popen([*command, *extra], cwd=REPO, stderr=subprocess.PIPE)


def _wait_serving(process: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 20
    while True:
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else "exited"
        try:
            requests.get(f"http://127.0.0.1:{port}/_lab/requests", timeout=1)
            return
        except requests.ConnectionError:
            assert time.monotonic() < deadline, "the emulator did not start listening"
            time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes]) -> None:
    os.kill(process.pid, signal.SIGTERM)
    process.wait(timeout=10)


def test_the_command_line_serves_and_keeps_state(tmp_path: Path) -> None:
    port = free_port()
    flags = ("--token", f"acme={ACME}", "--action-seconds", "0.01")
    process = _serve(tmp_path / "state", port, *flags)
    try:
        _wait_serving(process, port)
        client = Client(token=ACME, api_endpoint=f"http://127.0.0.1:{port}/v1", poll_interval=0.02)
        server = create_server(client, "from-cli")
    finally:
        _stop(process)
    process = _serve(tmp_path / "state", port, *flags)
    try:
        _wait_serving(process, port)
        assert client.servers.get_by_id(server.id).status == "running"
    finally:
        _stop(process)


def test_the_command_line_refuses_a_token_the_provider_would_refuse(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lab.hcloud_api", "--state", str(tmp_path), "--token", "acme=short"],
        cwd=REPO,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2 and b"64 letters and digits" in result.stderr
