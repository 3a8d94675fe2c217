"""A stand-in for the Automation API preview: replays recorded engine events, and notes when it
ran and in which process, so the fleet orchestration can be tested for real."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from pulumi.automation import EngineEvent

from policy.fleet_preview import StackPreview, summarize

EVENTS = Path(__file__).parent / "fixtures/preview-events"
TRACE = "CLAW_FLEET_TRACE_DIR"


def recorded(stack: str) -> list[EngineEvent]:
    lines = (EVENTS / f"{stack}.jsonl").read_text().splitlines()
    return [EngineEvent.from_json(json.loads(line)) for line in lines]


def replay(stack: str) -> StackPreview:
    started = time.monotonic()
    time.sleep(0.3)  # long enough for previews to overlap when the pool lets them
    trace = Path(os.environ[TRACE]) / f"{stack}.json"
    trace.write_text(json.dumps({"pid": os.getpid(), "start": started, "end": time.monotonic()}))
    return summarize(stack, recorded(stack.split("#")[0]))
