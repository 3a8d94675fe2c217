"""The fleet preview: summaries from recorded engine events, bounded parallel workers, comment limits."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from policy.fleet_preview import COMMENT_LIMIT, REPO, StackPreview, preview_fleet, preview_stack, render, summarize
from tests.fleet_standin import TRACE, recorded, replay


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


def test_the_summary_puts_blocked_stacks_first() -> None:
    previews = [summarize(stack, recorded(stack)) for stack in ("customer-acme", "customer-beta", "customer-gamma")]
    text = render(previews)
    assert "**2 of 3 stacks have blocking findings.**" in text
    rows = [line for line in text.splitlines() if line.startswith("| customer-")]
    assert [row.split(" | ")[0] for row in rows] == ["| customer-beta", "| customer-gamma", "| customer-acme"]
    assert "| customer-acme | 0 | 2 | 0 | 0 | ok |" in rows


def test_a_huge_fleet_summary_stays_under_the_comment_limit() -> None:
    many = [summarize(f"customer-{index:05d}", recorded("customer-beta")) for index in range(2000)]
    text = render(many, full_report="https://ci.example/artifacts/fleet-preview-full.md")
    assert len(text) <= COMMENT_LIMIT
    assert text.endswith("the full report is https://ci.example/artifacts/fleet-preview-full.md._\n")
    assert len(render(many, limit=10**9)) > COMMENT_LIMIT


def test_previews_run_in_separate_processes_with_bounded_concurrency(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TRACE, str(tmp_path))
    stacks = [f"customer-acme#{index}" for index in range(6)]
    results = preview_fleet(stacks, concurrency=2, preview=replay)
    assert [result.stack for result in results] == stacks
    assert all(isinstance(result, StackPreview) and result.counts["update"] == 2 for result in results)
    traces = [json.loads(path.read_text()) for path in tmp_path.glob("*.json")]
    assert len({trace["pid"] for trace in traces}) == 2
    moments = sorted({trace["start"] for trace in traces} | {trace["end"] for trace in traces})
    busiest = max(sum(t["start"] <= moment < t["end"] for t in traces) for moment in moments)
    assert busiest == 2


@pytest.mark.pulumi_cli
@pytest.mark.skipif(shutil.which("pulumi") is None, reason="needs the pulumi CLI, which cannot be installed here")
@pytest.mark.skipif("HCLOUD_TOKEN" not in os.environ, reason="a preview asks the Hetzner API: needs HCLOUD_TOKEN")
def test_a_real_preview_of_the_example_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pulumi import automation

    monkeypatch.setenv("PULUMI_BACKEND_URL", f"file://{tmp_path}")
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "fleet-preview-test")
    automation.create_or_select_stack(stack_name="customer-example", work_dir=str(REPO))
    preview = preview_stack("customer-example")
    assert preview.counts["create"] > 0
    assert preview.blocking == []
