"""The fleet preview: findings from recorded engine events, grouped summaries under the comment
limit, and the failure paths (no stack list, a crashed worker, a hung preview) as blocking findings."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml
from pulumi.automation import EngineEvent
from pydantic import SecretStr

from fleet import stacks
from fleet.control import ProjectReadTokens, Provisioner
from fleet.preview import (
    COMMENT_LIMIT,
    MARKER,
    PreviewStack,
    StackPreview,
    preview_fleet,
    render,
    summarize,
)
from lab.hcloud_api.app import token_digest
from provisioner.store import Job, JobStore, key_value
from tests.fleet_standin import StandInPreview, recorded
from tests.hcloud_api.conftest import ACME, OTHER, Emulator
from tests.provisioner.conftest import REVIEW_TOKEN, running

REPO = Path(__file__).resolve().parent.parent
WORKSPACE = stacks.Workspace()


def _event(**body: object) -> EngineEvent:
    return EngineEvent.from_json({"sequence": 1, "timestamp": 1, **body})


def test_a_policy_change_only_updates_commands() -> None:
    preview = summarize("customer-acme", recorded("customer-acme"))
    assert dict(preview.counts) == {"update": 2}
    assert preview.blocking == [] and preview.advisories == []


def test_a_server_replacement_is_blocking_once() -> None:
    preview = summarize("customer-beta", recorded("customer-beta"))
    assert preview.counts["replace"] == 5
    assert preview.blocking == ["server `customer-beta-server` would be replaced: the customer's data would be lost"]
    assert preview.advisories == [
        "policy `gateway-image-pinned`: the gateway image ghcr.io/openclaw/gateway:latest is not pinned by digest"
    ]


def test_a_mandatory_violation_and_a_failed_preview_are_blocking() -> None:
    preview = summarize("customer-gamma", recorded("customer-gamma"))
    assert preview.counts["create"] == 10
    assert any("firewall-inbound-only-ssh-and-gateway" in finding for finding in preview.blocking)
    assert any(finding.startswith("error: preview failed") for finding in preview.blocking)


def test_a_policy_that_could_not_run_is_blocking_although_the_sdk_says_advisory() -> None:
    message = "can't run policy 'x' from policy pack 'clawhosters-baseline@v0.0.1' during preview: string value"
    cant_run = _event(policyEvent={"message": message, "color": "never", "policyName": "x",
                                   "policyPackName": "clawhosters-baseline", "policyPackVersion": "",
                                   "policyPackVersionTag": "", "enforcementLevel": "advisory"})  # fmt: skip
    preview = summarize("customer-acme", [cant_run])
    assert preview.blocking == [f"policy `x`: {message}"] and preview.advisories == []


def test_changing_a_servers_firewalls_is_blocking() -> None:
    urn = "urn:pulumi:customer-acme::clawhosters::clawhosters:index:CustomerInstance$hcloud:index/server:Server::s"
    step = {"op": "update", "urn": urn, "type": "hcloud:index/server:Server", "provider": "", "diffs": ["firewallIds"]}
    preview = summarize("customer-acme", [_event(resourcePreEvent={"metadata": step})])
    assert preview.blocking and "detaches the old firewall" in preview.blocking[0]


def test_identical_diffs_are_grouped_and_the_summary_stays_under_the_comment_limit() -> None:
    stacks_ = [f"customer-{index:04d}" for index in range(480)]
    previews = [summarize(stack, recorded("customer-acme", stack)) for stack in stacks_]
    previews += [summarize(f"customer-b{index}", recorded("customer-beta", f"customer-b{index}")) for index in range(3)]
    text = render(previews, full_report="https://ci.example/artifacts")
    assert text.startswith(MARKER) and len(text) <= COMMENT_LIMIT
    assert "**same on 480 stacks** (`customer-0000`, `customer-0001`" in text
    assert "- update `<stack>-baseline` (command:remote:Command): create, triggers" in text
    assert "**same on 3 stacks** (`customer-b0`, `customer-b1`, `customer-b2`):\n- ⛔ server `<stack>-server`" in text
    assert "**⛔ 3 of 483 stacks have blocking findings.**" in text


def test_a_huge_fleet_summary_is_cut_with_a_pointer_to_the_full_report() -> None:
    many = [summarize(f"customer-{index:05d}", recorded("customer-beta")) for index in range(2000)]
    for index, preview in enumerate(many):
        # Every stack fails differently: nothing groups, so the comment must be cut.
        preview.blocking.append(f"error: backend error {index} " + "x" * 40)
    text = render(many, full_report="https://ci.example/artifacts/fleet-preview-full.md")
    assert len(text) <= COMMENT_LIMIT
    assert text.endswith("the full report is https://ci.example/artifacts/fleet-preview-full.md._\n")


def test_the_canary_diff_is_shown_per_property() -> None:
    preview = summarize("customer-acme", recorded("customer-acme"), detailed=True)
    text = render([preview], canary="customer-acme")
    assert "### Canary `customer-acme`: property-level diff" in text
    assert "#### `customer-acme-baseline` · `create`" in text
    assert "--hashlimit-upto 30/sec" in text and "--hashlimit-upto 40/sec" in text
    assert '-  "d1d1"' in text and '+  "e2e2"' in text


def test_a_crashed_a_hung_and_a_failing_preview_block_only_their_stacks(tmp_path: Path) -> None:
    names = ["customer-acme#0", "customer-crash", "customer-hang", "customer-raise", "customer-acme#1"]
    previews, findings = preview_fleet(names, StandInPreview(tmp_path), workspace=WORKSPACE, concurrency=5, timeout=3)
    by_stack = {preview.stack: preview for preview in previews}
    assert findings == [] and sorted(by_stack) == sorted(names)
    assert by_stack["customer-crash"].blocking == ["preview did not finish: worker crashed (exit code 3)"]
    assert by_stack["customer-hang"].blocking[0].startswith("preview did not finish: timed out after 3 s")
    assert by_stack["customer-raise"].blocking == [
        "preview did not finish: RuntimeError: the backend refused the preview error: stack is locked"
    ]
    assert by_stack["customer-acme#0"].blocking == [] and by_stack["customer-acme#1"].counts["update"] == 2
    assert "**⛔ 3 of 5 stacks have blocking findings.**" in render(previews, fleet_findings=findings)


def test_no_stack_list_and_too_few_stacks_are_blocking() -> None:
    def unreachable(_workspace: stacks.Workspace) -> list[str]:
        raise ConnectionError("backend unreachable")

    previews, findings = preview_fleet(
        [], StandInPreview(Path()), workspace=WORKSPACE, concurrency=1, timeout=1, list_names=unreachable
    )
    assert previews == [] and findings == ["could not list the stacks: backend unreachable"]
    assert "⛔ The fleet preview is incomplete: could not list the stacks" in render(previews, fleet_findings=findings)
    previews, findings = preview_fleet(
        [], StandInPreview(Path()), workspace=WORKSPACE, concurrency=1, timeout=1, list_names=lambda _w: ["other"]
    )
    assert findings == ["0 customer stacks found, at least 1 expected"]


def test_the_cli_fails_closed_when_the_backend_cannot_list_stacks(tmp_path: Path) -> None:
    # No pulumi CLI on PATH: the Automation API cannot list anything.
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}
    result = subprocess.run(
        [sys.executable, "-m", "fleet", "preview", "--out", "comment.md", "--full-report", "full.md"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert "⛔ The fleet preview is incomplete: could not list the stacks" in (tmp_path / "comment.md").read_text()


def test_previews_run_in_separate_processes_with_bounded_concurrency(tmp_path: Path) -> None:
    names = [f"customer-acme#{index}" for index in range(6)]
    previews, _ = preview_fleet(names, StandInPreview(tmp_path), workspace=WORKSPACE, concurrency=2, timeout=60)
    assert sorted(p.stack for p in previews) == sorted(names)
    assert all(isinstance(p, StackPreview) and p.counts["update"] == 2 for p in previews)
    traces = [json.loads(path.read_text()) for path in tmp_path.glob("*.json")]
    assert len({trace["pid"] for trace in traces}) == 6
    moments = sorted({trace["start"] for trace in traces} | {trace["end"] for trace in traces})
    busiest = max(sum(t["start"] <= moment < t["end"] for t in traces) for moment in moments)
    assert busiest == 2


def example_stack(tmp_path: Path, program_dir: Path = REPO) -> stacks.Workspace:
    """The example stack on a fresh file backend, its settings file in a workspace of its own."""
    workspace = stacks.Workspace(
        program_dir=program_dir, backend_url=f"file://{tmp_path / 'state'}", stacks_dir=tmp_path / "stacks"
    )
    (tmp_path / "state").mkdir()
    (tmp_path / "stacks" / "customer-example").mkdir(parents=True)
    shutil.copy(REPO / "Pulumi.customer-example.yaml", tmp_path / "stacks" / "customer-example")
    stacks.open_stack(workspace, "customer-example", create=True)
    return workspace


@pytest.mark.pulumi_cli
def test_a_real_preview_of_the_example_stack(
    tmp_path: Path, hetzner: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The program itself, through the real CLI and providers, against the lab's Hetzner API."""
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "fleet-preview-test")
    workspace = example_stack(tmp_path)
    preview = PreviewStack(workspace, canary="customer-example", plans=tmp_path / "plans")("customer-example")
    assert preview.blocking == [] and preview.advisories == []
    # The stack, the component, its keys, password, SSH key, firewall, server and four remote steps,
    # the four default providers (hcloud, tls, random, command), and the customer's A and AAAA records
    # with the DNS project's provider (a preview needs no DNS token: it writes nothing).
    assert dict(preview.counts) == {"create": 19}
    assert (tmp_path / "plans" / "customer-example.plan.json").exists()
    # The program's safety checks asked Hetzner (server types, the stack's servers).
    assert hetzner.get("/_lab/requests").json()["tokens"][0]["requests"] > 0


