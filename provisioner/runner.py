"""The one interface to Pulumi: bring a customer stack to a desired config, tear it down, remove it.

Every operation runs the CLI as a child process of the calling process, through `bin/pulumi`; the
provisioner cancels an operation by sending that child SIGINT, which the pulumi CLI documents as
"cancel gracefully": in-flight resource operations finish, the state is written and the stack lock is
released. The kernel sends the same SIGINT when the worker process dies (`bin/pulumi`).

`AutomationRunner` drives this repository's program through `fleet.stacks`, the repository's one
way to use the Automation API (it needs the pulumi CLI). Its state is process-global, so each
worker process has its own runner and runs one stack operation at a time. Each stack gets its own
workspace directory in the provisioner's state dir (project file pointing at this checkout's
program, and the stack's settings file), never the checkout.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from fleet import health, resize, rollout, stacks
from provisioner.orphans import remove_orphans
from provisioner.settings import ProvisionerSettings

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

    def clear_stale_lock(self, project: str, customer_id: str, log: Log) -> list[str]:
        """Clear the lock and pending operations a stopped CLI left on the stack, and delete what its
        creates cut off in flight made in Hetzner (provisioner.orphans); say what was cleared. Called
        only by a worker holding the stack's lease after the previous operation's owner is gone."""
        ...


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
            )
            for project, token in settings.hetzner_tokens(os.environ).items()
        }
        # A deploy's saved plans, deleted after it (they hold the stack's encrypted config).
        self.plans = settings.state_dir / "plans"

    def _stack(self, project: str, customer_id: str) -> Any:
        return stacks.open_stack(self.workspaces[project], stack_name(customer_id), create=True)

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
        self._stack(project, customer_id).destroy(on_output=log, color="never")

    def remove(self, project: str, customer_id: str, log: Log) -> None:
        stack = self._stack(project, customer_id)
        stack.workspace.remove_stack(stack.name)  # also deletes the stack's settings file
        shutil.rmtree(stack.workspace.work_dir, ignore_errors=True)
        log(f"removed stack {stack.name}")

    def clear_stale_lock(self, project: str, customer_id: str, log: Log) -> list[str]:
        stack = self._stack(project, customer_id)
        # On a self-managed backend: deletes the stack's lock files, and succeeds when there are none; it
        # fails only when the backend cannot be read, and then the lock may still be there.
        stack.cancel()
        cleared = ["stack locks, if any"]
        # Its secrets stay encrypted, in memory and on the CLI's pipes only: nothing plaintext on a disk.
        deployment = stacks.export_state(stack)
        pending = deployment.get("pending_operations") or []
        if pending:
            # First, or a failure here would leave the next attempt no record of what to delete.
            hetzner = resize.hetzner_client(self.workspaces[project].env_vars())
            cleared += [f"deleted {what}" for what in remove_orphans(hetzner, deployment, log)]
            urns = [operation.get("resource", {}).get("urn", "?") for operation in pending]
            stacks.import_state(stack, {**deployment, "pending_operations": []})
            cleared.append("pending operations: " + ", ".join(urns))
        return cleared
