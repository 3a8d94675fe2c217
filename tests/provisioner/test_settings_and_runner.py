"""The service's settings come from the environment and name the bad variable; the Automation API
runner is exercised for real where the pulumi CLI exists."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fleet.desired import stack_config
from provisioner.runner import REPO
from provisioner.settings import ProvisionerSettings, SettingsError

GOOD = {
    "CLAW_WEBHOOK_SECRET": "whsec_0123456789abcdef",
    "CLAW_OPERATOR_TOKEN": "token-0123456789abcdef",
    "CLAW_PLATFORM": '{"provisioner_cidrs": ["203.0.113.0/28"]}',
}


def test_defaults_are_the_embedded_queue_and_the_automation_api() -> None:
    settings = ProvisionerSettings.from_env(GOOD)
    assert settings.queue_url.startswith("sqlite:///")
    assert settings.runner == "provisioner.runner:AutomationRunner"
    assert "whsec" not in repr(settings), "secrets must not show in logs or tracebacks"


def test_every_platform_setting_is_written_into_the_stack() -> None:
    shared = '{"firewall_mode": "shared", "shared_firewall_id": 7, "provisioner_cidrs": ["203.0.113.0/28"]}'
    config = stack_config({}, ProvisionerSettings.from_env({**GOOD, "CLAW_PLATFORM": shared}).platform)
    assert config["platform:firewall_mode"] == "shared"
    assert config["platform:shared_firewall_id"] == "7"
    assert config["platform:provisioner_cidrs"] == '["203.0.113.0/28"]'
    # The program reads them back to the same settings.
    from config.loader import settings_from_mapping
    from tests.provisioner.events import IMAGE

    stack = settings_from_mapping({**config, "clawhosters:customer_id": "acme", "clawhosters:gateway_image": IMAGE})
    assert stack.platform.shared_firewall_id == 7
    assert [str(cidr) for cidr in stack.platform.provisioner_cidrs] == ["203.0.113.0/28"]


def test_a_bad_queue_url_is_a_clean_error_naming_it(tmp_path: Path) -> None:
    environment = {**os.environ, **GOOD, "CLAW_QUEUE_URL": "postgres://db", "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "provisioner", "status", "acme"],
        env=environment,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "CLAW_QUEUE_URL" in done.stderr and "Traceback" not in done.stderr


def test_the_automation_runner_passes_the_policy_pack_the_sdk_accepts() -> None:
    import inspect

    from pulumi.automation import Stack

    from provisioner.runner import POLICY_PACK

    assert "policy_packs" in inspect.signature(Stack.up).parameters
    assert (POLICY_PACK / "PulumiPolicy.yaml").exists(), "the CLI loads the pack from this directory"


@pytest.mark.parametrize(
    "environment,named",
    [
        ({}, "CLAW_WEBHOOK_SECRET"),
        ({**GOOD, "CLAW_OPERATOR_TOKEN": "short"}, "CLAW_OPERATOR_TOKEN"),
        ({**GOOD, "CLAW_QUEUE_URL": "postgres://db"}, "CLAW_QUEUE_URL"),
        ({**GOOD, "CLAW_MAX_ATTEMPTS": "zero"}, "CLAW_MAX_ATTEMPTS"),
        ({**GOOD, "CLAW_PLATFORM": "{}"}, "CLAW_PLATFORM: .*provisioner_cidrs must name"),
        ({**GOOD, "CLAW_PLATFORM": "not json"}, "CLAW_PLATFORM: must be a JSON object"),
        ({**GOOD, "CLAW_PLATFORM": '{"firewall_mode": "shared"}'}, "CLAW_PLATFORM.shared_firewall_id"),
        ({**GOOD, "CLAW_PLATFORM": '{"provisioner_cidrs": ["1.2.3.4/8"], "x": 1}'}, "CLAW_PLATFORM.x"),
        ({**GOOD, "CLAW_LEASE_SECONDS": "10", "CLAW_CANCEL_SECONDS": "5"}, "CLAW_CANCEL_SECONDS"),
        ({**GOOD, "CLAW_BIND": "0.0.0.0:8787"}, "CLAW_BIND: replaced by two listeners, CLAW_PUBLIC_BIND"),
        ({**GOOD, "CLAW_PRIVATE_BIND": "0.0.0.0:8788"}, "CLAW_PRIVATE_BIND: must name an address of the private"),
        ({**GOOD, "CLAW_PRIVATE_BIND": "[::]:8788"}, "CLAW_PRIVATE_BIND: must name an address of the private"),
        ({**GOOD, "CLAW_PUBLIC_BIND": "127.0.0.1:8788"}, "CLAW_PUBLIC_BIND and CLAW_PRIVATE_BIND must differ"),
        ({**GOOD, "CLAW_PUBLIC_BIND": "127.0.0.1:99999"}, "CLAW_PUBLIC_BIND: the port must be 1 to 65535"),
        ({**GOOD, "CLAW_JOB_RETENTION_DAYS": "1"}, "CLAW_JOB_RETENTION_DAYS"),
        ({**GOOD, "CLAW_LEASE_SECONDS": "9", "CLAW_CANCEL_SECONDS": "1", "CLAW_KILL_GRACE_SECONDS": "4"}, "KILL_GRACE"),
        ({**GOOD, "CLAW_PROCESS_MEMORY_MIB": "64"}, "CLAW_PROCESS_MEMORY_MIB"),
        ({**GOOD, "CLAW_OPERATION_SECONDS": "0"}, "CLAW_OPERATION_SECONDS"),
        ({**GOOD, "CLAW_PULUMI_BACKEND_URL": "gs://bucket"}, "CLAW_PULUMI_BACKEND_URL: must be a file:// or s3://"),
    ],
)
def test_a_bad_variable_is_named(environment: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        ProvisionerSettings.from_env(environment)


ZONED = {**GOOD, "CLAW_PLATFORM": '{"provisioner_cidrs": ["203.0.113.0/28"], "dns_zone": "gateways.example.com"}'}
DNS_TOKEN = "D" * 32 + "ns00" * 8


@pytest.mark.parametrize(
    "environment,named",
    [
        ({}, "CLAW_HETZNER_DNS_TOKEN: not set; CLAW_PLATFORM's dns_zone is written with the DNS project's token"),
        ({"CLAW_HETZNER_DNS_TOKEN": "short"}, "CLAW_HETZNER_DNS_TOKEN: is not a Hetzner API token"),
        (
            {"CLAW_HETZNER_DNS_TOKEN": DNS_TOKEN, "HCLOUD_TOKEN": DNS_TOKEN},
            "CLAW_HETZNER_DNS_TOKEN: is the token of Hetzner project default; the zone belongs in a project of its own",
        ),
    ],
)
def test_a_worker_does_not_start_without_its_own_dns_project_token(
    tmp_path: Path, environment: dict[str, str], named: str
) -> None:
    clean = {key: value for key, value in os.environ.items() if not key.startswith(("CLAW_", "HCLOUD_"))}
    done = subprocess.run(
        [sys.executable, "-m", "provisioner", "worker"],
        env={
            **clean,
            **ZONED,
            "HCLOUD_TOKEN": "C" * 64,
            "CLAW_QUEUE_URL": f"sqlite:///{tmp_path / 'q.sqlite3'}",
            "PYTHONPATH": str(REPO),
            **environment,
        },
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and named in done.stderr, done.stderr
    assert DNS_TOKEN not in done.stdout + done.stderr


def test_the_workers_hand_the_dns_token_to_the_cli_and_only_with_a_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    from provisioner.runner import AutomationRunner

    monkeypatch.setenv("HCLOUD_TOKEN", "C" * 64)
    monkeypatch.setenv("CLAW_HETZNER_DNS_TOKEN", DNS_TOKEN)
    runner = AutomationRunner(ProvisionerSettings.from_env(ZONED))
    assert runner.workspaces["default"].env_vars()["HCLOUD_DNS_TOKEN"] == DNS_TOKEN
    unzoned = AutomationRunner(ProvisionerSettings.from_env(GOOD))
    assert "HCLOUD_DNS_TOKEN" not in unzoned.workspaces["default"].env_vars()
    assert DNS_TOKEN not in repr(runner.workspaces["default"])
