"""A resize through the platform's `up` (fleet.stacks.up), with the real CLI and hcloud provider
against the lab's Hetzner API: a graceful shutdown first, never the provider's hard poweroff, and
the server running afterwards, also when Hetzner refuses the new type."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pulumi import automation

from fleet import resize, stacks
from lab.hcloud_api.backend import MachineError, MachineSpec, RecordingBackend
from tests.engine.test_engine import PACK, PROGRAM, STACK
from tests.hcloud_api.conftest import Emulator


@pytest.fixture
def workspace(tmp_path: Path, hetzner: Emulator, monkeypatch: pytest.MonkeyPatch) -> stacks.Workspace:
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "resize-check")
    (tmp_path / "state").mkdir()
    return stacks.Workspace(
        program_dir=PROGRAM, policy_pack=PACK, backend_url=f"file://{tmp_path / 'state'}", stacks_dir=tmp_path / "s"
    )


def settings(server_type: str) -> dict[str, str]:
    key = Ed25519PrivateKey.generate().public_key()
    public = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return {
        "engine-check:cloud": "true",
        "engine-check:server_type": server_type,
        "engine-check:ssh_public_key": public,
        "hcloud:pollInterval": "100ms",
    }


def calls_since(backend: RecordingBackend, start: int, server_id: int) -> list[str]:
    return [hook for hook, called in backend.calls[start:] if called == server_id]


def test_a_resize_shuts_the_server_down_gracefully_and_it_runs_afterwards(
    workspace: stacks.Workspace, hetzner: Emulator
) -> None:
    backend = hetzner.backend
    assert isinstance(backend, RecordingBackend)
    config = settings("cx23")
    outputs = stacks.up(workspace, STACK, config=config, create=True)
    server_id = int(outputs["server_id"])
    before = len(backend.calls)

    stacks.up(workspace, STACK, config={**config, "engine-check:server_type": "cx33"})
    server = hetzner.client().servers.get_by_id(server_id)
    assert (server.server_type.name, server.status) == ("cx33", "running")
    # ACPI shutdown, then Hetzner's own resize and start; never the provider's power cut.
    assert calls_since(backend, before, server_id) == ["shutdown", "resize", "power_on"]


def test_a_resize_hetzner_refuses_leaves_the_server_running(workspace: stacks.Workspace, hetzner: Emulator) -> None:
    backend = hetzner.backend
    assert isinstance(backend, RecordingBackend)
    config = settings("cx23")
    server_id = int(stacks.up(workspace, STACK, config=config, create=True)["server_id"])
    before = len(backend.calls)

    # x86 to Arm: the suite's program does not check it, Hetzner refuses it after the shutdown.
    with pytest.raises(automation.CommandError, match="invalid_server_type"):
        stacks.up(workspace, STACK, config={**config, "engine-check:server_type": "cax11"})
    server = hetzner.client().servers.get_by_id(server_id)
    assert (server.server_type.name, server.status) == ("cx23", "running")
    assert calls_since(backend, before, server_id) == ["shutdown", "power_on"]


def test_a_server_that_does_not_shut_down_is_not_resized(
    workspace: stacks.Workspace, hetzner: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = hetzner.backend
    assert isinstance(backend, RecordingBackend)
    config = settings("cx23")
    server_id = int(stacks.up(workspace, STACK, config=config, create=True)["server_id"])

    # An OS that ignores ACPI: the request is delivered, the server stays up.
    def ignore(_self: RecordingBackend, _machine: MachineSpec) -> None:
        raise MachineError("the OS ignored the ACPI request")

    monkeypatch.setattr(RecordingBackend, "shutdown", ignore)
    impatient = workspace.model_copy(update={"shutdown_seconds": 2.0})
    with pytest.raises(resize.ResizeError, match="did not shut down within 2 s"):
        stacks.up(impatient, STACK, config={**config, "engine-check:server_type": "cx33"})
    server = hetzner.client().servers.get_by_id(server_id)
    assert (server.server_type.name, server.status) == ("cx23", "running")
