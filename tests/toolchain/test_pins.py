"""The toolchain's one source of versions, and everything that must agree with it."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

import toolchain
from toolchain import build, lock, plugins

PINS = toolchain.Pins.load()
REPO = toolchain.REPO
# What runs in production: the program, its policy pack, the provisioner, the fleet and drift tooling
# (and the toolchain that sets a host up). Everything else (tests, lab, bench) is tooling.
PRODUCTION = ("__main__.py", "components", "config", "policy", "provisioner", "fleet", "drift", "toolchain")


def imported_distributions(roots: tuple[str, ...]) -> dict[str, set[str]]:
    """The installed distributions the modules under `roots` import, with every module of this
    repository they import in turn; each with the files that import it."""
    distributions = importlib.metadata.packages_distributions()
    queue = [
        path for root in roots for path in ((REPO / root).rglob("*.py") if (REPO / root).is_dir() else [REPO / root])
    ]
    seen: set[Path] = set()
    needed: dict[str, set[str]] = {}
    while queue:
        path = queue.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                parts = module.split(".")
                if parts[0] in sys.stdlib_module_names or parts[0] == "__future__":
                    continue
                if (REPO / parts[0]).is_dir():
                    # The module and each package it sits in run on import.
                    for depth in range(1, len(parts) + 1):
                        base = REPO.joinpath(*parts[:depth])
                        queue += [file for file in (base / "__init__.py", base.with_suffix(".py")) if file.is_file()]
                    continue
                for distribution in distributions.get(parts[0], [parts[0]]):
                    needed.setdefault(lock.normalized(distribution), set()).add(str(path.relative_to(REPO)))
    return needed


def test_every_component_has_a_build_module_and_script() -> None:
    for name in PINS.components:
        assert (toolchain.TOOLCHAIN_DIR / name / "build.sh").is_file(), name
        assert (toolchain.TOOLCHAIN_DIR / name / "go.sum").is_file(), f"{name}: its Go graph must be pinned"


def test_each_sdk_is_locked_at_its_plugins_version_and_pulumi_command_has_host_key() -> None:
    runtime = lock.read(lock.RUNTIME)
    for name, component in PINS.components.items():
        if component.sdk is not None:
            assert runtime[component.sdk.package].version == component.sdk.version, name
    # host_key (the pinned SSH host key) exists from 1.1 on.
    major, minor, *_ = (int(part) for part in runtime["pulumi-command"].version.split("."))
    assert (major, minor) >= (1, 1)


@pytest.mark.parametrize("layer", [lock.RUNTIME, lock.DEV], ids=["runtime", "dev"])
def test_each_lock_is_what_lock_renders_from_its_own_resolution(layer: lock.Layer) -> None:
    assert layer.lock.read_text() == lock.render(layer, lock.read(layer)), (
        f"{layer.lock.name} was edited by hand: run `python -m toolchain lock`"
    )
    locked = lock.read(layer)
    assert all(re.fullmatch(r"[a-z0-9-]+", name) for name in locked), "names are in their PEP 503 form"
    # pip installs it in hash-checking mode: every pin names its release's files by their sha256.
    assert all(pin.hashes and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in pin.hashes) for pin in locked.values())


def test_the_tooling_lock_adds_to_the_runtime_lock_and_never_pins_its_packages_again() -> None:
    runtime, dev = lock.read(lock.RUNTIME), lock.read(lock.DEV)
    assert runtime.keys().isdisjoint(dev)
    # What only the tests and the lab use stays out of what production installs (boto3 is the
    # provisioner's own: it reads its stack locks in an S3 backend).
    assert {"pytest", "ruff"} <= dev.keys()
    assert not {"pytest", "ruff", "moto", "flask"} & runtime.keys()


def test_the_runtime_lock_holds_everything_production_code_imports() -> None:
    runtime = lock.read(lock.RUNTIME)
    needed = imported_distributions(PRODUCTION)
    assert {"pulumi", "pulumi-policy", "huey", "hcloud", "paramiko"} <= needed.keys()
    missing = {name: sorted(files) for name, files in needed.items() if name not in runtime}
    assert missing == {}, "imported in production but only in requirements-dev.txt (or nowhere)"


@pytest.mark.parametrize("program", [REPO, *(REPO / "tests" / "engine" / name for name in ("program", "remote"))])
def test_no_project_names_a_plugin_by_path(program: Path) -> None:
    # The CLI finds each provider in its plugin cache at the version the SDK asks for.
    declared = yaml.safe_load((program / "Pulumi.yaml").read_text())
    assert "plugins" not in declared
    assert declared["runtime"]["options"]["toolchain"] == "pip"


def test_each_provider_sdk_asks_for_a_plugin_built_here_at_its_components_version() -> None:
    requested = plugins.requested(PINS)
    built = {
        binary.removeprefix("pulumi-resource-"): component
        for component in PINS.components.values()
        for binary in component.binaries
        if binary.startswith("pulumi-resource-")
    }
    # pulumi-resource-pulumi-python comes with the language host, beside the CLI: no SDK asks for it.
    assert {plugin.name for plugin in requested} == built.keys() - {"pulumi-python"}
    for plugin in requested:
        component = built[plugin.name]
        assert component.sdk is not None and plugin.version == component.version == component.sdk.version
        assert plugin.build == toolchain.providers_dir() / plugin.binary


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


@pytest.mark.parametrize(
    "line",
    [
        "--index-url http://example.invalid/simple",
        "-r /etc/passwd",
        "-e git+https://example.invalid/pkg.git#egg=pkg",
        "pulumi>=3",
        "pulumi==3.272.0 --hash=md5:0123",
        "pulumi==3.272.0",
    ],
)
def test_a_pull_requests_lock_is_taken_only_as_hashed_pins(tmp_path: Path, line: str) -> None:
    # What the preview downloads for the pull request's program: its own lock, nothing it could redirect.
    source, target = tmp_path / "requirements.txt", tmp_path / "checked.txt"
    source.write_text(f"annotated-types==0.8.0 \\\n    --hash=sha256:{'a' * 64}\n{line}\n")
    assert lock.checked(source, target) == 1
    assert not target.exists()
    source.write_text(f"annotated-types==0.8.0 \\\n    --hash=sha256:{'a' * 64}\n")
    assert lock.checked(source, target) == 0
    assert lock.parse(target) == {"annotated-types": lock.Pin("0.8.0", ("a" * 64,))}
