"""Preview every customer stack and write one Markdown summary for the pull request.

    python -m fleet preview [--stack customer-a ...] [--concurrency 4] [--timeout 900] [--min-stacks 1]
                            [--canary customer-example] [--policy-pack DIR] [--report-url URL]

Fail closed: a stack list the backend cannot give, fewer stacks than expected, a preview that
fails, crashes or outlives its timeout, a mandatory policy violation, a policy that could not run,
and a replace or delete of a server (the customer's data) are all blocking findings. Identical
diffs are grouped ("same change on 480 stacks"); the canary stack's diff is shown per property.
"""

from __future__ import annotations

import difflib
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pulumi.automation import EngineEvent, OpType
from pydantic import SecretStr

from fleet import sandbox, stacks
from fleet.control import ProvisionerError
from fleet.desired import DesiredConfig, MissingSettings
from fleet.failures import StackOperationFailed
from fleet.workers import Operation, Outcome, run_each

SERVER = "hcloud:index/server:Server"
# GitHub refuses comment bodies over 65,536 characters; leave room for the marker and framing.
COMMENT_LIMIT = 60_000
# The canary's property diff may use at most this much of the comment.
CANARY_BUDGET = 20_000
# Hidden in the comment body, so the workflow finds its own comment and edits it in place.
MARKER = "<!-- clawhosters:fleet-preview -->"
COUNTED = (OpType.CREATE, OpType.UPDATE, OpType.REPLACE, OpType.DELETE)
DATA_LOSS = {OpType.REPLACE, OpType.DELETE, OpType.CREATE_REPLACEMENT, OpType.DELETE_REPLACED}
CANT_RUN = "can't run policy"
STACK = "<stack>"


@dataclass(frozen=True)
class PropertyChange:
    resource: str
    key: str
    old: Any
    new: Any


@dataclass
class StackPreview:
    stack: str
    counts: Counter[str] = field(default_factory=Counter)
    # (operation, type, name with the stack's name as <stack>, changed properties), in step order.
    changes: list[tuple[str, str, str, tuple[str, ...]]] = field(default_factory=list)
    blocking: list[str] = field(default_factory=list)
    advisories: list[str] = field(default_factory=list)
    properties: list[PropertyChange] = field(default_factory=list)
    # A failed preview on one line: the CLI's errors, the stack and its log (fleet.failures).
    failure: str | None = None


def summarize(stack: str, events: Iterable[EngineEvent], detailed: bool = False) -> StackPreview:
    """Counts, changes and findings of one stack's preview, from its engine events."""
    preview = StackPreview(stack)
    flagged: set[str] = set()  # servers with a finding already (a replace emits several steps)
    for event in events:
        if event.resource_pre_event is not None:
            step = event.resource_pre_event.metadata
            op = OpType(step.op)
            name = step.urn.rsplit("::", 1)[-1]
            diffs = tuple(sorted(step.diffs or ()))
            if op in COUNTED:
                preview.counts[op.value] += 1
                preview.changes.append((op.value, step.type, name.replace(stack, STACK), diffs))
                if detailed:
                    preview.properties += _property_changes(name, step, diffs)
            if step.type != SERVER or step.urn in flagged:
                continue
            if op in DATA_LOSS:
                flagged.add(step.urn)
                preview.blocking.append(f"server `{name}` would be {_verb(op)}: the customer's data would be lost")
            elif op == OpType.UPDATE and "firewallIds" in diffs:
                flagged.add(step.urn)
                preview.blocking.append(
                    f"server `{name}` would change its firewalls; Hetzner detaches the old firewall before "
                    "attaching the new one, leaving the server unprotected in between"
                )
        elif event.policy_event is not None:
            policy = event.policy_event
            finding = f"policy `{policy.policy_name}`: {policy.message.strip()}"
            # The SDK files a policy that met an unknown value as advisory; it decided nothing.
            blocking = policy.enforcement_level == "mandatory" or CANT_RUN in policy.message
            (preview.blocking if blocking else preview.advisories).append(finding)
        elif event.diagnostic_event is not None and event.diagnostic_event.severity == "error":
            preview.blocking.append(f"error: {event.diagnostic_event.message.strip()}")
    return preview


