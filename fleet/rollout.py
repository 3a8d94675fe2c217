"""Deploy the fleet in waves: a canary stack, then growing shuffled batches, halting at a failure budget.

    python -m fleet rollout --state rollout.json [--canary customer-example] [--first-batch 5]
                            [--growth 2] [--max-batch 500] [--concurrency 8] [--timeout 1800]
                            [--failure-budget 0.02] [--seed N]
    python -m fleet rollout --state rollout.json --resume

One job drives every stack through `fleet.workers`: each stack runs in its own process with a
timeout and at most `--concurrency` at a time. Per stack, what deploys is what was reviewed: a
fresh preview with the policy pack saves a plan and must show no blocking finding (no server
replace or delete, no mandatory violation), then `up --plan` is held to exactly that plan, then the
health gate runs (`fleet.health`). A failed canary halts at once; later waves halt once the
failures exceed the budget. The state file records every finished stack after each one, so
`--resume` continues where the rollout stopped and retries the stacks that failed.
"""

from __future__ import annotations

import math
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from fleet import health, stacks
from fleet.desired import DesiredConfig
from fleet.workers import Operation, Outcome, run_each

# A fresh server needs a moment after `up` before everything answers.
HEALTH_ATTEMPTS = 6
HEALTH_RETRY_SECONDS = 10
KILLED_UP = "a killed `up` can leave the stack locked with pending operations: `pulumi cancel` and `pulumi refresh` it"


class Waves(BaseModel):
    """How the rollout grows; recorded in the state so a resume keeps the same order."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    canary: str | None = None
    first_batch: int = Field(default=5, ge=1)
    growth: float = Field(default=2.0, ge=1.0)
    max_batch: int = Field(default=500, ge=1)
    seed: int = Field(default_factory=lambda: random.SystemRandom().randrange(2**32))


class RolloutState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    waves: list[list[str]]
    failure_budget: float = Field(ge=0, le=1)
    done: list[str] = []
    failed: dict[str, str] = {}
    halted: str | None = None

    @property
    def allowed_failures(self) -> int:
        return math.floor(self.failure_budget * sum(len(wave) for wave in self.waves))

    def save(self, path: Path) -> None:
        # Written whole and renamed, so a killed job never leaves a half-written state.
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as handle:
            handle.write(self.model_dump_json(indent=2))
        Path(handle.name).replace(path)

    @classmethod
    def load(cls, path: Path) -> RolloutState:
        return cls.model_validate_json(path.read_text())


def plan_waves(stack_names: Sequence[str], waves: Waves) -> list[list[str]]:
    """[canary], then the rest shuffled into batches of first_batch, growing by growth, each, at most max_batch."""
    rest = sorted(set(stack_names))
    if waves.canary is not None and waves.canary not in rest:
        raise ValueError(f"the canary {waves.canary} is not one of the stacks")
    if not rest:
        return []
    canary = waves.canary or rest[0]
    rest.remove(canary)
    random.Random(waves.seed).shuffle(rest)  # noqa: S311 (an order, not a secret)
    planned, size = [[canary]], float(waves.first_batch)
    while rest:
        batch = min(int(size), waves.max_batch)
        planned.append(rest[:batch])
        rest = rest[batch:]
        size *= waves.growth
    return planned


def rollout(
    state: RolloutState,
    state_path: Path,
    deploy: Operation[object],
    *,
    concurrency: int,
    timeout: float,
    timed_out: str = KILLED_UP,
) -> RolloutState:
    """Run the waves from `state`, saving it after every stack; stops at the failure budget.
    `timed_out` is what a stack whose deploy was killed at `timeout` is left needing."""
    state.halted = None
    state.failed = {}
    state.save(state_path)

    def record(outcome: Outcome[object]) -> None:
        if outcome.failure is None:
            state.done.append(outcome.stack)
        elif outcome.timed_out:
            state.failed[outcome.stack] = f"{outcome.failure}; {timed_out}"
        else:
            state.failed[outcome.stack] = str(outcome.failure)
        state.save(state_path)

    for index, wave in enumerate(state.waves):
        todo = [stack for stack in wave if stack not in state.done]
        allowed = 0 if index == 0 else state.allowed_failures
        run_each(
            todo,
            deploy,
            concurrency=concurrency,
            timeout=timeout,
            proceed=lambda allowed=allowed: len(state.failed) <= allowed,
            on_outcome=record,
        )
        if len(state.failed) > allowed:
            what = "the canary failed" if index == 0 else f"{len(state.failed)} failures exceed the budget of {allowed}"
            state.halted = f"halted in wave {index + 1} of {len(state.waves)}: {what}"
            state.save(state_path)
            return state
    return state


class DeployFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class DeployStack:
    """The per-stack operation: reviewed preview with a saved plan, `up` held to it, health gate."""

    workspace: stacks.Workspace
    plans: Path
    desired: DesiredConfig | None = None
    # The health gate's view of the host; by default the gateway over HTTP and the bundle over SSH.
    probe: health.Probe | None = None
    on_output: Callable[[str], None] | None = None
    # Drift repair: refresh the state from the cloud first, so the reviewed plan puts back what was
    # changed outside Pulumi (without it, the diff is against the state and such a change stays).
    refresh: bool = False

    def __call__(self, stack: str) -> dict[str, object]:
        from fleet.preview import PreviewStack

        if self.refresh:
            config = self.desired(stack) if self.desired else None
            stacks.refresh(self.workspace, stack, config=config, on_output=self.on_output)
        # The preview writes the stack's whole config; the `up` is held to its plan.
        preview = PreviewStack(self.workspace, plans=self.plans, desired=self.desired)(stack)
        if preview.blocking:
            # A preview the CLI failed says so itself: its errors, the stack and its log.
            raise DeployFailed(
                preview.failure or "the preview has blocking findings: " + "; ".join(preview.blocking)[:2000]
            )
        outputs = stacks.up(self.workspace, stack, plan=self.plans / f"{stack}.plan.json", on_output=self.on_output)
        probe = self.probe or health.LiveProbe(
            lambda name: stacks.open_stack(self.workspace, name).export_stack().deployment
        )
        for attempt in range(HEALTH_ATTEMPTS):
            problems = health.check_health(stack, outputs, probe)
            if not problems:
                return outputs
            if attempt + 1 < HEALTH_ATTEMPTS:
                time.sleep(HEALTH_RETRY_SECONDS)
        raise DeployFailed("health gate: " + "; ".join(problems))
