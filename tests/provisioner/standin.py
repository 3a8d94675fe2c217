"""A stand-in StackRunner for the provisioner's tests: it records what it was asked to do and when,
takes a configurable time, and fails for customers whose id starts with "doomed"."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from provisioner.runner import Log
from provisioner.settings import ProvisionerSettings

RECORDS = "CLAW_STANDIN_DIR"
SECONDS = "CLAW_STANDIN_SECONDS"


class StandInRunner:
    def __init__(self, settings: ProvisionerSettings) -> None:
        self.settings = settings

    def _record(self, action: str, customer_id: str) -> dict[str, Any]:
        started = time.time()
        directory = Path(os.environ[RECORDS])
        marker = directory / f"{customer_id}.{action}.{os.getpid()}.{started:.6f}.json"
        _write(marker, {"start": started})
        time.sleep(float(os.environ.get(SECONDS, "0.3")))
        if customer_id.startswith("doomed"):
            raise RuntimeError("the cloud said no")
        record = {"start": started, "end": time.time(), "action": action, "customer": customer_id}
        _write(marker, record)
        return record

    def up(self, customer_id: str, config: dict[str, str], log: Log) -> dict[str, Any]:
        log(f"up {customer_id}")
        self._record("up", customer_id)
        return {"server_id": "4711", "gateway_url": f"http://{customer_id}.example:8080/"}

    def destroy(self, customer_id: str, log: Log) -> None:
        log(f"destroy {customer_id}")
        self._record("destroy", customer_id)


def _write(path: Path, record: dict[str, Any]) -> None:
    # Atomically: the tests read these files while workers write them.
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(record))
    partial.rename(path)


def records(directory: Path, action: str | None = None) -> list[dict[str, Any]]:
    """Finished operations, oldest first."""
    found = [json.loads(path.read_text()) for path in directory.glob("*.json")]
    finished = [record for record in found if "end" in record and (action is None or record["action"] == action)]
    return sorted(finished, key=lambda record: record["start"])
