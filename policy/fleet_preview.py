"""Preview many customer stacks in parallel and write one Markdown summary for review.

    python -m policy.fleet_preview --stack customer-acme --stack customer-beta ... \\
        [--concurrency 4] [--out fleet-preview.md] [--full-report fleet-preview-full.md] [--report-url URL]

Each stack is previewed in its own worker process through the Automation API (its state is
process-global), against this repository's program, with the policy pack. A replace or delete of
a server, which destroys the customer's data, is a blocking finding; so is a mandatory policy
violation or a failed preview. Any blocking finding makes the exit code 1.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pulumi.automation import EngineEvent, OpType

from policy.rules import SERVER

REPO = Path(__file__).resolve().parent.parent
POLICY_PACK = Path(__file__).resolve().parent
# GitHub refuses comment bodies over 65,536 characters; leave room for the action's own framing.
COMMENT_LIMIT = 60_000
COUNTED = (OpType.CREATE, OpType.UPDATE, OpType.REPLACE, OpType.DELETE)
DATA_LOSS = {OpType.REPLACE, OpType.DELETE, OpType.CREATE_REPLACEMENT, OpType.DELETE_REPLACED}


@dataclass
class StackPreview:
    stack: str
    counts: Counter[str] = field(default_factory=Counter)
    blocking: list[str] = field(default_factory=list)
    advisories: list[str] = field(default_factory=list)


def summarize(stack: str, events: Iterable[EngineEvent]) -> StackPreview:
    """Counts per operation and the findings of one stack's preview, from its engine events."""
    preview = StackPreview(stack)
    replaced: set[str] = set()
    for event in events:
        if event.resource_pre_event is not None:
            step = event.resource_pre_event.metadata
            op = OpType(step.op)
            if op in COUNTED:
                preview.counts[op.value] += 1
            if step.type == SERVER and op in DATA_LOSS and step.urn not in replaced:
                replaced.add(step.urn)
                name = step.urn.rsplit("::", 1)[-1]
                preview.blocking.append(f"server `{name}` would be {_verb(op)}: the customer's data would be lost")
        elif event.policy_event is not None:
            policy = event.policy_event
            finding = f"policy `{policy.policy_name}`: {policy.message.strip()}"
            target = preview.blocking if policy.enforcement_level == "mandatory" else preview.advisories
            target.append(finding)
        elif event.diagnostic_event is not None and event.diagnostic_event.severity == "error":
            preview.blocking.append(f"error: {event.diagnostic_event.message.strip()}")
    return preview


def _verb(op: OpType) -> str:
    return "deleted" if op in (OpType.DELETE, OpType.DELETE_REPLACED) else "replaced"


def render(previews: Sequence[StackPreview], limit: int = COMMENT_LIMIT, full_report: str | None = None) -> str:
    """One Markdown summary, cut to `limit` characters with a pointer to the full report."""
    blocked = [p for p in previews if p.blocking]
    verdict = (
        f"**{len(blocked)} of {len(previews)} stacks have blocking findings.**"
        if blocked
        else f"No blocking findings in {len(previews)} stacks."
    )
    lines = ["## Fleet preview", "", verdict, "", "| stack | create | update | replace | delete | findings |"]
    lines.append("|---|---|---|---|---|---|")
    for preview in sorted(previews, key=lambda p: (not p.blocking, p.stack)):
        counts = [str(preview.counts.get(op.value, 0)) for op in COUNTED]
        status = f"⛔ {len(preview.blocking)} blocking" if preview.blocking else "ok"
        if preview.advisories:
            status += f", {len(preview.advisories)} advisory"
        lines.append(f"| {preview.stack} | {' | '.join(counts)} | {status} |")
    details = []
    for preview in sorted(previews, key=lambda p: p.stack):
        findings = [f"- ⛔ {item}" for item in preview.blocking] + [f"- {item}" for item in preview.advisories]
        if findings:
            details += ["", f"### {preview.stack}", *findings]
    text = "\n".join([*lines, *details]) + "\n"
    if len(text) <= limit:
        return text
    pointer = f"\n_Summary cut to fit a comment; the full report is {full_report or 'in the job artifacts'}._\n"
    cut = text[: limit - len(pointer)]
    return cut[: cut.rfind("\n") + 1] + pointer


def preview_stack(stack: str) -> StackPreview:
    """Preview one stack with the policy pack (Automation API; needs the pulumi CLI)."""
    from pulumi import automation

    events: list[EngineEvent] = []
    workspace = automation.select_stack(stack_name=stack, work_dir=str(REPO))
    try:
        workspace.preview(on_event=events.append, policy_packs=[str(POLICY_PACK)], color="never")
    except automation.CommandError as error:
        preview = summarize(stack, events)
        if not preview.blocking:
            preview.blocking.append(f"preview failed: {str(error).strip().splitlines()[-1]}")
        return preview
    return summarize(stack, events)


def preview_fleet(
    stacks: Sequence[str], concurrency: int, preview: Callable[[str], StackPreview] = preview_stack
) -> list[StackPreview]:
    """Every stack in its own process, at most `concurrency` at a time, results in input order."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=concurrency, mp_context=context) as pool:
        return list(pool.map(preview, stacks))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m policy.fleet_preview", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", action="append", required=True, help="a customer stack (repeat)")
    parser.add_argument("--concurrency", type=int, default=4, choices=range(1, 33), metavar="1-32")
    parser.add_argument("--out", type=Path, default=Path("fleet-preview.md"))
    parser.add_argument("--full-report", type=Path, default=Path("fleet-preview-full.md"))
    parser.add_argument("--report-url", help="where reviewers find the full report (e.g. the run's artifacts)")
    args = parser.parse_args(argv)
    previews = preview_fleet(args.stack, args.concurrency)
    args.full_report.write_text(render(previews, limit=sys.maxsize))
    args.out.write_text(render(previews, full_report=args.report_url or str(args.full_report)))
    print(args.out.read_text())
    return 1 if any(p.blocking for p in previews) else 0


if __name__ == "__main__":
    sys.exit(main())
