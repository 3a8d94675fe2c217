"""Stand-ins for the per-stack operations that need the Pulumi CLI, so the fleet orchestration runs
for real: worker processes, timeouts, crashes, waves, the state file and the health gate.

- `StandInPreview` replays recorded engine events (tests/fixtures/preview-events) as the named
  stack, and notes when it ran and in which process; a stack named `customer-crash…` kills its
  worker, `customer-hang…` never returns, `customer-raise…` raises.
- `StandInDeploy` "deploys" a stack and runs the real health gate (`fleet.health.check_health`)
  with a probe that serves a real tar stream of the rendered baseline; for the stacks in `broken`
  the host holds a different baseline, so the gate fails; the stacks in `hung` never finish.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pulumi.automation import EngineEvent

from components.host_baseline import HostSettings, render_host_baseline
from config import BaselinePolicy
from fleet.health import check_health
from fleet.preview import StackPreview, summarize

EVENTS = Path(__file__).parent / "fixtures/preview-events"
UNAUTHORIZED = 401


def recorded(fixture: str, stack: str | None = None) -> list[EngineEvent]:
    """A fixture's events, as stack `stack` would emit them."""
    text = (EVENTS / f"{fixture}.jsonl").read_text().replace(fixture, stack or fixture)
    return [EngineEvent.from_json(json.loads(line)) for line in text.splitlines()]


@dataclass(frozen=True)
class StandInPreview:
    trace: Path
    canary: str | None = None

    def __call__(self, stack: str) -> StackPreview:
        started = time.monotonic()
        if stack.startswith("customer-crash"):
            os._exit(3)
        if stack.startswith("customer-hang"):
            time.sleep(3600)
        if stack.startswith("customer-raise"):
            raise RuntimeError("the backend refused the preview\nerror: stack is locked")
        time.sleep(0.5)  # long enough for previews to overlap when the pool lets them
        fixture = stack.split("#")[0]
        preview = summarize(stack, recorded(fixture), detailed=stack == self.canary)
        (self.trace / f"{stack}.json").write_text(
            json.dumps({"pid": os.getpid(), "start": started, "end": time.monotonic()})
        )
        return preview


def baseline_tar(rate: int | None = None) -> tuple[bytes, str]:
    """A tar stream of the rendered baseline bundle, as the host holds it, and the bundle's digest."""
    policy = BaselinePolicy()
    if rate is not None:
        policy = policy.model_copy(update={"syn_guard": policy.syn_guard.model_copy(update={"rate_per_second": rate})})
    bundle = render_host_baseline(policy, HostSettings())
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w") as archive:
        for item in bundle.files:
            data = item.content.encode()
            info = tarfile.TarInfo(f"./{item.path}")
            info.size, info.mode = len(data), item.mode
            archive.addfile(info, io.BytesIO(data))
    return stream.getvalue(), bundle.digest


@dataclass(frozen=True)
class _HostProbe:
    bundle: bytes

    def gateway_status(self, url: str) -> int | None:
        return UNAUTHORIZED

    def host_bundle(self, stack: str, outputs: Any) -> bytes:
        return self.bundle


@dataclass(frozen=True)
class StandInDeploy:
    trace: Path
    broken: frozenset[str] = field(default_factory=frozenset)
    hung: frozenset[str] = field(default_factory=frozenset)

    def __call__(self, stack: str) -> dict[str, str]:
        if stack in self.hung:
            time.sleep(3600)
        shipped, digest = baseline_tar()
        on_host = baseline_tar(rate=1)[0] if stack in self.broken else shipped
        outputs = {"gateway_url": f"http://{stack}.invalid:8080/", "baseline_digest": digest}
        problems = check_health(stack, outputs, _HostProbe(on_host))
        with (self.trace / "deploys.jsonl").open("a") as log:
            log.write(json.dumps({"stack": stack, "ok": not problems}) + "\n")
        if problems:
            raise RuntimeError("health gate: " + "; ".join(problems))
        return outputs
