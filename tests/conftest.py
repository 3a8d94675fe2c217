"""Fixtures shared across the suite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hcloud_api.conftest import ACME, Emulator

# A provisioner's Hetzner project (tests/provisioner/conftest.py): its token, and its read-only token,
# which a signup's placement reads the availability with.
PROJECT_TOKEN = "W" * 32 + "rite" * 8
PROJECT_READ_TOKEN = "R" * 32 + "read" * 8


@pytest.fixture
def hetzner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """The lab's emulation of Hetzner's API, named to the hcloud provider the way an operator names
    the real one: HCLOUD_ENDPOINT and HCLOUD_TOKEN in the CLI's environment."""
    emulator = Emulator(tmp_path / "hetzner")
    emulator.start()
    monkeypatch.setenv("HCLOUD_ENDPOINT", f"{emulator.url}/v1")
    monkeypatch.setenv("HCLOUD_TOKEN", ACME)
    yield emulator
    emulator.stop()


@pytest.fixture(scope="session")
def hetzner_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """Hetzner as a provisioner's workers see it, for the whole session: every type in stock unless a
    test says otherwise (and puts it back)."""
    tokens = [
        {"project": "default", "token": PROJECT_TOKEN},
        {"project": "default", "token": PROJECT_READ_TOKEN, "read_only": True},
    ]
    emulator = Emulator(tmp_path_factory.mktemp("hetzner"), {"tokens": tokens})
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()
