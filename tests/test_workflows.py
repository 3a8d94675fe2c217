"""The GitHub workflows keep secrets by trust and fail closed (actionlint checks their syntax in CI)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

WORKFLOWS = Path(__file__).resolve().parent.parent / ".github/workflows"
WRITE_TOKEN = "secrets.HCLOUD_TOKEN"
PASSPHRASE = "secrets.PULUMI_CONFIG_PASSPHRASE"
OPERATOR_TOKEN = "secrets.CLAW_OPERATOR_TOKEN"
# What opens the stacks' state: never in a workflow (the provisioner's workers hold them).
STATE_SECRETS = (PASSPHRASE, "secrets.PULUMI_BACKEND_URL", "secrets.AWS_ACCESS_KEY_ID", "secrets.AWS_SECRET_ACCESS_KEY")


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
    # The fleet, its settings and each stack's redacted state come from the provisioner, with the
    # token that can change nothing; the program runs confined.
    assert "--settings-from-provisioner" in fleet["run"] and '--confine "$CONFINED_USER"' in fleet["run"]
    assert fleet["env"]["CLAW_REVIEW_TOKEN"] == "${{ secrets.CLAW_REVIEW_TOKEN }}"
    assert set(fleet["env"]) == {"HCLOUD_TOKEN", "CLAW_PROVISIONER_URL", "CLAW_REVIEW_TOKEN"}


def test_the_job_running_the_pull_requests_code_can_post_nothing_and_leaves_no_credential_on_disk() -> None:
    jobs = load("preview.yml")["jobs"]
    assert jobs["fleet"]["permissions"] == {"contents": "read"}
    checkouts = [step for step in jobs["fleet"]["steps"] if str(step.get("uses", "")).startswith("actions/checkout")]
    assert all(step["with"]["persist-credentials"] is False for step in checkouts)
    # The comment job posts what the preview wrote and runs nothing of the pull request's.
    assert jobs["comment"]["permissions"] == {"pull-requests": "write"}
    assert not any(str(step.get("uses", "")).startswith("actions/checkout") for step in jobs["comment"]["steps"])


def test_no_workflow_holds_the_write_token_and_only_the_deploy_job_the_operator_token() -> None:
    # Every stack change runs on the provisioner's workers; the rollout only submits and follows them.
    users = []
    for path in WORKFLOWS.glob("*.yml"):
        workflow = yaml.safe_load(path.read_text())
        for name, job in workflow["jobs"].items():
            assert WRITE_TOKEN not in str(job), (path.name, name)
            if OPERATOR_TOKEN in str(job):
                users.append((path.name, name))
                assert job.get("environment") == "production"
                assert not triggers(workflow) & {"pull_request", "pull_request_target"}
    assert users == [("deploy.yml", "rollout")]


def test_no_workflow_can_open_the_state() -> None:
    for path in WORKFLOWS.glob("*.yml"):
        text = path.read_text()
        assert not [secret for secret in STATE_SECRETS if secret in text], path.name


def test_the_base_branch_judges_a_pull_request_and_is_installed_before_any_of_its_files() -> None:
    fleet_steps = load("preview.yml")["jobs"]["fleet"]["steps"]
    checkouts = [step for step in fleet_steps if str(step.get("uses", "")).startswith("actions/checkout")]
    assert [step["with"]["path"] for step in checkouts] == ["base", "pr"]
    assert checkouts[0]["with"]["ref"] == "${{ github.event.pull_request.base.sha }}"
    before_pr = fleet_steps[: fleet_steps.index(checkouts[1])]
    assert any("toolchain build" in str(step.get("run", "")) for step in before_pr)
    after_pr = [str(step.get("run", "")) for step in fleet_steps[fleet_steps.index(checkouts[1]) :]]
    # Nothing of the pull request's is built or installed but its hashed wheels, as the confined user.
    assert not any("toolchain build" in run or "toolchain install" in run for run in after_pr)
    install = next(run for run in after_pr if "pr/.venv/bin/pip install" in run)
    assert "checked-lock pr/requirements.txt" in install and "--only-binary :all:" in install
    assert 'sudo -u "$CONFINED_USER" pr/.venv/bin/pip install -q --no-index' in install
    fleet = next(step for step in fleet_steps if step.get("id") == "fleet")
    assert fleet["working-directory"] == "base"
    assert "--program-dir ../pr --policy-pack policy" in fleet["run"]


def test_the_logs_of_failed_previews_are_kept_as_an_artifact() -> None:
    fleet_steps = load("preview.yml")["jobs"]["fleet"]["steps"]
    fleet = next(step for step in fleet_steps if step.get("id") == "fleet")
    # Written by the preview as root, mode 0600: handed to the runner's user before the upload reads them.
    assert "--logs ../fleet-logs" in fleet["run"] and "chown" in fleet["run"]
    later = fleet_steps[fleet_steps.index(fleet) + 1 :]
    upload = next(step for step in later if step.get("with", {}).get("name") == "fleet-logs")
    assert upload["uses"].startswith("actions/upload-artifact") and upload["if"] == "always()"
    assert upload["with"]["path"] == "fleet-logs/"


def test_deploy_is_one_rollout_job_not_a_matrix() -> None:
    deploy = load("deploy.yml")
    (job,) = deploy["jobs"].values()
    assert "strategy" not in job and job["environment"] == "production"
    assert any(
        'python -m fleet rollout --provisioner --commit "$GITHUB_SHA"' in str(step.get("run", ""))
        for step in job["steps"]
    ), "only workers running the merged commit deploy it"
    assert PASSPHRASE not in str(job), "the rollout never opens a stack itself"


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


FAKE_GH = """#!/bin/sh
# Answers `gh api` as GitHub would, from $COMMENTS, with real jq; records every write.
[ -n "$GH_FAILS" ] && { echo "HTTP 502" >&2; exit 1; }
if [ "$2" = "--paginate" ]; then
  jq -r "$5" "$COMMENTS"
