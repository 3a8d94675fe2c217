"""What one stack's drift audit found, and the fleet's summary table.

Cloud drift comes from a refresh preview: a resource whose live state differs from Pulumi's state
was changed outside Pulumi (a firewall rule added in the console, a server resized by hand).
Host drift comes from the status file the VPS's own drift check writes (components/drift_check.py).
An unreachable host is its own category: nothing is known about it, which is not the same as drift.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pulumi.automation import EngineEvent, OpType

from config.policy import DriftPolicy


class Verdict(StrEnum):
    DRIFT = "drift"
    UNREACHABLE = "unreachable"
    ERROR = "error"
    REPAIRED = "repaired"
    OK = "ok"


# Worst first: the order of the table and of the exit status.
SEVERITY = list(Verdict)
# Host drift repaired on the VPS longer ago than this is history, not news.
RECENT = datetime.timedelta(days=1)


@dataclass
class Finding:
    verdict: Verdict
    details: list[str] = field(default_factory=list)


@dataclass
class StackDrift:
    stack: str
    cloud: Finding
    host: Finding
    checked_at: str | None = None
    # A refresh preview that failed, on one line: the CLI's errors and its log (fleet.failures).
    failure: str | None = None

    @property
    def verdict(self) -> Verdict:
        return min(self.cloud.verdict, self.host.verdict, key=SEVERITY.index)


def _name(urn: str) -> str:
    return urn.rsplit("::", 1)[-1]


def cloud_finding(events: Iterable[EngineEvent]) -> Finding:
    """Resources whose refreshed state differs from the stack's state."""
    details: list[str] = []
    errors: list[str] = []
    for event in events:
        if event.res_outputs_event is not None:
            step = event.res_outputs_event.metadata
            if step.op == OpType.DELETE:
                details.append(f"{_name(step.urn)} ({step.type}): deleted outside Pulumi")
            elif step.op == OpType.UPDATE:
                changed = ", ".join(sorted(step.diffs or [])) or "outputs"
                details.append(f"{_name(step.urn)} ({step.type}): changed outside Pulumi: {changed}")
        elif event.diagnostic_event is not None and event.diagnostic_event.severity == "error":
            errors.append(event.diagnostic_event.message.strip())
    if details:
        return Finding(Verdict.DRIFT, details + errors)
    return Finding(Verdict.ERROR, errors) if errors else Finding(Verdict.OK)


def _parse_time(value: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def host_finding(
    raw_status: str | None, stack_digest: str | None, policy: DriftPolicy, now: datetime.datetime
) -> tuple[Finding, str | None]:
    """The verdict on a host from its status file (None: the file does not exist), and when it was checked."""
    if raw_status is None:
        return Finding(Verdict.DRIFT, ["no drift status on the host: the drift check has never run"]), None
    try:
        status: dict[str, Any] = json.loads(raw_status)
        checked_at = str(status["checked_at"])
        checked = _parse_time(checked_at)
        result = str(status["result"])
    except (ValueError, KeyError, TypeError):
        return Finding(Verdict.ERROR, ["the drift status on the host is not readable"]), None
    details: list[str] = []
    if result in ("unrepaired", "drift"):
        details += [f"not repaired: {item}" for item in status.get("remaining") or status.get("drift") or []]
    if stack_digest and status.get("bundle_digest") != stack_digest:
        details.append(
            f"the host's baseline bundle ({str(status.get('bundle_digest'))[:12]}) is not the stack's "
            f"({stack_digest[:12]}): restored from an old snapshot, or the last apply failed"
        )
    # Three missed periods: the timer is not running.
    if now - checked > datetime.timedelta(seconds=3 * policy.check_interval_seconds + policy.first_check_seconds):
        details.append(f"the last check was at {checked_at}: the drift timer is not running")
    if details:
        return Finding(Verdict.DRIFT, details), checked_at
    # A probe that cannot look (its tool missing or failing) leaves that part of the baseline unverified.
    blind = [f"{probe} not checked: {note}" for probe, note in sorted((status.get("notes") or {}).items())]
    if blind:
        return Finding(Verdict.ERROR, blind), checked_at
    last = status.get("last_drift") or {}
    if last.get("at") and now - _parse_time(last["at"]) <= RECENT:
        repaired = [f"repaired at {last['at']}: {item}" for item in last.get("what", [])]
        return Finding(Verdict.REPAIRED, repaired), checked_at
    return Finding(Verdict.OK), checked_at


def exit_status(audits: Sequence[StackDrift]) -> int:
    """1: drift somewhere; 2: no drift seen, but some stack could not be checked; 0: all clean."""
    verdicts = {audit.cloud.verdict for audit in audits} | {audit.host.verdict for audit in audits}
    if Verdict.DRIFT in verdicts:
        return 1
    if verdicts & {Verdict.UNREACHABLE, Verdict.ERROR}:
        return 2
    return 0


def render(audits: Sequence[StackDrift]) -> str:
    """A Markdown summary table, worst stacks first, with the details below it."""
    counts = {verdict: sum(audit.verdict == verdict for audit in audits) for verdict in Verdict}
    summary = ", ".join(f"{count} {verdict.value}" for verdict, count in counts.items() if count)
    lines = [
        "## Baseline drift",
        "",
        f"{len(audits)} stacks: {summary or 'none'}.",
        "",
        "| stack | cloud | host | host checked at |",
        "|---|---|---|---|",
    ]
    ordered = sorted(audits, key=lambda audit: (SEVERITY.index(audit.verdict), audit.stack))
    for audit in ordered:
        lines.append(f"| {audit.stack} | {audit.cloud.verdict} | {audit.host.verdict} | {audit.checked_at or '-'} |")
    for audit in ordered:
        details = [f"- cloud: {item}" for item in audit.cloud.details]
        details += [f"- host: {item}" for item in audit.host.details]
        if details:
            lines += ["", f"### {audit.stack}", *details]
    return "\n".join(lines) + "\n"


def to_json(audits: Sequence[StackDrift]) -> str:
    return json.dumps(
        [
            {
                "stack": audit.stack,
                "verdict": audit.verdict.value,
                "cloud": {"verdict": audit.cloud.verdict.value, "details": audit.cloud.details},
                "host": {"verdict": audit.host.verdict.value, "details": audit.host.details},
                "host_checked_at": audit.checked_at,
            }
            for audit in audits
        ],
        indent=2,
    )
