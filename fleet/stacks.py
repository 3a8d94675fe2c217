"""The one way this repository drives a stack through the Automation API: list, open, preview, up,
refresh, destroy.

Every preview and up runs with the policy pack. Each operation is a `fleet.failures.Operation`: its
CLI output goes to a log file of its own in `Workspace.logs_dir` (kept when it fails), and a failed
CLI command raises `fleet.failures.StackOperationFailed`, naming the stack, the CLI's errors and that
log. Every CLI command runs with bounded output (`fleet.cli`). Call these from a worker process of
`fleet.workers` or of the provisioner: the Automation API keeps process-global state.
The CLI is the pinned toolchain (`toolchain`, built by setup.sh), run offline with the providers in
its plugin cache (`toolchain.cli_environment`); the backend and passphrase come from the
environment (PULUMI_BACKEND_URL, PULUMI_CONFIG_PASSPHRASE) unless given here.
"""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, DirectoryPath, Field, SecretStr, SkipValidation, field_validator

import toolchain
from components.safety import GRACEFUL_RESIZE_ENV
from config.loader import DNS_TOKEN_VARIABLE
from fleet.cli import BoundedCommand, CliObserver
from fleet.failures import LoggedCommand, Operation
from fleet.resize import graceful_resize

if TYPE_CHECKING:
    from pulumi.automation import EngineEvent, Stack

REPO = Path(__file__).resolve().parent.parent
CUSTOMER_PREFIX = "customer-"


class StackListError(RuntimeError):
    """The backend could not say which stacks exist: nothing may be reported as fine."""


