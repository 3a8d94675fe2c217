"""The toolchain's providers installed into the CLI's plugin cache by the pinned CLI itself."""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
from pathlib import Path

import pytest

import toolchain
from toolchain import plugins

PINS = toolchain.Pins.load()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PULUMI_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def listed() -> list[tuple[str, str, str]]:
    """What the CLI itself finds in its plugin cache."""
    env = {**os.environ, **toolchain.cli_environment()}
    shown = subprocess.run(
        [str(toolchain.cli_path()), "plugin", "ls", "--json"], env=env, capture_output=True, text=True, check=True
    )
    return [(plugin["kind"], plugin["name"], plugin["version"]) for plugin in json.loads(shown.stdout)]


def test_a_build_is_installed_where_the_cli_finds_it_once_and_another_build_is_replaced(home: Path) -> None:
    # One plugin (tls, the smallest) stands for all: they are installed alike.
    (plugin,) = (plugin for plugin in plugins.requested(PINS) if plugin.name == "tls")
    target = home / "plugins" / f"resource-tls-v{plugin.version}" / "pulumi-resource-tls"

    assert plugins.install([plugin]) == [(plugin, "installed")]
    assert filecmp.cmp(target, plugin.build, shallow=False)
    assert listed() == [("resource", "tls", plugin.version)]
    assert plugins.install([plugin]) == [(plugin, "installed already")]

    # Another binary at that version (an earlier build, or upstream's) gives way to the build.
    target.write_bytes(b"#!/bin/sh\nexit 1\n")
    assert plugins.install([plugin]) == [(plugin, "replaced")]
    assert filecmp.cmp(target, plugin.build, shallow=False)


def test_a_private_home_shares_the_installed_plugin_cache(home: Path, tmp_path: Path) -> None:
    private = tmp_path / "private"
    env = toolchain.cli_environment(pulumi_home=private)
    assert env["PULUMI_HOME"] == str(private)
    assert (private / "plugins").resolve() == (home / "plugins").resolve()
    # Asked again (a second CLI run in the same home), nothing changes.
    toolchain.cli_environment(pulumi_home=private)
    toolchain.cli_environment(pulumi_home=home)
    assert not (home / "plugins").exists()


def test_a_package_without_a_manifest_asks_for_no_plugin_and_a_missing_sdk_is_named() -> None:
    assert plugins.manifest("pydantic") is None
    with pytest.raises(plugins.PluginError, match="pulumi-nonexistent is not installed"):
        plugins.manifest("pulumi-nonexistent")
