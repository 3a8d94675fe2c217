"""The real engine on this machine: the pinned CLI, our language host and the providers, offline.

Every call goes through `.toolchain/bin/pulumi` on a file backend with the settings every other caller
uses (`toolchain.cli_environment`); nothing is mocked. A stand-in of any part fails here: the binaries
must be the ELF programs built into the cache, the providers those installed in the CLI's plugin
cache, and the CLI's own output is what is checked.
"""

from __future__ import annotations

import contextlib
import filecmp
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pulumi import automation

import toolchain
from fleet import stacks
from fleet.failures import StackOperationFailed
from toolchain import plugins

REPO = Path(__file__).resolve().parents[2]
PROGRAM = Path(__file__).parent / "program"
PACK = Path(__file__).parent / "pack"
STACK = "check"
PINS = toolchain.Pins.load()
# Scripts the SDK ships beside the language host; every other binary is compiled here.
SCRIPTS = {"pulumi-language-python-exec", "pulumi-resource-pulumi-python"}


class Cli:
    """The CLI in a stack's own workspace directory (its settings file is written there), on a fresh
    file backend: how the provisioner and the fleet tooling run the program too."""

    def __init__(self, tmp_path: Path, program: Path = PROGRAM) -> None:
        (tmp_path / "state").mkdir()
        self.stacks_dir = tmp_path / "stacks"
        self.work_dir = self.stacks_dir / STACK
        self.work_dir.mkdir(parents=True)
        stacks.write_project_file(program, self.work_dir)
        self.env = {
            **toolchain.cli_environment(pulumi_home=tmp_path / "home", backend_url=f"file://{tmp_path / 'state'}"),
            "PULUMI_CONFIG_PASSPHRASE": "engine-check",
        }

    def run(self, *args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(toolchain.cli_path()), *args, "--non-interactive"],
            input=stdin,
            cwd=self.work_dir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if check and result.returncode != 0:
            command = " ".join(args)
            raise AssertionError(f"pulumi {command} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        # Nothing may come from PATH, and no interpreter may die noisily at exit.
        for text in (result.stdout, result.stderr):
            assert "from $PATH" not in text and "Exception ignored" not in text, text
        return result


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    cli = Cli(tmp_path)
    cli.run("stack", "init", STACK)
    return cli


def test_the_cli_and_every_plugin_are_the_binaries_built_here() -> None:
    version = subprocess.run([str(toolchain.cli_path()), "version"], capture_output=True, text=True, check=True)
    assert version.stdout.strip() == f"v{PINS.components['cli'].version}"
    cache = toolchain.cache_root().resolve()
    for name, component in PINS.components.items():
        for binary in component.binaries:
            path = toolchain.built(binary).resolve()
            assert cache in path.parents, f"{binary} of {name} is not from the toolchain cache: {path}"
            if binary not in SCRIPTS:
                assert path.read_bytes()[:4] == b"\x7fELF", f"{binary} is not a compiled program"
    # The language host beside the CLI itself, symbolic links resolved: where the CLI looks for it;
    # no provider there, so that directory on PATH is a stock installation.
    beside = {path.name for path in toolchain.cli_path().resolve().parent.iterdir()}
    assert "pulumi-language-python" in beside and not any(toolchain.is_provider(name) for name in beside)
    for plugin in plugins.requested(PINS):
        installed = plugin.installed(toolchain.plugin_cache())
        assert filecmp.cmp(installed, plugin.build, shallow=False), f"{installed} is not the build (run setup.sh)"


def test_providers_come_from_the_plugin_cache_and_the_language_host_from_beside_the_cli_never_from_path(
    cli: Cli, tmp_path: Path
) -> None:
    stray = tmp_path / "stray"
    stray.mkdir()
    for binary in ("pulumi-resource-random", "pulumi-language-python"):
        (stray / binary).write_text(f"#!/bin/sh\ntouch {tmp_path / 'stray-ran'}\nexit 1\n")
        (stray / binary).chmod(0o755)
    cli.env["PATH"] = f"{stray}:/usr/bin:/bin"
    # The CLI's own account of where it found each plugin (sdk/go/common/workspace/plugins.go).
    logged = cli.run("preview", "-v=6", "--logtostderr").stderr
    assert not (tmp_path / "stray-ran").exists()
    random = next(plugin for plugin in plugins.requested(PINS) if plugin.name == "random")
    assert f"found in cache at {random.installed(Path(cli.env['PULUMI_HOME']) / 'plugins')}" in logged
    assert f"found next to current executable {toolchain.cli_path().resolve().parent}/pulumi-language-python" in logged
    assert str(stray) not in logged


@contextlib.contextmanager
def proxy_probe() -> Iterator[tuple[str, list[bytes]]]:
    """An HTTP(S) proxy address that records the first bytes of every request made through it and
    refuses it."""
    requests: list[bytes] = []
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = server.accept()
                with connection:
                    requests.append(connection.recv(200))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}", requests
    finally:
        server.shutdown(socket.SHUT_RDWR)
        server.close()
        thread.join(timeout=10)