@pytest.mark.pulumi_cli
def test_a_real_preview_of_a_tampered_program_is_blocked_by_the_pack(
    tmp_path: Path, hetzner: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "fleet-preview-test")
    workspace = example_stack(tmp_path, program_dir=REPO / "tests" / "fixtures" / "tampered_program")
    logs = tmp_path / "logs"
    preview = PreviewStack(workspace.model_copy(update={"logs_dir": logs}), plans=tmp_path / "plans")(
        "customer-example"
    )
    assert any("commands-match-rendering" in finding for finding in preview.blocking), preview.blocking
    assert not (tmp_path / "plans" / "customer-example.plan.json").exists(), "a blocked preview saves no plan"
    # What `python -m fleet preview` prints for the stack, after the summary: the CLI's errors and its log.
    [log] = logs.iterdir()
    assert preview.failure is not None and preview.failure.endswith(f"; full log: {log}"), preview.failure
    assert preview.failure.startswith("pulumi preview failed on stack customer-example: "), preview.failure
    assert "[mandatory] commands-match-rendering: " in preview.failure, preview.failure


def test_a_relative_pack_path_is_pinned_before_the_cli_sees_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # The CLI would resolve "policy" against the program's directory: the pull request's own pack.
    monkeypatch.chdir(REPO / "policy")
    workspace = stacks.Workspace(program_dir=Path(".."), policy_pack=Path())
    assert workspace.policy_pack == REPO / "policy" and workspace.program_dir == REPO


