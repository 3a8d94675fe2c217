"""A pull request's preview that holds no secret: each stack's redacted state (`fleet.redact`) on a
throwaway backend, under a throwaway passphrase.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from fleet import stacks


def throwaway_workspace(workspace: stacks.Workspace, directory: Path) -> stacks.Workspace:
    """`workspace` on a new file backend in `directory`, with a passphrase drawn here and kept nowhere."""
    (directory / "state").mkdir(parents=True, mode=0o700)
    return workspace.model_copy(
        update={
            "backend_url": f"file://{directory / 'state'}",
            "secrets_provider": "passphrase",
            "passphrase": SecretStr(secrets.token_urlsafe(32)),
        }
    )


def import_redacted(workspace: stacks.Workspace, stack: str, export: Mapping[str, Any]) -> None:
    """`stack` on the workspace's backend as the redacted export holds it: the export's secrets (all
    markers) are encrypted again with the stack's own secrets provider."""
    from pulumi import automation

    handle = stacks.open_stack(workspace, stack, create=True)
    own = handle.export_stack().deployment or {}
    deployment = {**export["deployment"], "secrets_providers": own.get("secrets_providers")}
    handle.import_stack(automation.Deployment(version=export.get("version"), deployment=deployment))