else
  echo "$*" >> "$CALLS"
fi
"""


def _comment_step() -> str:
    return next(step["run"] for step in steps(load("preview.yml")) if "update the comment" in step.get("name", ""))


@pytest.fixture
def fake_gh(tmp_path: Path) -> dict[str, str]:
    gh = tmp_path / "bin/gh"
    gh.parent.mkdir()
    gh.write_text(FAKE_GH)
    gh.chmod(0o755)
    (tmp_path / "fleet-preview.md").write_text("<!-- clawhosters:fleet-preview -->\n## Fleet preview\n")
    return {
        "PATH": f"{gh.parent}:/usr/bin:/bin",
        "COMMENTS": str(tmp_path / "comments.json"),
        "CALLS": str(tmp_path / "calls"),
        "GITHUB_REPOSITORY": "acme/infra",
        "PR_NUMBER": "7",
    }


def _run_comment_step(tmp_path: Path, env: dict[str, str], comments: list[dict[str, Any]]) -> int:
    Path(env["COMMENTS"]).write_text(json.dumps(comments))
    script = _comment_step()
    return subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, env=env, check=False).returncode


def test_the_summary_comment_is_updated_in_place(tmp_path: Path, fake_gh: dict[str, str]) -> None:
    bot = {"login": "github-actions[bot]"}
    ours = {"id": 11, "user": bot, "body": "<!-- clawhosters:fleet-preview -->\nold"}
    other = {"id": 10, "user": {"login": "mallory"}, "body": "<!-- clawhosters:fleet-preview -->\nfake"}
    assert _run_comment_step(tmp_path, fake_gh, [other, {"id": 9, "user": bot, "body": "hi"}, ours]) == 0
    assert Path(fake_gh["CALLS"]).read_text() == (
        "api --method PATCH repos/acme/infra/issues/comments/11 -F body=@fleet-preview.md\n"
    )


def test_a_first_summary_is_posted_and_a_failing_api_fails_the_step(tmp_path: Path, fake_gh: dict[str, str]) -> None:
    assert _run_comment_step(tmp_path, fake_gh, []) == 0
    assert (
        Path(fake_gh["CALLS"]).read_text()
        == "api --method POST repos/acme/infra/issues/7/comments -F body=@fleet-preview.md\n"
    )
    assert _run_comment_step(tmp_path, {**fake_gh, "GH_FAILS": "1"}, []) != 0