def _provisioned(store_url: str, customer_id: str) -> JobStore:
    """The provisioner's store after one completed signup of `customer_id`."""
    store = JobStore(key_value(store_url))
    example = yaml.safe_load((REPO / "Pulumi.customer-example.yaml").read_text())["config"]
    customer = {key: str(value) for key, value in example.items() if key.startswith("clawhosters:")}
    customer["clawhosters:customer_id"] = customer_id
    job = Job(
        event_id="evt_signup", kind="provision", customer_id=customer_id, created=1, config=customer, project="acme"
    )
    done = job.model_copy(update={"state": "done"})
    store.kv.transact(lambda _read: store.make_newest(None, done))
    return store


def _requests_by_token(emulator: Emulator) -> Counter[str]:
    usage = emulator.get("/_lab/requests", token=None).json()["tokens"]
    names = {token_digest(ACME): ACME, token_digest(OTHER): OTHER}
    return Counter({names[use["token_sha256"]]: use["requests"] for use in usage})


def _with_a_secret_in_its_state(workspace: stacks.Workspace, stack: str) -> None:
    """The stack created by a first update whose state holds a secret, encrypted with the salt in
    that workspace's settings file (as the provisioner's stacks are)."""
    from pulumi import automation

    def program() -> None:
        import pulumi

        pulumi.export("gateway_password", pulumi.Output.secret("only-in-the-state"))

    stacks.open_stack(workspace, stack, create=True)
    handle = automation.select_stack(
        stack_name=stack,
        project_name="clawhosters",
        program=program,
        opts=automation.LocalWorkspaceOptions(
            work_dir=str(workspace.stacks_dir / stack),
            pulumi_command=automation.PulumiCommand(root=str(workspace.pulumi_root)),
            env_vars=workspace.env_vars(),
        ),
    )
    handle.up(color="never")


