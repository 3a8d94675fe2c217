"""A stack's state with every secret replaced: taken from a real stack through the real CLI, and a
preview against the redacted copy, on a throwaway backend and passphrase, sees no change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pulumi import automation

import toolchain
from fleet import sandbox, stacks
from fleet.redact import RedactionError, redact
from tests.engine.test_engine import STACK, Cli
from tests.engine.test_remote_command import PROGRAM

pytestmark = pytest.mark.pulumi_cli


@pytest.fixture(scope="module")
def stack_with_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Cli, dict[str, object]]:
    cli = Cli(tmp_path_factory.mktemp("real"), program=PROGRAM)
    cli.run("stack", "init", STACK)
    cli.run("config", "set", "keys", "true")
    cli.run("up", "--yes")
    return cli, json.loads(cli.run("stack", "export", "--show-secrets").stdout)


def _secret_strings(export: dict[str, object]) -> set[str]:
    found: set[str] = set()

    def walk(value: object) -> None:
        if isinstance(value, dict) and "plaintext" in value:
            plain = json.loads(value["plaintext"])  # type: ignore[arg-type]
            if isinstance(plain, str):
                found.add(plain)
            walk(plain)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(export)
    return found


def test_no_secret_is_left_and_equal_secrets_stay_equal(stack_with_keys: tuple[Cli, dict[str, object]]) -> None:
    _, export = stack_with_keys
    secrets = _secret_strings(export)
    assert any("PRIVATE KEY" in secret for secret in secrets)
    redacted = redact(export)
    text = json.dumps(redacted)
    for secret in secrets:
        assert secret not in text and json.dumps(secret)[1:-1] not in text
    resources = {r["urn"].rsplit("::", 1)[-1]: r for r in redacted["deployment"]["resources"]}  # type: ignore[index]
    key = json.loads(resources["ed25519"]["outputs"]["privateKeyOpenssh"]["plaintext"])
    exported = json.loads(resources[f"engine-remote-{STACK}"]["outputs"]["ed25519"]["plaintext"])
    assert key.startswith("[redacted ") and key in exported
    # Everything not secret is kept: ids, public keys, the deployment's shape.
    assert resources["ed25519"]["id"] == next(
        r["id"]
        for r in export["deployment"]["resources"]
        if r["urn"].endswith("::ed25519")  # type: ignore[index]
    )
    assert "secrets_providers" not in redacted["deployment"]  # type: ignore[operator]


def test_an_export_with_its_secrets_encrypted_is_refused(stack_with_keys: tuple[Cli, dict[str, object]]) -> None:
    cli, _ = stack_with_keys
    encrypted = json.loads(cli.run("stack", "export").stdout)
    with pytest.raises(RedactionError, match="--show-secrets"):
        redact(encrypted)


def test_a_preview_of_the_redacted_copy_sees_no_change(
    stack_with_keys: tuple[Cli, dict[str, object]], tmp_path: Path
) -> None:
    _, export = stack_with_keys
    workspace = sandbox.throwaway_workspace(
        stacks.Workspace(program_dir=PROGRAM, stacks_dir=tmp_path / "stacks", pulumi_root=toolchain.LINK), tmp_path
    )
    sandbox.import_redacted(workspace, STACK, redact(export))
    handle = stacks.open_stack(workspace, STACK)
    handle.set_config("keys", automation.ConfigValue("true"))
    result = handle.preview(expect_no_changes=True, color="never")
    assert result.change_summary == {"same": len(export["deployment"]["resources"]) - 1}  # type: ignore[index]
