"""The one interface to Pulumi: bring a customer stack to a desired config, tear it down, remove it.

Every operation runs the CLI as a child process of the calling process, through `bin/pulumi`, with
bounded output (fleet.cli); the provisioner stops an operation by sending that child SIGINT, which
the pulumi CLI documents as "cancel gracefully": in-flight resource operations finish, the state is
written and the stack lock is released. The kernel sends the same SIGINT when the worker process dies
(`bin/pulumi`). Each CLI started is reported to `provisioner.sessions.PROCESSES`, which names it in the
stack's holder record and ends whatever it leaves behind (provisioner.jobs).

`AutomationRunner` drives this repository's program through `fleet.stacks`, the repository's one
way to use the Automation API (it needs the pulumi CLI). Its state is process-global, so each
worker process has its own runner and runs one stack operation at a time. Each stack gets its own
workspace directory in the provisioner's state dir (project file pointing at this checkout's
program, and the stack's settings file), never the checkout. The CLI's output of an operation that
fails is kept in the state dir's `logs/` (fleet.failures), and its failure names that file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, Protocol

import yaml

from config.loader import DNS_TOKEN_VARIABLE
from fleet import health, resize, rollout, stacks
from fleet.redact import redact
from provisioner.orphans import remove_orphans
from provisioner.sessions import PROCESSES
from provisioner.settings import ProvisionerSettings
from provisioner.stack_locks import open_bucket, stack_locks

REPO = Path(__file__).resolve().parent.parent
POLICY_PACK = REPO / "policy"
# bin/pulumi: the CLI, cancelled when the process that started it dies.
CLI_ROOT = Path(__file__).resolve().parent
Log = Callable[[str], None]
# What the CLI says when it exits on its own but could not delete its stack lock (a self-managed
# backend's object store down past its retries: pkg/backend/diy/lock.go, Unlock).
LOCK_LEFT_BEHIND = "there was a problem deleting the lock at"


def left_its_lock(error: BaseException) -> bool:
    """Whether a failed CLI command left its stack lock behind (then the stack needs clearing first)."""
    return LOCK_LEFT_BEHIND in str(error)


def stack_name(customer_id: str) -> str:
    return f"customer-{customer_id}"


class StackRunner(Protocol):
    """Every operation runs in `project`, the Hetzner project the customer's servers live in."""

    def up(self, project: str, customer_id: str, config: Mapping[str, str], log: Log) -> dict[str, Any]:
        """Make the stack's config exactly `config` (every other key removed), run `up` with the
        repository's policy pack, and return the stack's outputs without secrets."""
        ...

    def deploy(
        self, project: str, customer_id: str, config: Mapping[str, str], log: Log, *, refresh: bool = False
    ) -> dict[str, Any]:
        """A rollout's step: write `config` as for `up`, preview with the policy pack (a blocking finding
        raises fleet.rollout.DeployFailed), `up` held to that plan, then the health gate (DeployFailed
        when it fails); returns the stack's outputs without secrets. With `refresh` (drift repair), the
        stack's state is first refreshed from the cloud, so the plan puts back what changed outside."""
        ...

    def destroy(self, project: str, customer_id: str, log: Log) -> None:
        """Destroy the stack's resources (the stack itself stays)."""
        ...

    def remove(self, project: str, customer_id: str, log: Log) -> None:
        """Remove the stack and its settings file."""
        ...

    def redacted_state(self, project: str, customer_id: str, log: Log) -> dict[str, Any]:
        """The stack's state with every secret replaced (fleet.redact): exported with its secrets in
        memory only, redacted before it leaves this call."""
        ...

    def clear_stale_lock(self, project: str, customer_id: str, log: Log, clis: Collection[str]) -> list[str]:
        """Clear the locks and pending operations the previous operation's CLIs (`clis`, each
        `host:pid`) left on the stack, and delete what its creates cut off in flight made in Hetzner
        (provisioner.orphans); say what was cleared. A lock that names another holder (an operator's
        CLI) is never deleted: StackLockedByAnother. Called only by a worker holding the stack's lease
        after the previous operation's owner is gone."""
        ...


class StackLockedByAnother(RuntimeError):
    """The stack holds a lock that no CLI of the provisioner's operation took."""


