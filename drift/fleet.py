"""Audit customer stacks for drift: cloud (changed outside Pulumi) and host (the VPS's own check).

    python -m drift --stack customer-acme --stack customer-beta ... [--concurrency 4]
                    [--out drift-report.md] [--json drift-report.json]
    python -m drift --settings-from-provisioner [--stack ...]

With --settings-from-provisioner, the fleet (unless --stack names stacks) and each stack's whole config
come from the provisioner (CLAW_PROVISIONER_URL; CLAW_REVIEW_TOKEN, else CLAW_OPERATOR_TOKEN), each
stack in a workspace of its own, read with its Hetzner project's read-only token when
CLAW_HETZNER_READ_TOKENS maps them; the audit changes nothing. Cloud drift is repaired by
`python -m fleet up --provisioner --refresh --stack <stack>`.

Each stack is audited in its own worker process (the Automation API's state is process-global):
a refresh preview of the stack (nothing is written to its state), then the drift status file read
over the pinned SSH connection. Exit status, for scheduled runs: 0 when every stack is clean (or
its host repaired itself), 1 when any stack drifted, 2 when nothing drifted but some stack could
not be checked (an unreachable host, a failed refresh).
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing
import os
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from config.policy import BaselinePolicy, DriftPolicy
from drift.access import (
    AutomationStacks,
    HostRefused,
    HostUnreachable,
    SshStatusReader,
    Stacks,
    StatusReader,
)
from drift.report import Finding, StackDrift, Verdict, cloud_finding, exit_status, host_finding, render, to_json
from fleet import control, stacks
from fleet.failures import describe


def audit_stack(
    stack: str,
    stacks: Stacks,
    reader: StatusReader,
    policy: DriftPolicy | None = None,
    now: datetime.datetime | None = None,
) -> StackDrift:
    policy = policy or BaselinePolicy().drift
    # Any failure of one stack is that stack's finding, never the end of the audit.
    failure = None
    try:
        cloud = cloud_finding(stacks.refresh_preview(stack))
    except Exception as error:
        failure = describe(error, "refresh preview failed")
        cloud = Finding(Verdict.ERROR, [failure])
    try:
        outputs = stacks.outputs(stack)
        access = stacks.host_access(stack)
    except Exception as error:
        host = Finding(Verdict.ERROR, [describe(error, "no SSH target")])
        return StackDrift(stack, cloud, host, failure=failure)
    try:
        raw = reader.read_status(access)
    except HostUnreachable as error:
        return StackDrift(stack, cloud, Finding(Verdict.UNREACHABLE, [f"{access.host}: {error}"]), failure=failure)
    except HostRefused as error:
        return StackDrift(stack, cloud, Finding(Verdict.ERROR, [f"{access.host}: {error}"]), failure=failure)
    digest = outputs.get("baseline_digest")
    host, checked_at = host_finding(
        raw, str(digest) if digest else None, policy, now or datetime.datetime.now(datetime.UTC)
    )
    return StackDrift(stack, cloud, host, checked_at, failure)


@dataclass(frozen=True)
class AutomationAudit:
    """One stack through the Automation API and SSH (needs the stack's backend and its passphrase)."""

    stacks: AutomationStacks = field(default_factory=AutomationStacks)

    def __call__(self, stack: str) -> StackDrift:
        return audit_stack(stack, self.stacks, SshStatusReader())


def audit_fleet(
    stacks: Sequence[str], concurrency: int, audit: Callable[[str], StackDrift] = AutomationAudit()
) -> list[StackDrift]:
    """Every stack in its own process, at most `concurrency` at a time, results in input order."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=concurrency, mp_context=context) as pool:
        return list(pool.map(audit, stacks))


def from_provisioner(environ: Mapping[str, str], logs: Path) -> tuple[list[str], AutomationAudit]:
    """The fleet as the provisioner knows it, and the audit that writes each stack's config from it."""
    reader = control.reading_provisioner(environ)
    tokens = control.ProjectReadTokens.from_env(reader, environ) if environ.get(control.READ_TOKENS_VARIABLE) else None
    workspace = stacks.Workspace(stacks_dir=Path(tempfile.mkdtemp(prefix="drift-stacks-")), logs_dir=logs)
    return reader.stacks(), AutomationAudit(AutomationStacks(workspace, reader.settings, tokens))


def main(argv: list[str] | None = None, audit: Callable[[str], StackDrift] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m drift", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", action="append", default=[], help="a customer stack (repeat)")
    parser.add_argument(
        "--settings-from-provisioner",
        action="store_true",
        help="the fleet and each stack's config from the provisioner (see above); --stack narrows it",
    )
    parser.add_argument("--concurrency", type=int, default=4, choices=range(1, 33), metavar="1-32")
    parser.add_argument("--out", type=Path, default=Path("drift-report.md"), help="Markdown report")
    parser.add_argument("--json", type=Path, help="also write the findings as JSON")
    parser.add_argument(
        "--logs",
        type=Path,
        default=Path("drift-logs"),
        help="where the CLI's output of each failed refresh preview is kept (<stack>-<time>-<operation>.log)",
    )
    args = parser.parse_args(argv)
    names: list[str] = args.stack
    if args.settings_from_provisioner:
        try:
            fleet, audit = from_provisioner(os.environ, args.logs)
        except (control.ProvisionerError, ValidationError) as error:
            print(f"the provisioner: {error}", file=sys.stderr)
            return 2
        names = names or fleet
    elif not names:
        parser.error("--stack: name at least one stack, or read the fleet with --settings-from-provisioner")
    audit = audit or AutomationAudit(AutomationStacks(stacks.Workspace(logs_dir=args.logs)))
    audits = audit_fleet(names, args.concurrency, audit)
    report = render(audits)
    args.out.write_text(report)
    if args.json:
        args.json.write_text(to_json(audits) + "\n")
    print(report)
    for audited in audits:
        if audited.failure is not None:
            print(audited.failure, file=sys.stderr)
    return exit_status(audits)


if __name__ == "__main__":
    sys.exit(main())