def _property_changes(name: str, step: Any, diffs: tuple[str, ...]) -> list[PropertyChange]:
    old = (step.old.inputs if step.old else None) or {}
    new = (step.new.inputs if step.new else None) or {}
    return [PropertyChange(name, key, old.get(key), new.get(key)) for key in diffs or sorted(set(old) | set(new))]


def _verb(op: OpType) -> str:
    return "deleted" if op in (OpType.DELETE, OpType.DELETE_REPLACED) else "replaced"


def from_outcome(outcome: Outcome[StackPreview]) -> StackPreview:
    """A worker that crashed, hung or raised is a blocking finding for its stack."""
    if outcome.result is not None:
        return outcome.result
    return StackPreview(outcome.stack, blocking=[f"preview did not finish: {outcome.failure}"])


@dataclass(frozen=True)
class PreviewStack:
    """The per-stack operation a worker runs: a preview with the policy pack, its plan saved."""

    workspace: stacks.Workspace
    canary: str | None = None
    plans: Path | None = None
    # Each stack's whole config, written before its preview (fleet.desired); without it, the stack's
    # settings file in the workspace must already hold it.
    desired: DesiredConfig | None = None
    # Each stack's Hetzner token, when the fleet spans several projects (fleet.control.ProjectReadTokens);
    # without it, the workspace's.
    hetzner_token: Callable[[str], SecretStr] | None = None
    # Each stack's redacted state (fleet.redact), previewed on a throwaway backend (fleet.sandbox);
    # without it, the workspace's backend.
    redacted_state: Callable[[str], Mapping[str, Any]] | None = None

    def __call__(self, stack: str) -> StackPreview:
        events: list[EngineEvent] = []
        plan = self.plans / f"{stack}.plan.json" if self.plans else None
        try:
            config = self.desired(stack) if self.desired else None
            workspace = self.workspace
            if self.hetzner_token is not None:
                workspace = workspace.model_copy(update={"hetzner_token": self.hetzner_token(stack)})
            if self.redacted_state is not None and workspace.stacks_dir is not None:
                workspace = sandbox.throwaway_workspace(workspace, workspace.stacks_dir / f"{stack}.state")
                sandbox.import_redacted(workspace, stack, self.redacted_state(stack))
            stacks.preview(workspace, stack, events.append, plan=plan, config=config)
        except (MissingSettings, ProvisionerError) as error:
            return StackPreview(stack, blocking=[str(error)])
        except StackOperationFailed as error:
            preview = summarize(stack, events, detailed=stack == self.canary)
            # The CLI's last word, the same on every stack that fails alike; the rest is in `failure`.
            preview.blocking.append(f"preview failed: {error.errors[-1].lines()[0]}")
            preview.failure = error.summary()
            return preview
        return summarize(stack, events, detailed=stack == self.canary)


def render(
    previews: Sequence[StackPreview],
    *,
    fleet_findings: Sequence[str] = (),
    canary: str | None = None,
    limit: int = COMMENT_LIMIT,
    full_report: str | None = None,
) -> str:
    """One Markdown summary (with the marker), cut to `limit` characters with a pointer to the full report."""
    blocked = [p for p in previews if p.blocking]
    verdict = []
    if fleet_findings:
        verdict.append("**⛔ The fleet preview is incomplete: " + "; ".join(fleet_findings) + ".**")
    if blocked:
        verdict.append(f"**⛔ {len(blocked)} of {len(previews)} stacks have blocking findings.**")
    if not verdict:
        verdict.append(f"No blocking findings in {len(previews)} stacks.")
    sections = [[MARKER, "## Fleet preview", "", "\n\n".join(verdict)]]
    sections.append(_grouped("Changes", previews, lambda p: tuple(_describe_change(c) for c in p.changes)))
    if blocked:
        sections.append(_grouped("Blocking findings", blocked, lambda p: tuple(p.blocking), blocking=True))
    advised = [p for p in previews if p.advisories]
    if advised:
        sections.append(_grouped("Advisories", advised, lambda p: tuple(p.advisories)))
    canary_preview = next((p for p in previews if p.stack == canary), None)
    if canary_preview is not None:
        sections.append(_canary(canary_preview))
    text = "\n".join(line for section in sections for line in [*section, ""])
    if len(text) <= limit:
        return text
    pointer = f"\n_Summary cut to fit a comment; the full report is {full_report or 'in the job artifacts'}._\n"
    cut = text[: limit - len(pointer)]
    return cut[: cut.rfind("\n") + 1] + pointer


