"""The toolchain's one source of versions, and everything that must agree with it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

import toolchain
from toolchain import build, lock

PINS = toolchain.Pins.load()
REPO = toolchain.REPO


def locked() -> dict[str, str]:
    lines = (REPO / "requirements.lock").read_text().splitlines()
    return dict(line.split("==", 1) for line in lines if line and not line.startswith("#"))


def test_every_component_has_a_build_module_and_script() -> None:
    for name in PINS.components:
        assert (toolchain.TOOLCHAIN_DIR / name / "build.sh").is_file(), name
        assert (toolchain.TOOLCHAIN_DIR / name / "go.sum").is_file(), f"{name}: its Go graph must be pinned"


def test_each_sdk_is_locked_at_its_plugins_version_and_pulumi_command_has_host_key() -> None:
    pins = locked()
    for name, component in PINS.components.items():
        if component.sdk is not None:
            assert pins[component.sdk.package] == component.sdk.version, name
    # host_key (the pinned SSH host key) exists from 1.1 on.
    major, minor, *_ = (int(part) for part in pins["pulumi-command"].split("."))
    assert (major, minor) >= (1, 1)


def test_the_lock_is_what_lock_renders_from_its_own_resolution() -> None:
    text = (REPO / "requirements.lock").read_text()
    assert text == lock.render(locked()), "requirements.lock was edited by hand: run `python -m toolchain lock`"
    assert all(re.fullmatch(r"[a-z0-9-]+", name) for name in locked()), "names are in their PEP 503 form"


@pytest.mark.parametrize("program", [REPO, *(REPO / "tests" / "engine" / name for name in ("program", "remote"))])
def test_each_project_names_exactly_the_built_plugins_by_path(program: Path) -> None:
    declared = yaml.safe_load((program / "Pulumi.yaml").read_text())["plugins"]
    built = {binary.removeprefix("pulumi-resource-") for c in PINS.components.values() for binary in c.binaries}
    providers = {plugin["name"] for plugin in declared["providers"]}
    assert providers <= built
    assert [plugin["name"] for plugin in declared["languages"]] == ["python"]
    for plugin in [*declared["providers"], *declared["languages"]]:
        assert (program / plugin["path"]).resolve() == (REPO / ".toolchain" / "bin").resolve()
        assert "version" not in plugin, "a version would make the CLI skip the plugin on a mismatch"


def test_a_component_key_follows_its_pin_and_the_go_version() -> None:
    cli = PINS.components["cli"]
    key = toolchain.component_key("cli", cli, "go1.26.8")
    assert key == toolchain.component_key("cli", cli, "go1.26.8")
    assert key != toolchain.component_key("cli", cli, "go1.26.9")
    assert key != toolchain.component_key("cli", cli.model_copy(update={"version": "3.276.1"}), "go1.26.8")


@pytest.mark.parametrize("shared", ["bridged-provider.sh", "bridged/bridged.go"])
def test_a_component_key_covers_the_shared_files_its_build_uses_and_no_other(shared: str) -> None:
    def keys() -> dict[str, str]:
        return {name: toolchain.component_key(name, c, "go1.26.8") for name, c in PINS.components.items()}

    before = keys()
    script = toolchain.TOOLCHAIN_DIR / shared
    original = script.read_bytes()
    try:
        script.write_bytes(original + b"\n")
        changed = {name for name, key in keys().items() if key != before[name]}
    finally:
        script.write_bytes(original)
    assert changed == {"hcloud", "random", "tls"}


def test_a_complete_build_is_taken_from_the_cache_without_running_anything(tmp_path: Path) -> None:
    cli = PINS.components["cli"]
    target = tmp_path / "cli" / f"{cli.version}-{toolchain.component_key('cli', cli, 'go-test')}"
    target.mkdir(parents=True)
    (target / build.COMPLETE_MARK).write_text("")
    assert build.build_component("cli", cli, tmp_path, "go-test") == build.Built("cli", target, None)


def test_a_bad_pin_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError, match=r"components\.cli\.version"):
        cli = {"version": "latest", "upstream": "a@v1", "binaries": ["p"]}
        toolchain.Pins.model_validate({"components": {"cli": cli}})


def test_the_cli_environment_allows_nothing_from_outside() -> None:
    env = toolchain.cli_environment(backend_url="file:///tmp/x")
    for flag in ("IGNORE_AMBIENT_PLUGINS", "DISABLE_AUTOMATIC_PLUGIN_ACQUISITION", "SKIP_UPDATE_CHECK"):
        assert env[f"PULUMI_{flag}"] == "true"
    assert env["PULUMI_DISABLE_REGISTRY_RESOLVE"] == "true"
    assert env["PULUMI_BACKEND_URL"] == "file:///tmp/x"
