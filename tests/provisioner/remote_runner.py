"""The real AutomationRunner on the test suite's remote program (tests/engine/remote: a script over
SSH, a Hetzner server) and its policy pack (tests/engine/pack): the real CLI and providers run each
job's operation. The program's own settings (host, port, keys, script, `server`) for each customer
come from CLAW_REMOTE_PROGRAM_CONFIG, a JSON object by customer id, beside the customer's and the
platform's."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from provisioner.runner import AutomationRunner, Log
from provisioner.settings import ProvisionerSettings

ENGINE = Path(__file__).resolve().parents[1] / "engine"
CONFIG = "CLAW_REMOTE_PROGRAM_CONFIG"


class RunnerOnTheRemoteProgram(AutomationRunner):
    def __init__(self, settings: ProvisionerSettings) -> None:
        super().__init__(settings)
        update = {"program_dir": ENGINE / "remote", "policy_pack": ENGINE / "pack"}
        self.workspaces = {name: workspace.model_copy(update=update) for name, workspace in self.workspaces.items()}

    def up(self, project: str, customer_id: str, config: Mapping[str, str], log: Log) -> dict[str, Any]:
        settings = json.loads(os.environ[CONFIG])[customer_id]
        program = {f"engine-remote:{key}": value for key, value in settings.items()}
        return super().up(project, customer_id, {**config, **program}, log)
