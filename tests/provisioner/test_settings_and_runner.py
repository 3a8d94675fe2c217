"""The service's settings come from the environment and name the bad variable; the Automation API
runner is exercised for real where the pulumi CLI exists."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from provisioner.settings import ProvisionerSettings, SettingsError

GOOD = {"CLAW_WEBHOOK_SECRET": "whsec_0123456789abcdef", "CLAW_OPERATOR_TOKEN": "token-0123456789abcdef"}


def test_defaults_are_the_embedded_queue_and_the_automation_api() -> None:
    settings = ProvisionerSettings.from_env(GOOD)
    assert settings.queue_url.startswith("sqlite:///")
    assert settings.runner == "provisioner.runner:AutomationRunner"
    assert "whsec" not in repr(settings), "secrets must not show in logs or tracebacks"


@pytest.mark.parametrize(
    "environment,named",
    [
        ({}, "CLAW_WEBHOOK_SECRET"),
        ({**GOOD, "CLAW_OPERATOR_TOKEN": "short"}, "CLAW_OPERATOR_TOKEN"),
        ({**GOOD, "CLAW_QUEUE_URL": "postgres://db"}, "CLAW_QUEUE_URL"),
        ({**GOOD, "CLAW_MAX_ATTEMPTS": "zero"}, "CLAW_MAX_ATTEMPTS"),
    ],
)
def test_a_bad_variable_is_named(environment: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        ProvisionerSettings.from_env(environment)


@pytest.mark.pulumi_cli
@pytest.mark.skipif(shutil.which("pulumi") is None, reason="needs the pulumi CLI, which cannot be installed here")
@pytest.mark.skipif("HCLOUD_TOKEN" not in os.environ, reason="an up needs HCLOUD_TOKEN")
def test_the_automation_runner_brings_a_stack_up_and_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from provisioner.runner import AutomationRunner

    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "provisioner-test")
    settings = ProvisionerSettings.from_env({**GOOD, "CLAW_PULUMI_BACKEND_URL": f"file://{tmp_path}"})
    runner = AutomationRunner(settings)
    lines: list[str] = []
    image = "ghcr.io/openclaw/gateway:1.4.2@sha256:" + "ab" * 32
    outputs = runner.up(
        "ci-check", {"clawhosters:customer_id": "ci-check", "clawhosters:gateway_image": image}, lines.append
    )
    try:
        assert "gateway_password" not in outputs and outputs["gateway_url"].startswith("http://")
    finally:
        runner.destroy("ci-check", lines.append)