class Workspace(BaseModel):
    """Where the program and the judging policy pack live, and which backend holds the stacks."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    program_dir: DirectoryPath = REPO
    # In a pull request this is the base branch's pack, so a change cannot weaken its own judge.
    policy_pack: DirectoryPath = REPO / "policy"
    backend_url: str | None = None
    secrets_provider: str | None = None
    # The stacks' passphrase, when not the process's PULUMI_CONFIG_PASSPHRASE (a pull request's
    # preview draws a throwaway one for its redacted copies: fleet.sandbox).
    passphrase: SecretStr | None = None
    # An untrusted program's interpreter, confined (fleet.sandbox); needs stacks_dir.
    confined_virtualenv: Path | None = None
    # Where each stack's workspace lives (its settings file), when not beside the program: the
    # provisioner keeps them in its state directory, never in the checkout.
    stacks_dir: Path | None = None
    # A directory with a `bin/pulumi` to run: the pinned toolchain unless a caller wraps it.
    pulumi_root: Path = toolchain.LINK
    # How long a server may take to shut down gracefully before a resize (fleet.resize).
    shutdown_seconds: float = Field(default=180.0, gt=0)
    # The Hetzner project's token the stack's operations use, when not the process's HCLOUD_TOKEN
    # (the provisioner spreads customers over several projects).
    hetzner_token: SecretStr | None = None
    # The DNS project's token, which writes the stack's records (`platform:dns_zone`), when not the
    # process's HCLOUD_DNS_TOKEN.
    dns_token: SecretStr | None = None
    # Where each operation's CLI output is written (`<stack>-<time>-<operation>.log`), none if unset.
    logs_dir: Path | None = None
    # Hears of each CLI process the stack's operations start (the provisioner's fencing).
    cli_observer: SkipValidation[CliObserver | None] = None

    @field_validator("program_dir", "policy_pack")
    @classmethod
    def _absolute(cls, path: Path) -> Path:
        # The CLI resolves a relative pack path against the program's directory: in a pull request
        # that would quietly be the pull request's own pack.
        return path.resolve()

    def env_vars(self) -> dict[str, str]:
        # `up` below shuts a server down gracefully before resizing it (fleet.resize), so the program
        # may plan a resize of a running server.
        variables = {**toolchain.cli_environment(backend_url=self.backend_url), GRACEFUL_RESIZE_ENV: "1"}
        if self.hetzner_token is not None:
            variables["HCLOUD_TOKEN"] = self.hetzner_token.get_secret_value()
        if self.dns_token is not None:
            variables[DNS_TOKEN_VARIABLE] = self.dns_token.get_secret_value()
        if self.passphrase is not None:
            variables["PULUMI_CONFIG_PASSPHRASE"] = self.passphrase.get_secret_value()
        return variables


def list_customer_stacks(workspace: Workspace, list_names: Callable[[Workspace], list[str]] | None = None) -> list[str]:
    """Every customer stack in the backend, sorted; raises StackListError when the backend cannot tell."""
    try:
        names = (list_names or backend_stack_names)(workspace)
    except Exception as error:
        raise StackListError(f"could not list the stacks: {str(error).strip() or type(error).__name__}") from error
    return sorted(name for name in names if name.startswith(CUSTOMER_PREFIX))


def backend_stack_names(workspace: Workspace) -> list[str]:
    """Every stack the workspace's backend holds, through the workspace's CLI."""
    from pulumi import automation

    local = automation.LocalWorkspace(
        work_dir=str(workspace.program_dir),
        pulumi_command=BoundedCommand(str(workspace.pulumi_root), workspace.cli_observer),
        env_vars=workspace.env_vars(),
    )
    return [summary.name for summary in local.list_stacks(include_all=True)]


def write_project_file(program_dir: Path, work_dir: Path, confined: Path | None = None) -> None:
    """The program's Pulumi.yaml, for a workspace directory away from the program: the file as the
    program declares it, with its entry point and virtualenv made absolute.

    `confined`: the program is not trusted (a pull request's), and runs in that virtualenv
    (fleet.sandbox). Only its project name is taken: any other setting, a `plugins:` path above all,
    could make the CLI run the pull request's code with the CLI's own rights."""
    import yaml

    declared = yaml.safe_load((program_dir / "Pulumi.yaml").read_text())
    if confined is not None:
        name = declared.get("name") if isinstance(declared, dict) else None
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ValueError(f"{program_dir / 'Pulumi.yaml'}: `name` must be a plain project name")
        runtime = {"name": "python", "options": {"toolchain": "pip", "virtualenv": str(confined)}}
        declared = {"name": name, "runtime": runtime}
    else:
        # The virtualenv is relative to the project file, which now lives elsewhere.
        options = declared["runtime"].setdefault("options", {})
        options["virtualenv"] = str((program_dir / options.get("virtualenv", ".venv")).resolve())
    declared["main"] = str(program_dir)
    (work_dir / "Pulumi.yaml").write_text(yaml.safe_dump(declared, sort_keys=False))


def open_stack(workspace: Workspace, stack: str, *, create: bool = False, operation: Operation | None = None) -> Stack:
    """The stack's handle; with `operation`, its CLI commands are that operation's (fleet.failures)."""
    from pulumi import automation

    work_dir = workspace.program_dir
    if workspace.stacks_dir is not None:
        work_dir = workspace.stacks_dir / stack
        work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_project_file(workspace.program_dir, work_dir, workspace.confined_virtualenv)
    options = automation.LocalWorkspaceOptions(
        work_dir=str(work_dir),
        pulumi_command=LoggedCommand(str(workspace.pulumi_root), operation, workspace.cli_observer),
        env_vars=workspace.env_vars(),
        secrets_provider=workspace.secrets_provider,
    )
    select = automation.create_or_select_stack if create else automation.select_stack
    return select(stack_name=stack, work_dir=str(work_dir), opts=options)


@contextlib.contextmanager
def operation(
    workspace: Workspace, stack: str, name: str, *, create: bool = False
) -> Iterator[tuple[Stack, Operation]]:
    """The stack opened for one operation called `name`, logged and reported as fleet.failures says."""
    with Operation(stack, name, workspace.logs_dir) as running:
        yield open_stack(workspace, stack, create=create, operation=running), running


def export_state(handle: Stack) -> dict[str, Any]:
    """The stack's state (`deployment`), every secret in it still encrypted by the stack's secrets
    provider: the SDK's `export_stack` asks the CLI for `--show-secrets`."""
    exported: dict[str, Any] = json.loads(_cli(handle, "stack", "export", "--stack", handle.name))
    return dict(exported.get("deployment") or {})


def import_state(handle: Stack, deployment: Mapping[str, Any]) -> None:
    """Replace the stack's state with `deployment` (as `export_state` gave it, secrets encrypted), fed
    to the CLI on its stdin: the SDK's `import_stack` writes it to a temporary file first and removes
    the file only when the import succeeds. (The CLI drops pending operations on import.)"""
    state = json.dumps({"version": 3, "deployment": deployment})
    _cli(handle, "stack", "import", "--stack", handle.name, stdin=state)


def _cli(handle: Stack, *arguments: str, stdin: str | None = None) -> str:
    """The stack's CLI, run as the SDK runs it (its workspace's command, environment and directory: the
    command of the operation in progress, bounded, its process observed), `stdin` on its standard
    input; its stdout."""
    workspace = handle.workspace
    command = workspace.pulumi_command
    if not isinstance(command, BoundedCommand):
        raise TypeError(f"{handle.name}: not opened by fleet.stacks.open_stack")
    home = {"PULUMI_HOME": workspace.pulumi_home} if workspace.pulumi_home else {}
    return command.run(list(arguments), workspace.work_dir, {**home, **workspace.env_vars}, stdin=stdin).stdout


def preview(
    workspace: Workspace,
    stack: str,
    on_event: Callable[[EngineEvent], None],
    plan: Path | None = None,
    on_output: Callable[[str], None] | None = None,
    config: Mapping[str, str] | None = None,
) -> None:
    """Preview with the policy pack; `plan` saves the update plan that `up` can be held to.
    `config`, when given, becomes the stack's whole config first (as for `up`)."""
    with operation(workspace, stack, "preview") as (handle, running):
        if config is not None:
            write_config(handle, config)
        _preview(handle, workspace, running.watch(on_event), plan, on_output)


def refresh(
    workspace: Workspace,
    stack: str,
    *,
    config: Mapping[str, str] | None = None,
    on_output: Callable[[str], None] | None = None,
) -> None:
    """Bring the stack's state to what the cloud has, so the next preview's diff shows what was changed
    outside Pulumi (a firewall rule added in the console) and its `up` puts it back. A refresh changes
    no resource, only the state; the program does not run. `config` as for `up`."""
    with operation(workspace, stack, "refresh") as (handle, running):
        if config is not None:
            write_config(handle, config)
        handle.refresh(on_output=on_output, on_event=running.watch(), color="never", suppress_outputs=True)


def destroy(
    workspace: Workspace, stack: str, *, on_output: Callable[[str], None] | None = None, create: bool = False
) -> None:
    """Delete the stack's resources; the stack itself stays (with `create`, one that never existed is made)."""
    with operation(workspace, stack, "destroy", create=create) as (handle, running):
        handle.destroy(on_output=on_output, on_event=running.watch(), color="never")


def write_config(handle: Stack, config: Mapping[str, str]) -> None:
    """Make the stack's config exactly `config`: keys it does not name are removed."""
    from pulumi import automation

    # set_all_config only adds and updates.
    stale = sorted(set(handle.get_all_config()) - set(config))
    if stale:
        handle.remove_all_config(stale)
    handle.set_all_config({key: automation.ConfigValue(value=value) for key, value in config.items()})


def _preview(
    handle: Stack,
    workspace: Workspace,
    on_event: Callable[[EngineEvent], None],
    plan: Path | None,
    on_output: Callable[[str], None] | None,
) -> None:
    if plan is not None:
        # The CLI writes the plan with a plain create, after the whole preview: a missing directory
        # would fail the preview at its very end.
        plan.parent.mkdir(parents=True, exist_ok=True)
    handle.preview(
        on_event=on_event,
        on_output=on_output,
        policy_packs=[str(workspace.policy_pack)],
        plan=str(plan) if plan else None,
        color="never",
        diff=True,
    )


def up(
    workspace: Workspace,
    stack: str,
    *,
    plan: Path | None = None,
    config: Mapping[str, str] | None = None,
    on_output: Callable[[str], None] | None = None,
    on_event: Callable[[EngineEvent], None] | None = None,
    create: bool = False,
) -> dict[str, Any]:
    """`pulumi up` held to a plan that a preview with the policy pack produced; returns the non-secret
    outputs. Without `plan`, that preview runs first: the Automation API's `up` skips its own preview,
    and the engine judges stack policies only after every step ran, so a mandatory violation must stop
    the operation here, before anything changes. `config`, when given, becomes the stack's whole
    config: keys it does not name are removed."""
    with operation(workspace, stack, "up", create=create) as (handle, running):
        if config is not None:
            write_config(handle, config)
        events = running.watch(on_event)
        with tempfile.TemporaryDirectory(prefix="plan-") as scratch:
            if plan is None:
                plan = Path(scratch) / f"{stack}.plan.json"
                _preview(handle, workspace, events, plan, on_output)
            resize = graceful_resize(
                handle,
                plan,
                shutdown_seconds=workspace.shutdown_seconds,
                on_output=on_output,
                environment=workspace.env_vars(),
            )
            with resize:
                result = handle.up(
                    policy_packs=[str(workspace.policy_pack)],
                    plan=str(plan),
                    on_output=on_output,
                    on_event=events,
                    color="never",
                )
    return {name: output.value for name, output in result.outputs.items() if not output.secret}
