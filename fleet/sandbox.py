"""A pull request's preview that holds no secret, and a program that can reach none.

- Each stack's state is a redacted copy (`fleet.redact`) on a throwaway backend, under a throwaway
  passphrase: the CLI holds neither the fleet's passphrase nor its backend's credentials.
- The pull request's program runs as an unprivileged user with none of the CLI's variables. The CLI,
  its providers and the policy pack are the base branch's and run as the caller; only the program's
  interpreter is confined. The language host runs a program as `<virtualenv>/bin/python`, so the
  workspace's project file names a virtualenv of ours whose `bin/python` drops to that user and
  clears the environment (`confined_virtualenv`), whatever language host the CLI finds.
- Its network is loopback only, where the engine listens: the packet filter refuses that user
  everything else (`PACKET_FILTER`, applied by the workflow or the lab).
"""

from __future__ import annotations

import pwd
import secrets
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr

from fleet import stacks

# The only variables a Pulumi Python program is given: the stack's config and which keys are secret
# (the language host sets both; everything else reaches the program as the exec script's arguments).
PROGRAM_VARIABLES = ("PULUMI_CONFIG", "PULUMI_CONFIG_SECRET_KEYS")


def packet_filter(user: str) -> list[list[str]]:
    """iptables and ip6tables commands that leave `user` only the loopback addresses, where the
    engine listens (an address of the host's own goes over `lo` too, so the rule is by address)."""
    rules = []
    for command, loopback in (("iptables", "127.0.0.0/8"), ("ip6tables", "::1/128")):
        owner = ["-m", "owner", "--uid-owner", user]
        rules.append([command, "-I", "OUTPUT", "1", *owner, "-j", "REJECT"])
        rules.append([command, "-I", "OUTPUT", "1", *owner, "-d", loopback, "-j", "ACCEPT"])
    return rules


def confined_virtualenv(program_venv: Path, directory: Path, user: str) -> Path:
    """A virtualenv at `directory` whose interpreter is `program_venv`'s, run as `user` with no
    supplementary groups, no new privileges and only PROGRAM_VARIABLES of the caller's environment."""
    account = pwd.getpwnam(user)
    interpreter = program_venv.resolve() / "bin" / "python"
    passed = " ".join(f'{name}="${{{name}:-}}"' for name in PROGRAM_VARIABLES)
    bin_dir = directory / "bin"
    bin_dir.mkdir(parents=True)
    wrapper = bin_dir / "python"
    wrapper.write_text(
        "#!/bin/sh\n"
        "# The pull request's interpreter, confined (fleet/sandbox.py).\n"
        f"exec /usr/bin/setpriv --reuid={account.pw_uid} --regid={account.pw_gid} --clear-groups --no-new-privs"
        f" --inh-caps=-all -- /usr/bin/env -i PATH={shlex.quote(str(interpreter.parent))}:/usr/bin:/bin"
        f" HOME=/nonexistent VIRTUAL_ENV={shlex.quote(str(program_venv.resolve()))} {passed}"
        f' {shlex.quote(str(interpreter))} "$@"\n'
    )
    wrapper.chmod(0o755)
    return directory


def write_confined_project_file(program_dir: Path, work_dir: Path, virtualenv: Path) -> None:
    """The project file of a workspace away from an untrusted program: only its name and its Python
    runtime, the program's directory and the confined virtualenv; no plugin path, no option of its
    own (a `plugins:` entry would make the CLI run a binary of the pull request's)."""
    declared = yaml.safe_load((program_dir / "Pulumi.yaml").read_text())
    name = declared.get("name") if isinstance(declared, dict) else None
    if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"{program_dir / 'Pulumi.yaml'}: `name` must be a plain project name")
    project = {
        "name": name,
        "main": str(program_dir.resolve()),
        "runtime": {"name": "python", "options": {"toolchain": "pip", "virtualenv": str(virtualenv)}},
    }
    (work_dir / "Pulumi.yaml").write_text(yaml.safe_dump(project, sort_keys=False))


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