def test_a_missing_plugin_fails_naming_it_and_nothing_is_downloaded(cli: Cli, tmp_path: Path) -> None:
    bare = tmp_path / "bare-home"
    bare.mkdir()
    with proxy_probe() as (proxy, requests):
        cli.env |= {"PULUMI_HOME": str(bare), "HTTPS_PROXY": proxy, "HTTP_PROXY": proxy, "NO_PROXY": ""}
        # The stack selection lives in the home too.
        result = cli.run("preview", "--stack", STACK, check=False)
    assert result.returncode != 0
    version = PINS.components["random"].version
    assert f"no resource plugin 'pulumi-resource-random' found in the workspace at version v{version}" in result.stdout
    assert requests == [], "the CLI tried to fetch a plugin"
    assert not (bare / "plugins").exists()


def test_preview_up_a_second_up_that_changes_nothing_and_destroy(cli: Cli) -> None:
    cli.run("config", "set", "length", "20")
    preview = json.loads(cli.run("preview", "--json").stdout)
    # urn:pulumi:STACK::PROJECT::TYPE::NAME
    planned = {tuple(step["urn"].split("::")[2:]): step["op"] for step in preview["steps"]}
    assert planned == {
        ("pulumi:pulumi:Stack", "engine-check-check"): "create",
        ("random:index/randomPassword:RandomPassword", "password"): "create",
        ("random:index/randomPet:RandomPet", "pet"): "create",
    }

    cli.run("up", "--yes")
    outputs = json.loads(cli.run("stack", "output", "--json", "--show-secrets").stdout)
    assert len(outputs["password"]) == 20 and outputs["password_length"] == 20
    assert len(outputs["pet"].split("-")) == 2
    shown = json.loads(cli.run("stack", "output", "--json").stdout)
    assert shown["password"] == "[secret]"

    state = json.loads(cli.run("stack", "export").stdout)["deployment"]
    resources = state["resources"]
    providers = {r["type"]: r["inputs"].get("version") for r in resources if r["type"].startswith("pulumi:providers:")}
    assert providers == {"pulumi:providers:random": PINS.components["random"].version}
    password = next(r for r in resources if r["type"] == "random:index/randomPassword:RandomPassword")
    assert password["outputs"]["result"]["4dabf18193072939515e22adb298388d"] == "1b47061264138c4ac30d75fd1eb44270"

    again = cli.run("up", "--yes", "--expect-no-changes")
    assert json.loads(cli.run("stack", "output", "--json", "--show-secrets").stdout) == outputs, again.stdout

    cli.run("destroy", "--yes")
    left = json.loads(cli.run("stack", "export").stdout)["deployment"].get("resources") or []
    assert left == []


def test_the_hcloud_provider_reads_and_reports_an_unreachable_endpoint(cli: Cli) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]  # closed again once the block ends: nothing listens
    cli.run("config", "set", "read_hcloud", "true")
    cli.run("config", "set", "--secret", "hcloud:token", "t" * 64)
    cli.run("config", "set", "hcloud:endpoint", f"http://127.0.0.1:{closed_port}/v1")
    result = cli.run("preview", check=False)
    assert result.returncode != 0
    text = result.stdout + result.stderr
    assert "hcloud:index/getServers:getServers" in text and "connection refused" in text, text