@pytest.mark.pulumi_cli
def test_a_stack_without_a_settings_file_is_previewed_with_the_settings_from_the_provisioner(
    tmp_path: Path, hetzner: Emulator, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """Where the fleet tooling runs, a provisioned stack has no settings file: its config comes from
    the provisioner's store through its API (with the review token), written whole before the
    preview, through the real CLI, which reads Hetzner with the token of the stack's own project."""
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "fleet-preview-test")
    (tmp_path / "state").mkdir()
    backend = f"file://{tmp_path / 'state'}"
    # Created where the provisioner runs (its settings file stays there), previewed elsewhere.
    provisioner = stacks.Workspace(backend_url=backend, stacks_dir=tmp_path / "provisioner")
    _with_a_secret_in_its_state(provisioner, "customer-example")
    workspace = stacks.Workspace(backend_url=backend, stacks_dir=tmp_path / "fleet")
    platform = json.dumps({"provisioner_cidrs": ["203.0.113.0/28"]})
    with running(request, tmp_path, "sqlite", platform) as api:
        _provisioned(api.env["CLAW_QUEUE_URL"], "example")
        reviewer = Provisioner(url=api.private_url, token=SecretStr(REVIEW_TOKEN))
        desired = reviewer.settings
        read_tokens = ProjectReadTokens(reviewer, {"acme": SecretStr(ACME)})

        # Without the provisioner the stack has no settings at all: every preview would block.
        without = PreviewStack(workspace)("customer-example")
        assert any("clawhosters:customer_id: required setting is missing" in finding for finding in without.blocking)

        # The process's token is another project's: the stack's own project's token is the one used.
        monkeypatch.setenv("HCLOUD_TOKEN", OTHER)
        before = _requests_by_token(hetzner)
        preview = PreviewStack(workspace, plans=tmp_path / "plans", desired=desired, hetzner_token=read_tokens)(
            "customer-example"
        )
        used = _requests_by_token(hetzner) - before
        assert used[ACME] > 0 and used[OTHER] == 0, used
        # Everything of the example's 16 but the stack itself, which its first update created; the
        # state's secret is read with the provider the state records, whatever the workspace's salt.
        assert preview.blocking == [] and dict(preview.counts) == {"create": 15}
        assert stacks.open_stack(workspace, "customer-example").get_config("platform:provisioner_cidrs").value == (
            '["203.0.113.0/28"]'
        )

        unknown = PreviewStack(workspace, desired=desired)("customer-nobody")
        elsewhere = ProjectReadTokens(reviewer, {"other": SecretStr(OTHER)})
        unread = PreviewStack(workspace, desired=desired, hetzner_token=elsewhere)("customer-example")
    assert unread.blocking == [
        "customer-example: no read token for its Hetzner project 'acme' in CLAW_HETZNER_READ_TOKENS"
    ]
    assert unknown.blocking == [
        "customer-nobody: the provisioner's store has no completed provision of customer 'nobody', "
        "so the stack's settings are unknown"
    ]
