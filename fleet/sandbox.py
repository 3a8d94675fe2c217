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

import os
import pwd
import secrets
import shlex
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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


def apply_packet_filter(user: str) -> None:
    """`packet_filter(user)` in this network namespace, each rule once however often it is applied."""
    for rule in packet_filter(user):
        check = [rule[0], "-C", rule[2], *rule[4:]]
        if subprocess.run(check, capture_output=True, check=False).returncode != 0:
            subprocess.run(rule, check=True)


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


def confine(workspace: stacks.Workspace, user: str) -> stacks.Workspace:
    """`workspace` with its program run as `user` (this process must be root): the interpreter of the
    program's own virtualenv, confined, and the packet filter that leaves `user` only loopback."""
    if os.geteuid() != 0:
        raise PermissionError("confining a program needs root: only root can run it as another user")
    if workspace.stacks_dir is None:
        raise ValueError("a confined program needs a stacks directory away from it")
    program_venv = workspace.program_dir / ".venv"
    if not (program_venv / "bin" / "python").exists():
        raise FileNotFoundError(f"{program_venv}: the program's virtualenv is not installed")
    apply_packet_filter(user)
    interpreter = confined_virtualenv(program_venv, workspace.stacks_dir / "confined-interpreter", user)
    return workspace.model_copy(update={"confined_virtualenv": interpreter})


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
    markers) are encrypted again with the stack's own secrets provider. A failure is a failed stack
    operation (fleet.failures)."""
    from pulumi import automation

    with stacks.operation(workspace, stack, "import", create=True) as (handle, _):
        own = handle.export_stack().deployment or {}
        deployment = {**export["deployment"], "secrets_providers": own.get("secrets_providers")}
        handle.import_stack(automation.Deployment(version=export.get("version"), deployment=deployment))
