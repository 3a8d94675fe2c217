"""The one interface to Pulumi: bring a customer stack to a desired config, tear it down, remove it.

Every operation runs the CLI as a child process of the calling process, through `bin/pulumi`; the
provisioner cancels an operation by sending that child SIGINT, which the pulumi CLI documents as
"cancel gracefully": in-flight resource operations finish, the state is written and the stack lock is
released. The kernel sends the same SIGINT when the worker process dies (`bin/pulumi`).

`AutomationRunner` drives this repository's program with the Automation API (it needs the pulumi
CLI). Its state is process-global, so each worker process has its own runner and runs one stack
operation at a time. Each stack gets its own workspace directory in the provisioner's state dir
(project file pointing at this checkout's program, and the stack's settings file), never the checkout.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import yaml

from provisioner.settings import ProvisionerSettings

REPO = Path(__file__).resolve().parent.parent
POLICY_PACK = REPO / "policy"
# bin/pulumi: the CLI, cancelled when the process that started it dies.
CLI_ROOT = Path(__file__).resolve().parent
Log = Callable[[str], None]


def stack_name(customer_id: str) -> str:
    return f"customer-{customer_id}"


class StackRunner(Protocol):
    def up(self, customer_id: str, config: Mapping[str, str], log: Log) -> dict[str, Any]:
        """Make the stack's config exactly `config` (every other key removed), run `up` with the
        repository's policy pack, and return the stack's outputs without secrets."""
        ...

    def destroy(self, customer_id: str, log: Log) -> None:
        """Destroy the stack's resources (the stack itself stays)."""
        ...

    def remove(self, customer_id: str, log: Log) -> None:
        """Remove the stack and its settings file."""
        ...

    def clear_stale_lock(self, customer_id: str, log: Log) -> list[str]:
        """Clear the lock and pending operations a stopped CLI left on the stack; say what was cleared.
        Called only by a worker holding the stack's lease after the previous operation's owner is gone."""
        ...


class AutomationRunner:
    def __init__(self, settings: ProvisionerSettings) -> None:
        self.settings = settings

    def _project(self) -> Any:
        from pulumi import automation

        declared = yaml.safe_load((REPO / "Pulumi.yaml").read_text())
        runtime = declared["runtime"]
        options = {**runtime.get("options", {}), "virtualenv": str(REPO / ".venv")}
        return automation.ProjectSettings(
            name=declared["name"],
            runtime=automation.ProjectRuntimeInfo(name=runtime["name"], options=options),
            main=str(REPO),
            description=declared.get("description"),
        )

    def _stack(self, customer_id: str) -> Any:
        from pulumi import automation

        work_dir = self.settings.state_dir / "stacks" / stack_name(customer_id)
        work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        options = automation.LocalWorkspaceOptions(
            pulumi_command=automation.PulumiCommand(root=str(CLI_ROOT)),
            work_dir=str(work_dir),
            project_settings=self._project(),
            env_vars={"PULUMI_BACKEND_URL": self.settings.pulumi_backend_url},
            secrets_provider=self.settings.pulumi_secrets_provider,
        )
        return automation.create_or_select_stack(
            stack_name=stack_name(customer_id), work_dir=str(work_dir), opts=options
        )

    def up(self, customer_id: str, config: Mapping[str, str], log: Log) -> dict[str, Any]:
        from pulumi import automation

        stack = self._stack(customer_id)
        # set_all_config only adds and updates: remove what the desired config no longer has.
        stale = sorted(set(stack.get_all_config()) - set(config))
        if stale:
            stack.remove_all_config(stale)
        stack.set_all_config({key: automation.ConfigValue(value=value) for key, value in config.items()})
        result = stack.up(on_output=log, color="never", policy_packs=[str(POLICY_PACK)])
        return {name: output.value for name, output in result.outputs.items() if not output.secret}

    def destroy(self, customer_id: str, log: Log) -> None:
        self._stack(customer_id).destroy(on_output=log, color="never")

    def remove(self, customer_id: str, log: Log) -> None:
        stack = self._stack(customer_id)
        stack.workspace.remove_stack(stack.name)  # also deletes the stack's settings file
        shutil.rmtree(stack.workspace.work_dir, ignore_errors=True)
        log(f"removed stack {stack.name}")

    def clear_stale_lock(self, customer_id: str, log: Log) -> list[str]:
        stack = self._stack(customer_id)
        cleared: list[str] = []
        try:
            stack.cancel()  # on a self-managed backend: deletes the stack's lock files
            cleared.append("stack lock")
        except Exception as error:  # no lock to clear is the common case
            log(f"pulumi cancel: {str(error)[-200:]}")
        state = stack.export_stack()
        deployment = state.deployment or {}
        pending = deployment.get("pending_operations") or []
        if pending:
            # Pending creates may have made real servers: name them so an operator can check.
            urns = [operation.get("resource", {}).get("urn", "?") for operation in pending]
            deployment["pending_operations"] = []
            state.deployment = deployment
            stack.import_stack(state)
            cleared.append("pending operations: " + ", ".join(urns))
        return cleared