class AutomationRunner:
    """The provisioner's stack operations, through `fleet.stacks` like every other Automation API use."""

    def __init__(self, settings: ProvisionerSettings) -> None:
        # One workspace per Hetzner project: the CLI (and a resize) runs with that project's token, and
        # with the DNS project's, which writes the customers' records.
        dns_token = settings.hetzner_dns_token(os.environ)
        self.workspaces = {
            project: stacks.Workspace(
                policy_pack=POLICY_PACK,
                backend_url=settings.pulumi_backend_url,
                secrets_provider=settings.pulumi_secrets_provider,
                stacks_dir=settings.state_dir / "stacks",
                pulumi_root=CLI_ROOT,
                hetzner_token=token,
                dns_token=dns_token,
                logs_dir=settings.state_dir / "logs",
                cli_observer=PROCESSES,
            )
            for project, token in settings.hetzner_tokens(os.environ).items()
        }
        self.backend_url = settings.pulumi_backend_url
        # A deploy's saved plans, deleted after it (they hold the stack's encrypted config).
        self.plans = settings.state_dir / "plans"

    def _operation(self, project: str, customer_id: str, name: str) -> Any:
        return stacks.operation(self.workspaces[project], stack_name(customer_id), name, create=True)

    def up(self, project: str, customer_id: str, config: Mapping[str, str], log: Log) -> dict[str, Any]:
        workspace = self.workspaces[project]
        return stacks.up(workspace, stack_name(customer_id), config=config, on_output=log, create=True)

    def deploy(
        self, project: str, customer_id: str, config: Mapping[str, str], log: Log, *, refresh: bool = False
    ) -> dict[str, Any]:
        self.plans.mkdir(parents=True, exist_ok=True, mode=0o700)
        with tempfile.TemporaryDirectory(prefix="deploy-", dir=self.plans) as plans:
            deploy = rollout.DeployStack(
                self.workspaces[project],
                Path(plans),
                desired=lambda _stack: config,
                probe=self.probe(project),
                on_output=log,
                refresh=refresh,
            )
            return deploy(stack_name(customer_id))

    def probe(self, project: str) -> health.Probe | None:
        """The health gate's view of a host; None: the gateway over HTTP and the bundle over SSH."""
        return None

    def destroy(self, project: str, customer_id: str, log: Log) -> None:
        # A cancellation may come before its signup ever ran: nothing to destroy, and no error.
        stacks.destroy(self.workspaces[project], stack_name(customer_id), on_output=log, create=True)

    def remove(self, project: str, customer_id: str, log: Log) -> None:
        with self._operation(project, customer_id, "remove") as (stack, _):
            stack.workspace.remove_stack(stack.name)  # also deletes the stack's settings file
        shutil.rmtree(stack.workspace.work_dir, ignore_errors=True)
        log(f"removed stack {stack.name}")

    def redacted_state(self, project: str, customer_id: str, log: Log) -> dict[str, Any]:
        with self._operation(project, customer_id, "export") as (stack, _):
            exported = stack.export_stack()
        return redact({"version": exported.version, "deployment": exported.deployment})

    def clear_stale_lock(self, project: str, customer_id: str, log: Log, clis: Collection[str]) -> list[str]:
        program = yaml.safe_load((self.workspaces[project].program_dir / "Pulumi.yaml").read_text())["name"]
        with self._operation(project, customer_id, "clear") as (stack, _):
            cleared = self._delete_own_locks(str(program), stack.name, set(clis), log)
            # Its secrets stay encrypted, in memory and on the CLI's pipes only: nothing plaintext on a disk.
            deployment = stacks.export_state(stack)
            pending = deployment.get("pending_operations") or []
            if pending:
                # First, or a failure here would leave the next attempt no record of what to delete.
                environment = self.workspaces[project].env_vars()
                hetzner = resize.hetzner_client(environment)
                dns = (
                    resize.hetzner_client(environment, DNS_TOKEN_VARIABLE)
                    if DNS_TOKEN_VARIABLE in environment
                    else None
                )
                cleared += [f"deleted {what}" for what in remove_orphans(hetzner, deployment, log, dns)]
                urns = [operation.get("resource", {}).get("urn", "?") for operation in pending]
                stacks.import_state(stack, {**deployment, "pending_operations": []})
                cleared.append("pending operations: " + ", ".join(urns))
        return cleared

    def _delete_own_locks(self, program: str, stack: str, clis: set[str], log: Log) -> list[str]:
        bucket = open_bucket(self.backend_url)
        deleted, others = [], []
        for lock in stack_locks(bucket, program, stack):
            if lock.holder in clis:
                bucket.delete(lock.key)
                deleted.append(f"its stack lock ({lock})")
                log(f"deleted the stack lock of {lock}")
            else:
                others.append(str(lock))
        if others:
            raise StackLockedByAnother(
                f"{stack} is locked by {', '.join(others)}, not by this provisioner's operation: "
                "wait for that operation to end, or remove its lock by hand"
            )
        return deleted
