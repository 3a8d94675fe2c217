"""A worker clearing a stack that an operation left unfinished writes no secret in clear anywhere, also
when the import of the cleared state fails midway: the real CLI on a self-managed backend, the
provisioner's own AutomationRunner, the state holding a secret and a pending operation."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import pytest
from pulumi.automation import Stack

import toolchain
from fleet import stacks
from fleet.failures import StackOperationFailed
from provisioner.runner import AutomationRunner
from provisioner.sessions import PROCESSES
from provisioner.settings import ProvisionerSettings
from provisioner.stack_locks import open_bucket, stack_locks

SECRET = "gateway-password-7f3c9a1e"
STACK = "customer-acme"
SERVER = "hcloud:index/server:Server"
SERVER_URN = f"urn:pulumi:{STACK}::clawhosters::clawhosters:index:CustomerInstance${SERVER}::claw-acme"
# When the flag file exists, the import fails midway leaving its own lock, as a self-managed backend
# keeps it (pkg/backend/diy/lock.go): the backend then refuses the import. The real CLI runs as the
# same process, so the lock names it.
REFUSING_CLI = """#!/bin/sh
case " $* " in *" stack import "*)
  [ -e "$REFUSE" ] && mkdir -p "$LOCKS" && printf '{"pid": %d, "username": "%s", "hostname": "%s", "timestamp": "%s"}' \
    $$ "$(id -un)" "$(uname -n)" "$(date -u +%FT%TZ)" > "$LOCKS/held.json";;
esac
exec "$REAL" "$@"
"""


def _plaintext_files(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file() and SECRET.encode() in path.read_bytes()]


def _pulumi(handle: Stack, *arguments: str, stdin: str | None = None) -> str:
    """The real CLI in the stack's workspace, its input and output on pipes only."""
    done = subprocess.run(
        [os.environ["REAL"], "--non-interactive", *arguments, "--stack", STACK],
        input=stdin,
        cwd=handle.workspace.work_dir,
        env={**os.environ, **handle.workspace.env_vars},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def test_clearing_a_stack_leaves_no_secret_in_clear_even_when_the_import_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend, scratch, refuse = tmp_path / "backend", tmp_path / "tmp", tmp_path / "refuse"
    backend.mkdir()
    scratch.mkdir()
    locks = backend / ".pulumi" / "locks" / "organization" / "clawhosters" / STACK
    cli = tmp_path / "pulumi"
    cli.write_text(REFUSING_CLI)
    cli.chmod(0o755)
    for name, value in {
        # Every temporary file of this process and its CLIs lands here, where it is looked for.
        "TMPDIR": str(scratch),
        "PULUMI_CONFIG_PASSPHRASE": "recovery-test",
        "HCLOUD_TOKEN": "h" * 64,
        "CLAW_PULUMI_BINARY": str(cli),
        "REAL": str(toolchain.LINK.resolve() / "bin" / "pulumi"),
        "LOCKS": str(locks),
        "REFUSE": str(refuse),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(tempfile, "tempdir", None)
    settings = ProvisionerSettings.from_env(
        {
            "CLAW_WEBHOOK_SECRET": "whsec_0123456789abcdef",
            "CLAW_OPERATOR_TOKEN": "token-0123456789abcdef",
            "CLAW_PLATFORM": '{"provisioner_cidrs": ["203.0.113.0/28"]}',
            "CLAW_STATE_DIR": str(tmp_path / "state"),
            "CLAW_PULUMI_BACKEND_URL": f"file://{backend}",
        }
    )
    runner = AutomationRunner(settings)
    handle = stacks.open_stack(runner.workspaces["default"], STACK, create=True)
    # The stack's state: the secret (encrypted by the CLI as it stores it), and the pending operation
    # of a delete cut off in flight, as a killed CLI leaves it in the checkpoint.
    deployment = json.loads(_pulumi(handle, "stack", "export"))["deployment"]
    secret = {"4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270", "plaintext": json.dumps(SECRET)}
    root = {"urn": f"urn:pulumi:{STACK}::clawhosters::pulumi:pulumi:Stack::clawhosters-{STACK}", "custom": False}
    deployment["resources"] = [{**root, "type": "pulumi:pulumi:Stack", "outputs": {"gateway_password": secret}}]
    _pulumi(handle, "stack", "import", stdin=json.dumps({"version": 3, "deployment": deployment}))
    checkpoint_file = backend / ".pulumi" / "stacks" / "clawhosters" / f"{STACK}.json"
    checkpoint = json.loads(checkpoint_file.read_text())
    pending = {"resource": {"urn": SERVER_URN, "custom": True, "type": SERVER}, "type": "deleting"}
    checkpoint["checkpoint"]["latest"]["pending_operations"] = [pending]
    checkpoint_file.write_text(json.dumps(checkpoint))
    assert _plaintext_files(tmp_path) == [], "the backend keeps the secret encrypted"

    # The CLIs the clearing starts, as a worker names them in the stack's holder record.
    clis: list[str] = []
    monkeypatch.setattr(PROCESSES, "on_cli", lambda pid: clis.append(f"{os.uname().nodename}:{pid}"))
    refuse.touch()
    with pytest.raises(StackOperationFailed, match="the stack is currently locked") as failed:
        runner.clear_stale_lock("default", "acme", lambda _line: None, [])
    # The import is the clearing's own command: its failure, and the log that keeps what the CLI said.
    assert failed.value.headline == f"pulumi stack import failed on stack {STACK}"
    assert failed.value.log is not None and failed.value.log.is_relative_to(tmp_path / "state" / "logs")
    assert _plaintext_files(tmp_path) == [], "nothing in clear, in the temporary directory, workspace, logs or backend"

    refuse.unlink()
    [left] = stack_locks(open_bucket(f"file://{backend}"), "clawhosters", STACK)
    assert left.holder in clis, "the failed import left its own lock"
    assert runner.clear_stale_lock("default", "acme", lambda _line: None, clis) == [
        f"its stack lock ({left})",
        f"pending operations: {SERVER_URN}",
    ]
    assert _plaintext_files(tmp_path) == []
    shown = json.loads(_pulumi(handle, "stack", "export", "--show-secrets"))["deployment"]
    assert "pending_operations" not in shown
    outputs = shown["resources"][0]["outputs"]
    assert json.loads(outputs["gateway_password"]["plaintext"]) == SECRET, "the secret came through intact"
