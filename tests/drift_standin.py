"""Stand-in stacks and hosts for the fleet drift audit: engine events as the CLI emits them for a
refresh preview, stack outputs, and host status files as the VPS's drift check writes them."""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any

from pulumi.automation import EngineEvent
from pydantic import SecretStr

from components.host_baseline import HostSettings, render_host_baseline
from config import BaselinePolicy
from drift.access import HostAccess, HostUnreachable
from drift.fleet import audit_stack
from drift.report import StackDrift
from fleet.failures import CliError, StackOperationFailed

NOW = datetime.datetime(2026, 11, 25, 12, 0, tzinfo=datetime.UTC)
DIGEST = render_host_baseline(BaselinePolicy(), HostSettings()).digest
OLD_DIGEST = "0" * 64
TRACE = "CLAW_DRIFT_TRACE_DIR"


def _at(minutes_ago: float) -> str:
    return (NOW - datetime.timedelta(minutes=minutes_ago)).isoformat().replace("+00:00", "Z")


def _step(stack: str, op: str, kind: str, name: str, diffs: list[str] | None = None) -> dict[str, Any]:
    urn = f"urn:pulumi:{stack}::clawhosters::clawhosters:index:CustomerInstance${kind}::{name}"
    metadata: dict[str, Any] = {"op": op, "urn": urn, "type": kind, "provider": ""}
    if diffs is not None:
        metadata["diffs"] = diffs
    return metadata


def refresh_events(stack: str, changed: list[tuple[str, str, str, list[str]]]) -> list[EngineEvent]:
    """What a refresh preview reports: every resource refreshed, the changed ones with their result op."""
    found = {name: (op, kind, diffs) for op, kind, name, diffs in changed}
    resources = [
        ("hcloud:index/firewall:Firewall", f"{stack}-firewall"),
        ("hcloud:index/server:Server", f"{stack}-server"),
        ("command:remote:Command", f"{stack}-baseline"),
    ]
    events = [{"preludeEvent": {"config": {}}}]
    for kind, name in resources:
        op, kind, diffs = found.get(name, ("same", kind, None))
        events.append({"resourcePreEvent": {"metadata": _step(stack, "refresh", kind, name)}})
        events.append({"resOutputsEvent": {"metadata": _step(stack, op, kind, name, diffs)}})
    return [EngineEvent.from_json({"sequence": i, "timestamp": 0, **event}) for i, event in enumerate(events)]


def status(result: str = "ok", minutes_ago: float = 2, digest: str = DIGEST, **extra: Any) -> str:
    document = {
        "bundle_digest": digest,
        "checked_at": _at(minutes_ago),
        "result": result,
        "drift": [],
        "remaining": [],
        "last_drift": None,
        **extra,
    }
    return json.dumps(document)


# Each stand-in stack: (cloud changes or an exception, host status text / None / an exception).
SCENARIOS: dict[str, tuple[Any, Any]] = {
    "customer-clean": ([], status()),
    "customer-console": (
        [("update", "hcloud:index/firewall:Firewall", "customer-console-firewall", ["rules"])],
        status(),
    ),
    "customer-gone": ([("delete", "hcloud:index/server:Server", "customer-gone-server", [])], status()),
    "customer-repaired": (
        [],
        status(
            last_drift={"at": _at(60), "what": ["ipv4 chain CLAW-INPUT: 0 rules, expected 7"], "result": "repaired"}
        ),
    ),
    "customer-history": (
        [],
        status(last_drift={"at": _at(3 * 24 * 60), "what": ["ipv4 INPUT policy: ACCEPT"], "result": "repaired"}),
    ),
    "customer-unrepaired": (
        [],
        status("unrepaired", drift=["sshd passwordauthentication is 'yes', expected 'no'"], remaining=["sshd x"]),
    ),
    "customer-snapshot": ([], status(digest=OLD_DIGEST)),
    "customer-stale": ([], status(minutes_ago=120)),
    "customer-never": ([], None),
    "customer-blind": ([], status(notes={"firewall": "unavailable: cannot build the expected ruleset: EPERM"})),
    "customer-down": ([], HostUnreachable("TimeoutError: timed out")),
    "customer-failed": (
        StackOperationFailed(
            "customer-failed",
            "refresh",
            (CliError("the stack is currently locked by 1 lock(s)"),),
            Path("drift-logs/customer-failed-20261125T120000.000000Z-refresh-preview.log"),
        ),
        status(),
    ),
    "customer-broken": (RuntimeError("the backend answered nonsense\nerror: bad state"), status()),
}


class StandInStacks:
    def refresh_preview(self, stack: str) -> list[EngineEvent]:
        changes = SCENARIOS[stack][0]
        if isinstance(changes, Exception):
            raise changes
        return refresh_events(stack, changes)

    def outputs(self, stack: str) -> dict[str, Any]:
        return {"ipv4_address": "203.0.113.10", "baseline_digest": DIGEST, "gateway_password": "never-printed"}

    def host_access(self, stack: str) -> HostAccess:
        return HostAccess(
            host=f"{stack}.example", private_key=SecretStr("-----BEGIN..."), host_public_key="ssh-ed25519 A"
        )


class StandInReader:
    def __init__(self, stack: str) -> None:
        self.stack = stack

    def read_status(self, access: HostAccess) -> str | None:
        if TRACE in os.environ:
            (Path(os.environ[TRACE]) / f"{self.stack}.pid").write_text(str(os.getpid()))
        found = SCENARIOS[self.stack][1]
        if isinstance(found, Exception):
            raise found
        return found


def audit_standin(stack: str) -> StackDrift:
    return audit_stack(stack, StandInStacks(), StandInReader(stack), now=NOW)
