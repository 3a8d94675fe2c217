"""The rollout: waves, a canary, the health gate, a halt at the failure budget, and a resume that
continues from the state file. 50 stand-in stacks run in real worker processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from fleet import rollout
from fleet.__main__ import main
from fleet.health import bundle_digest, check_health
from fleet.rollout import RolloutState, Waves, plan_waves
from fleet.stacks import REPO
from tests.fleet_standin import StandInDeploy, baseline_tar

STACKS = [f"customer-{index:02d}" for index in range(50)]
WAVES = Waves(canary="customer-07", first_batch=5, growth=2, seed=1234)


def deploys(trace: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (trace / "deploys.jsonl").read_text().splitlines()]


def test_waves_start_with_the_canary_then_grow_shuffled() -> None:
    waves = plan_waves(STACKS, WAVES)
    assert waves[0] == ["customer-07"]
    assert [len(wave) for wave in waves] == [1, 5, 10, 20, 14]
    assert sorted(stack for wave in waves for stack in wave) == STACKS
    assert waves[1:] != [STACKS[1:6], STACKS[6:16]]  # shuffled
    assert plan_waves(STACKS, WAVES) == waves  # the seed makes the order reproducible
    assert [len(w) for w in plan_waves(STACKS, WAVES.model_copy(update={"max_batch": 8}))] == [1, 5, 8, 8, 8, 8, 8, 4]
    with pytest.raises(ValueError, match="canary customer-99 is not one of the stacks"):
        plan_waves(STACKS, WAVES.model_copy(update={"canary": "customer-99"}))


def test_the_health_gate_reads_the_baseline_on_the_host() -> None:
    shipped, digest = baseline_tar()
    assert bundle_digest(shipped) == digest
    assert bundle_digest(baseline_tar(rate=1)[0]) != digest

    class Probe:
        def __init__(self, status: int | None, bundle: bytes) -> None:
            self.status, self.bundle = status, bundle

        def gateway_status(self, url: str) -> int | None:
            return self.status

        def host_bundle(self, stack: str, outputs: object) -> bytes:
            return self.bundle

    outputs = {"gateway_url": "http://203.0.113.10:8080/", "baseline_digest": digest}
    assert check_health("customer-acme", outputs, Probe(401, shipped)) == []
    problems = check_health("customer-acme", outputs, Probe(None, b"not a tar stream"))
    assert "answered nothing without credentials; expected 401" in problems[0]
    assert "could not be read" in problems[1]
    assert "host does not run the reviewed baseline" in check_health("c", outputs, Probe(401, baseline_tar(2)[0]))[0]
    assert "answered 200" in check_health("c", outputs, Probe(200, shipped))[0]


def test_a_rollout_halts_at_the_failure_budget_and_resumes(tmp_path: Path) -> None:
    waves = plan_waves(STACKS, WAVES)
    broken = frozenset(waves[2][:3])  # three failures in the third wave; the budget allows 2 of 50
    state_path = tmp_path / "rollout.json"
    state = RolloutState(waves=waves, failure_budget=0.04)

    state = rollout.rollout(state, state_path, StandInDeploy(tmp_path, broken), concurrency=4, timeout=60)
    assert state.halted == "halted in wave 3 of 5: 3 failures exceed the budget of 2"
    assert sorted(state.failed) == sorted(broken)
    assert all("host does not run the reviewed baseline" in reason for reason in state.failed.values())
    assert set(waves[0] + waves[1]) <= set(state.done)
    assert not set(waves[3] + waves[4]) & {d["stack"] for d in deploys(tmp_path)}  # later waves never started
    assert RolloutState.load(state_path) == state
    before = Counter(d["stack"] for d in deploys(tmp_path))

    fixed = rollout.rollout(
        RolloutState.load(state_path), state_path, StandInDeploy(tmp_path), concurrency=4, timeout=60
    )
    assert fixed.halted is None and fixed.failed == {}
    assert sorted(fixed.done) == STACKS
    attempts = Counter(d["stack"] for d in deploys(tmp_path))
    assert {stack for stack, count in attempts.items() if count > 1} == set(broken)  # finished stacks not redone
    assert all(attempts[stack] == before[stack] for stack in state.done)
    assert RolloutState.load(state_path).done == fixed.done


def test_a_failed_canary_halts_before_anything_else(tmp_path: Path) -> None:
    state = RolloutState(waves=plan_waves(STACKS, WAVES), failure_budget=0.5)
    state = rollout.rollout(
        state, tmp_path / "s.json", StandInDeploy(tmp_path, frozenset({"customer-07"})), concurrency=4, timeout=60
    )
    assert state.halted == "halted in wave 1 of 5: the canary failed"
    assert [d["stack"] for d in deploys(tmp_path)] == ["customer-07"] and state.done == []


def test_a_hung_deploy_is_killed_and_counted_against_the_budget(tmp_path: Path) -> None:
    waves = plan_waves(STACKS[:6], WAVES.model_copy(update={"canary": None}))
    state = RolloutState(waves=waves, failure_budget=0.2)
    hung = StandInDeploy(tmp_path, hung=frozenset({waves[1][0]}))
    state = rollout.rollout(state, tmp_path / "s.json", hung, concurrency=6, timeout=2)
    assert state.halted is None and len(state.done) == 5
    assert "timed out after 2 s" in state.failed[waves[1][0]] and "pulumi cancel" in state.failed[waves[1][0]]


def test_a_halted_rollout_is_only_continued_by_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "rollout.json"
    RolloutState(waves=[["customer-a"]], failure_budget=0, halted="halted in wave 1 of 1: the canary failed").save(path)
    assert main(["rollout", "--state", str(path), "--stack", "customer-a"]) == 2
    assert "continue it with --resume" in capsys.readouterr().err


def test_a_rollout_names_its_commit_in_full_and_only_for_the_provisioner(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = str(tmp_path / "rollout.json")
    with pytest.raises(SystemExit) as short:
        main(["rollout", "--provisioner", "--state", state, "--commit", "d465ff7"])
    assert short.value.code == 2 and "--commit: must be a full commit id" in capsys.readouterr().err
    with pytest.raises(SystemExit) as local:
        main(["rollout", "--state", state, "--commit", "d" * 40])
    assert local.value.code == 2 and "--commit: only with --provisioner" in capsys.readouterr().err


@pytest.mark.pulumi_cli
@pytest.mark.parametrize("refresh", [[], ["--refresh"]])
def test_a_local_rollout_runs_each_stack_through_the_cli_and_halts_on_one_it_cannot_deploy(
    tmp_path: Path, refresh: list[str]
) -> None:
    state = tmp_path / "rollout.json"
    env = {**os.environ, "PULUMI_BACKEND_URL": f"file://{tmp_path}", "PULUMI_CONFIG_PASSPHRASE": "local-rollout"}
    command = [sys.executable, "-m", "fleet", "rollout", "--state", str(state), "--stack", "customer-missing"]
    logs = tmp_path / "logs"
    ran = subprocess.run(
        [*command, *refresh, "--logs", str(logs)], env=env, cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert ran.returncode == 1, ran.stdout + ran.stderr
    halted = RolloutState.load(state)
    assert halted.halted == "halted in wave 1 of 1: the canary failed"
    # The CLI's error, the stack and the log of the operation that failed (its first CLI command).
    [log] = logs.iterdir()
    operation = "refresh" if refresh else "preview"
    assert log.name.startswith("customer-missing-") and log.name.endswith(f"-{operation}.log"), log
    said = "pulumi stack select failed on stack customer-missing: error: no stack named 'customer-missing' found"
    # A refresh fails as such; a failed preview is a deploy the preview refused.
    reason = said if refresh else f"DeployFailed: {said}"
    assert halted.failed["customer-missing"] == f"{reason}; full log: {log}"
    assert f"  customer-missing: {reason}; full log: {log}" in ran.stdout.splitlines(), ran.stdout
    assert log.read_text() == "$ pulumi stack select\nerror: no stack named 'customer-missing' found\n"