def _describe_change(change: tuple[str, str, str, tuple[str, ...]]) -> str:
    op, typ, name, keys = change
    return f"{op} `{name}` ({typ})" + (f": {', '.join(keys)}" if keys else "")


def _grouped(title: str, previews: Sequence[StackPreview], key: Any, blocking: bool = False) -> list[str]:
    groups: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for preview in previews:
        groups[tuple(item.replace(preview.stack, STACK) for item in key(preview))].append(preview.stack)
    lines = [f"### {title}", ""]
    for items, members in sorted(groups.items(), key=lambda group: (-len(group[1]), group[1][0])):
        who = f"same on {len(members)} stacks" if len(members) > 1 else "1 stack"
        shown = ", ".join(f"`{stack}`" for stack in sorted(members)[:5]) + (" …" if len(members) > 5 else "")
        lines.append(f"**{who}** ({shown}):")
        mark = "⛔ " if blocking else ""
        lines += [f"- {mark}{_one_line(item)}" for item in items] or ["- no changes"]
        lines.append("")
    return lines


def _one_line(text: str) -> str:
    first, _, rest = text.partition("\n")
    return first + (f" <details><summary>details</summary>\n\n```\n{rest}\n```\n</details>" if rest else "")


def _canary(preview: StackPreview) -> list[str]:
    lines = [f"### Canary `{preview.stack}`: property-level diff", ""]
    if not preview.properties:
        return [*lines, "No property changes."]
    body: list[str] = []
    for change in preview.properties:
        shown = _value_diff(change.old, change.new) or ["(the preview's events carry no values for it)"]
        body += [f"#### `{change.resource}` · `{change.key}`", "```diff", *shown, "```"]
    text = "\n".join(body)
    if len(text) > CANARY_BUDGET:
        text = text[: text.rfind("\n", 0, CANARY_BUDGET)] + "\n```\n_(canary diff cut; see the full report)_"
    return [*lines, text]


def _value_diff(old: Any, new: Any) -> list[str]:
    def text(value: Any) -> list[str]:
        if value is None:
            return []
        return (value if isinstance(value, str) else json.dumps(value, indent=2, sort_keys=True)).splitlines()

    return list(difflib.unified_diff(text(old), text(new), "before", "after", n=2, lineterm=""))[2:]


def preview_fleet(
    requested: Sequence[str],
    operation: Operation[StackPreview],
    *,
    workspace: stacks.Workspace,
    concurrency: int,
    timeout: float,
    min_stacks: int = 1,
    list_names: Callable[[stacks.Workspace], list[str]] | None = None,
) -> tuple[list[StackPreview], list[str]]:
    """Every stack's preview (blocking where one failed) and the fleet-level findings."""
    fleet_findings: list[str] = []
    try:
        names = list(requested) or stacks.list_customer_stacks(workspace, list_names)
    except stacks.StackListError as error:
        return [], [str(error)]
    if len(names) < min_stacks:
        fleet_findings.append(f"{len(names)} customer stacks found, at least {min_stacks} expected")
    outcomes = run_each(names, operation, concurrency=concurrency, timeout=timeout)
    previews = sorted((from_outcome(outcome) for outcome in outcomes), key=lambda p: p.stack)
    return previews, fleet_findings