def test_a_preview_runs_the_policy_pack_saves_its_plan_where_asked_and_stops_on_a_violation(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("PULUMI_HOME", "PULUMI_CONFIG_PASSPHRASE"):
        monkeypatch.setenv(name, cli.env[name])
    logs = tmp_path / "logs"
    workspace = stacks.Workspace(
        program_dir=PROGRAM,
        policy_pack=PACK,
        backend_url=cli.env["PULUMI_BACKEND_URL"],
        stacks_dir=cli.stacks_dir,
        logs_dir=logs,
    )
    plan = tmp_path / "plans" / "wave-1" / "check.plan.json"
    events: list[automation.EngineEvent] = []
    stacks.preview(workspace, STACK, events.append, plan=plan)
    assert json.loads(plan.read_text())["resourcePlans"], "the saved plan names no resource"
    seen = [event.policy_event for event in events if isinstance(event, automation.EngineEvent) and event.policy_event]
    assert [(e.policy_name, e.enforcement_level) for e in seen] == [("pet-seen", "advisory")]
    assert list(logs.iterdir()) == [], "a preview that passed keeps no log"

    # Writing the config reads the stack's whole config, secrets in clear: none of that is logged.
    secret = "never-in-a-log-4f9d2c"
    cli.run("config", "set", "--secret", "token", secret)
    with pytest.raises(StackOperationFailed) as refused:
        stacks.preview(workspace, STACK, events.append, config={"engine-check:length": "100"})
    [log] = logs.iterdir()
    assert str(refused.value).splitlines() == [
        "error: pulumi preview failed on stack check",
        "  random:index:RandomPassword (password):",
        "    [mandatory] bounded-password: Passwords are at most 64 characters.",
        "    a password longer than 64 characters",
        "  pulumi:pulumi:Stack (engine-check-check):",
        "    [mandatory] stack-bounded-password: The stack's passwords are at most 48 characters.",
        "    the stack holds a password longer than 48 characters",
        "  error: preview failed",
        f"full log: {log}",
    ]
    text = log.read_text()
    assert log.stat().st_mode & 0o777 == 0o600
    assert text.startswith("$ pulumi preview\nPreviewing update (check):\n") and "length : 100" in text, text
    assert secret not in text


def test_an_up_is_stopped_by_a_stack_policy_before_anything_is_created(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("PULUMI_HOME", "PULUMI_CONFIG_PASSPHRASE"):
        monkeypatch.setenv(name, cli.env[name])
    workspace = stacks.Workspace(
        program_dir=PROGRAM, policy_pack=PACK, backend_url=cli.env["PULUMI_BACKEND_URL"], stacks_dir=cli.stacks_dir
    )
    # Within the resource rule (64), beyond the stack rule (48), which the engine judges at the very end
    # of an `up`: only the preview before it keeps the password from being created.
    with pytest.raises(automation.errors.CommandError, match="a password longer than 48 characters"):
        stacks.up(workspace, STACK, config={"engine-check:length": "50"})
    resources = json.loads(cli.run("stack", "export").stdout)["deployment"].get("resources") or []
    assert [r["type"] for r in resources if not r["type"].startswith("pulumi:")] == []

    outputs = stacks.up(workspace, STACK, config={"engine-check:length": "40"})
    assert outputs["password_length"] == 40


def test_a_failed_up_ends_with_the_cli_errors_the_stack_and_its_log(cli: Cli, tmp_path: Path) -> None:
    """`python -m fleet up` as an operator runs it: the preview passes, the provider refuses during `up`."""
    cli.run("config", "set", "length_after_pet", "true")
    cli.run("config", "set", "length", stdin="-5")
    logs = tmp_path / "logs"
    command = ["up", "--stack", STACK, "--program-dir", str(cli.work_dir), "--policy-pack", str(PACK)]
    ran = subprocess.run(
        [sys.executable, "-m", "fleet", *command, "--logs", str(logs)],
        cwd=REPO,
        env={**os.environ, **cli.env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert ran.returncode == 1, ran.stdout + ran.stderr
    [log] = logs.iterdir()
    assert log.name.startswith(f"{STACK}-") and log.name.endswith("-up.log")
    said = ran.stderr.splitlines()
    problem = "    error: random:index/randomPassword:RandomPassword resource 'password' has a problem: "
    assert said[:2] == ["error: pulumi up failed on stack check", "  random:index:RandomPassword (password):"], said
    assert all(line.startswith(problem) and "got: -5" in line for line in said[2:4]), said
    # The program may see its resource monitor go before it ends (a race of the engine's shutdown).
    assert said[4:-1] in ([], ["  error: Resource monitor has terminated, shutting down"]), said
    assert said[-1] == f"full log: {log}"
    assert "Traceback" not in ran.stderr
    # The log holds everything the CLI printed: the preview, then the up with its Diagnostics.
    text = log.read_text()
    logged = iter(text.splitlines())
    assert all(line in logged for line in ran.stdout.splitlines()), "the log misses some of the CLI's output"
    assert text.index("$ pulumi preview") < text.index("$ pulumi up") < text.index("Diagnostics:")
