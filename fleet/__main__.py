"""python -m fleet list | preview | rollout | up (see fleet/preview.py, fleet/rollout.py, fleet/control.py,
fleet/stacks.py)."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

from pydantic import SecretStr, ValidationError

from fleet import control, preview, resize, rollout, sandbox, stacks
from fleet.desired import DesiredConfig
from fleet.failures import StackOperationFailed
from fleet.workers import Operation
from provisioner.settings import COMMIT_PATTERN


def _workspace(args: argparse.Namespace) -> stacks.Workspace:
    # Settings from the provisioner are written into workspaces of their own, never into the checkout.
    stacks_dir = Path(tempfile.mkdtemp(prefix="fleet-stacks-")) if args.settings_from_provisioner else None
    return stacks.Workspace(
        program_dir=args.program_dir, policy_pack=args.policy_pack, stacks_dir=stacks_dir, logs_dir=args.logs
    )


def _reader(args: argparse.Namespace) -> control.Provisioner | None:
    """The provisioner the fleet and its settings are read from, or whose workers deploy (--provisioner,
    with the operator token); reading alone takes the review token when there is one."""
    if args.command == "rollout" and args.provisioner:
        return control.Provisioner.from_env(os.environ)
    return control.reading_provisioner(os.environ) if args.settings_from_provisioner else None


def _desired(args: argparse.Namespace) -> DesiredConfig | None:
    return args.reader.settings if args.settings_from_provisioner else None


def _hetzner_token(args: argparse.Namespace) -> Callable[[str], SecretStr] | None:
    """Each stack's own project's read token, when CLAW_HETZNER_READ_TOKENS maps the fleet's projects."""
    if not (args.settings_from_provisioner and os.environ.get(control.READ_TOKENS_VARIABLE)):
        return None
    return control.ProjectReadTokens.from_env(args.reader, os.environ)


def _listing(args: argparse.Namespace) -> Callable[[stacks.Workspace], list[str]] | None:
    """The fleet as the provisioner knows it (a stack only in the backend has no settings to run with)."""
    reader: control.Provisioner | None = args.reader
    return None if reader is None else lambda _workspace: reader.stacks()


def _commit(value: str) -> str:
    if not re.fullmatch(COMMIT_PATTERN, value):
        raise argparse.ArgumentTypeError("must be a full commit id, 40 lowercase hex digits")
    return value


def _logs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--logs",
        type=Path,
        default=Path("fleet-logs"),
        help="where the CLI's output of each failed stack operation is kept (<stack>-<time>-<operation>.log)",
    )


def _common(parser: argparse.ArgumentParser, concurrency: int, timeout: int) -> None:
    parser.add_argument("--stack", action="append", default=[], help="a customer stack (repeat); default: all")
    parser.add_argument("--program-dir", type=Path, default=stacks.REPO, help="the Pulumi program to run")
    parser.add_argument(
        "--policy-pack", type=Path, default=stacks.REPO / "policy", help="the pack that judges (the base branch's)"
    )
    _logs(parser)
    parser.add_argument("--concurrency", type=int, default=concurrency, choices=range(1, 65), metavar="1-64")
    parser.add_argument("--timeout", type=float, default=timeout, help="seconds per stack before it is killed")
    parser.add_argument(
        "--settings-from-provisioner",
        action="store_true",
        help="list the fleet and write each stack's whole config from the provisioner first "
        "(CLAW_PROVISIONER_URL; CLAW_REVIEW_TOKEN, else CLAW_OPERATOR_TOKEN); a preview reads each stack "
        "with its Hetzner project's token when CLAW_HETZNER_READ_TOKENS maps them",
    )


def _refresh(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--refresh",
        action="store_true",
        help="repair drift: refresh each stack's state from the cloud before its reviewed preview, so its up "
        "puts back what was changed outside Pulumi",
    )


def _preview(args: argparse.Namespace) -> int:
    workspace = _workspace(args)
    redacted_state = None
    if args.confine:
        try:
            workspace = sandbox.confine(workspace, args.confine)
        except (OSError, ValueError, subprocess.CalledProcessError) as error:
            print(f"--confine: {error}", file=sys.stderr)
            return 2
        redacted_state = args.reader.state
    previews, findings = preview.preview_fleet(
        args.stack,
        preview.PreviewStack(
            workspace,
            canary=args.canary,
            plans=args.plans,
            desired=_desired(args),
            hetzner_token=args.hetzner_token,
            redacted_state=redacted_state,
        ),
        workspace=workspace,
        concurrency=args.concurrency,
        timeout=args.timeout,
        min_stacks=args.min_stacks,
        list_names=_listing(args),
    )
    report = args.report_url or str(args.full_report)
    full = preview.render(previews, fleet_findings=findings, canary=args.canary, limit=sys.maxsize)
    args.full_report.write_text(full)
    args.out.write_text(preview.render(previews, fleet_findings=findings, canary=args.canary, full_report=report))
    print(args.out.read_text())
    for failed in previews:
        if failed.failure is not None:
            print(failed.failure, file=sys.stderr)
    return 1 if findings or any(p.blocking for p in previews) else 0


