"""The GitHub workflows keep secrets by trust and fail closed (actionlint checks their syntax in CI)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

WORKFLOWS = Path(__file__).resolve().parent.parent / ".github/workflows"
WRITE_TOKEN = "secrets.HCLOUD_TOKEN"
PASSPHRASE = "secrets.PULUMI_CONFIG_PASSPHRASE"


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def triggers(workflow: dict[str, Any]) -> set[str]:
    # PyYAML reads the key `on` as the boolean True.
    return set(workflow[True])


def steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def test_no_workflow_sets_secrets_for_every_job() -> None:
    for path in WORKFLOWS.glob("*.yml"):
        assert "secrets." not in str(yaml.safe_load(path.read_text()).get("env", {})), path.name


def test_pull_request_jobs_never_see_the_write_token() -> None:
    preview = load("preview.yml")
    assert triggers(preview) == {"pull_request"}
    for job in preview["jobs"].values():
        assert job.get("environment") != "production"
        assert WRITE_TOKEN not in str(job)
    fleet = next(step for step in steps(preview) if step.get("id") == "fleet")
    assert fleet["env"]["HCLOUD_TOKEN"] == "${{ secrets.HCLOUD_READ_TOKEN }}"


def test_the_write_token_lives_only_in_the_production_deploy_job() -> None:
    users = []
    for path in WORKFLOWS.glob("*.yml"):
        workflow = yaml.safe_load(path.read_text())
        for name, job in workflow["jobs"].items():
            if WRITE_TOKEN in str(job):
                users.append((path.name, name))
                assert job.get("environment") == "production"
                assert not triggers(workflow) & {"pull_request", "pull_request_target"}
    assert users == [("deploy.yml", "rollout")]


def test_the_state_passphrase_is_only_in_approval_gated_environments() -> None:
    for path in WORKFLOWS.glob("*.yml"):
        for job in yaml.safe_load(path.read_text())["jobs"].values():
            if PASSPHRASE in str(job):
                assert job.get("environment") in ("production", "preview")


def test_the_base_branch_judges_a_pull_request() -> None:
    preview = load("preview.yml")
    checkouts = [step for step in steps(preview) if str(step.get("uses", "")).startswith("actions/checkout")]
    assert {step["with"]["path"] for step in checkouts} == {"pr", "base"}
    base = next(step for step in checkouts if step["with"]["path"] == "base")
    assert base["with"]["ref"] == "${{ github.event.pull_request.base.sha }}"
    fleet = next(step for step in steps(preview) if step.get("id") == "fleet")
    assert fleet["working-directory"] == "base"
    assert "--program-dir ../pr --policy-pack policy" in fleet["run"]


def test_deploy_is_one_rollout_job_not_a_matrix() -> None:
    deploy = load("deploy.yml")
    (job,) = deploy["jobs"].values()
    assert "strategy" not in job and job["environment"] == "production"
    assert any("python -m fleet rollout" in str(step.get("run", "")) for step in job["steps"])


def _scripts() -> list[tuple[str, str]]:
    found = []
    for path in sorted(WORKFLOWS.glob("*.yml")):
        for index, step in enumerate(steps(yaml.safe_load(path.read_text()))):
            if "run" in step:
                found.append((f"{path.name}#{index}", step["run"]))
    return found


@pytest.mark.parametrize("name,script", _scripts(), ids=[name for name, _ in _scripts()])
def test_step_scripts_hide_no_failure_and_pass_shellcheck(name: str, script: str) -> None:
    # A failure inside `< <(...)` does not fail a `bash -e` step.
    assert "< <(" not in script
    plain = re.sub(r"\$\{\{[^}]*\}\}", "x", script)
    result = subprocess.run(
        ["shellcheck", "--shell=bash", "-"], input=plain, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout
