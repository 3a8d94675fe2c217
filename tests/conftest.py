"""Fixtures shared across the suite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hcloud_api.conftest import ACME, Emulator


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