def _rollout(args: argparse.Namespace) -> int:
    workspace = _workspace(args)
    if args.resume:
        state = rollout.RolloutState.load(args.state)
    else:
        if args.state.exists() and rollout.RolloutState.load(args.state).halted:
            print(f"{args.state} holds a halted rollout; continue it with --resume", file=sys.stderr)
            return 2
        try:
            names = args.stack or stacks.list_customer_stacks(workspace, _listing(args))
        except stacks.StackListError as error:
            print(error, file=sys.stderr)
            return 2
        waves = rollout.Waves(
            canary=args.canary, first_batch=args.first_batch, growth=args.growth, max_batch=args.max_batch
        )
        if args.seed is not None:
            waves = waves.model_copy(update={"seed": args.seed})
        state = rollout.RolloutState(waves=rollout.plan_waves(names, waves), failure_budget=args.failure_budget)
    deploy: Operation[object]
    if args.provisioner:
        deploy = control.SubmittedDeploy(
            args.reader, request_id=uuid.uuid4().hex, commit=args.commit, refresh=args.refresh
        )
        timed_out = "the deploy goes on in the provisioner; a resumed rollout deploys the stack again after it"
    else:
        deploy = rollout.DeployStack(
            workspace,
            args.plans or Path(tempfile.mkdtemp(prefix="fleet-plans-")),
            _desired(args),
            refresh=args.refresh,
        )
        timed_out = rollout.KILLED_UP
    state = rollout.rollout(
        state, args.state, deploy, concurrency=args.concurrency, timeout=args.timeout, timed_out=timed_out
    )
    total = sum(len(wave) for wave in state.waves)
    print(f"{len(state.done)} of {total} stacks deployed; {len(state.failed)} failed in this run")
    for stack, reason in sorted(state.failed.items()):
        print(f"  {stack}: {reason}")
    resume = f"python -m fleet rollout --state {args.state} --resume"
    if state.halted:
        print(f"{state.halted}; fix the cause, then: {resume}")
        return 1
    if state.failed:
        # Within the budget the rollout went on, but those customers still run the old version.
        print(f"{len(state.failed)} stacks failed within the budget; to retry them: {resume}")
        return 1
    return 0


def _up(args: argparse.Namespace) -> int:
    if args.provisioner:
        return _submitted_up(args)
    workspace = stacks.Workspace(program_dir=args.program_dir, policy_pack=args.policy_pack, logs_dir=args.logs)

    def show(line: str) -> None:
        # The CLI's lines come without their newline; a resize's messages with one.
        print(line.rstrip("\n"), flush=True)

    try:
        if args.refresh:
            stacks.refresh(workspace, args.stack, on_output=show)
        outputs = stacks.up(workspace, args.stack, on_output=show)
    except StackOperationFailed as error:
        print(error, file=sys.stderr)
        return 1
    except resize.ResizeError as error:
        print(f"error: {error} (stack {args.stack})", file=sys.stderr)
        return 1
    return _print_outputs(outputs)


def _submitted_up(args: argparse.Namespace) -> int:
    """The stack's deploy as a job on the provisioner, followed to its end: under the queue's fencing,
    with the customer's last provisioned settings, on a worker holding the project's token."""
    try:
        provisioner = control.Provisioner.from_env(os.environ)
        deploy = control.SubmittedDeploy(
            provisioner, request_id=uuid.uuid4().hex, commit=args.commit, refresh=args.refresh
        )
        what = "drift repair" if args.refresh else "deploy"
        print(f"submitted to {provisioner.url}; following the {what} of {args.stack}", flush=True)
        outputs = deploy(args.stack)
    except (control.ProvisionerError, ValidationError) as error:
        print(f"the provisioner: {error}", file=sys.stderr)
        return 2
    except rollout.DeployFailed as error:
        print(error, file=sys.stderr)
        return 1
    return _print_outputs(outputs)


