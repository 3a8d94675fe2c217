"""The one interface to Pulumi: bring a customer stack up, or tear it down and remove it.

`AutomationRunner` drives this repository's program with the Automation API (it needs the pulumi
CLI). Its state is process-global, so each worker process has its own runner and runs one stack
operation at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from provisioner.settings import ProvisionerSettings

REPO = Path(__file__).resolve().parent.parent
Log = Callable[[str], None]


class StackRunner(Protocol):
    def up(self, customer_id: str, config: dict[str, str], log: Log) -> dict[str, Any]:
        """Create or update the customer's stack; return its outputs without secrets."""
        ...

    def destroy(self, customer_id: str, log: Log) -> None:
        """Destroy the customer's resources, then remove the stack."""
        ...


class AutomationRunner:
    def __init__(self, settings: ProvisionerSettings) -> None:
        self.settings = settings

    def _stack(self, customer_id: str) -> Any:
        from pulumi import automation

        options = automation.LocalWorkspaceOptions(
            env_vars={"PULUMI_BACKEND_URL": self.settings.pulumi_backend_url},
            secrets_provider=self.settings.pulumi_secrets_provider,
        )
        return automation.create_or_select_stack(stack_name=f"customer-{customer_id}", work_dir=str(REPO), opts=options)

    def up(self, customer_id: str, config: dict[str, str], log: Log) -> dict[str, Any]:
        from pulumi import automation

        stack = self._stack(customer_id)
        stack.set_all_config({key: automation.ConfigValue(value=value) for key, value in config.items()})
        result = stack.up(on_output=log, color="never")
        return {name: output.value for name, output in result.outputs.items() if not output.secret}

    def destroy(self, customer_id: str, log: Log) -> None:
        stack = self._stack(customer_id)
        stack.destroy(on_output=log, color="never")
        stack.workspace.remove_stack(stack.name)