def _print_outputs(outputs: Mapping[str, object]) -> int:
    for name, value in sorted(outputs.items()):
        print(f"{name}: {value}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleet", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    listing = commands.add_parser("list", help="print every customer stack; exit 2 when the backend cannot tell")
    listing.add_argument("--program-dir", type=Path, default=stacks.REPO)

    reviewing = commands.add_parser("preview", help="preview the fleet and write the pull-request summary")
    _common(reviewing, concurrency=4, timeout=900)
    reviewing.add_argument("--min-stacks", type=int, default=1, help="fewer customer stacks than this is blocking")
    reviewing.add_argument("--canary", help="the stack whose diff is shown per property")
    reviewing.add_argument("--plans", type=Path, help="save each stack's update plan here")
    reviewing.add_argument("--out", type=Path, default=Path("fleet-preview.md"))
    reviewing.add_argument("--full-report", type=Path, default=Path("fleet-preview-full.md"))
    reviewing.add_argument("--report-url", help="where reviewers find the full report (the run's artifacts)")
    reviewing.add_argument(
        "--confine",
        metavar="USER",
        help="with --settings-from-provisioner, for a program that is not trusted (a pull request's; as root): "
        "each stack's redacted state from the provisioner on a throwaway backend, and the program's interpreter "
        "(its .venv's) run as USER with none of this process's variables and no network but loopback",
    )

    deploying = commands.add_parser("rollout", help="deploy in waves with a health gate and a failure budget")
    _common(deploying, concurrency=8, timeout=1800)
    deploying.add_argument("--state", type=Path, required=True, help="the rollout's state file (JSON)")
    deploying.add_argument("--resume", action="store_true", help="continue the rollout recorded in --state")
    deploying.add_argument("--canary", help="the first stack deployed, alone (default: the first by name)")
    deploying.add_argument("--first-batch", type=int, default=5)
    deploying.add_argument("--growth", type=float, default=2.0, help="each wave is this many times the last")
    deploying.add_argument("--max-batch", type=int, default=500)
    deploying.add_argument("--failure-budget", type=float, default=0.02, help="fraction of stacks that may fail")
    deploying.add_argument("--seed", type=int, help="shuffle seed (default: random, recorded in the state)")
    deploying.add_argument("--plans", type=Path, help="where each stack's reviewed plan is kept")
    deploying.add_argument(
        "--provisioner",
        action="store_true",
        help="deploy each stack as a job on the provisioner (CLAW_PROVISIONER_URL, CLAW_OPERATOR_TOKEN) and follow it",
    )
    deploying.add_argument(
        "--commit",
        type=_commit,
        help="with --provisioner: the program commit rolled out; a worker running another one refuses the deploy",
    )
    _refresh(deploying)

    one = commands.add_parser(
        "up", help="one stack: preview with the pack, then up held to that plan; a resize shuts down gracefully"
    )
    one.add_argument("--stack", required=True, help="the stack, e.g. customer-acme")
    one.add_argument("--program-dir", type=Path, default=stacks.REPO)
    one.add_argument("--policy-pack", type=Path, default=stacks.REPO / "policy")
    _logs(one)
    one.add_argument(
        "--provisioner",
        action="store_true",
        help="run it as a deploy job on the provisioner (CLAW_PROVISIONER_URL, CLAW_OPERATOR_TOKEN) and follow it: "
        "the stack's settings from the provisioner's store, one operation per stack",
    )
    one.add_argument("--commit", type=_commit, help="with --provisioner: only a worker running this commit deploys")
    _refresh(one)

    args = parser.parse_args(argv)
    if args.command in ("rollout", "up") and args.commit and not args.provisioner:
        parser.error("--commit: only with --provisioner (a local run runs the program it is given)")
    if args.command == "preview" and args.confine and not args.settings_from_provisioner:
        parser.error("--confine: only with --settings-from-provisioner (the redacted states come from the provisioner)")
    if args.command in ("preview", "rollout"):
        try:
            args.reader = _reader(args)
            args.hetzner_token = _hetzner_token(args) if args.command == "preview" else None
        except (control.ProvisionerError, ValidationError) as error:
            print(f"the provisioner: {error}", file=sys.stderr)
            return 2
    if args.command == "up":
        return _up(args)
    if args.command == "list":
        try:
            print("\n".join(stacks.list_customer_stacks(stacks.Workspace(program_dir=args.program_dir))))
        except stacks.StackListError as error:
            print(error, file=sys.stderr)
            return 2
        return 0
    if args.command == "preview":
        return _preview(args)
    return _rollout(args)


if __name__ == "__main__":
    sys.exit(main())
