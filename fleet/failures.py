"""What a failed stack operation tells its operator: the CLI's own error lines, the stack, and where
the CLI's output is kept.

Every stack operation of the repository's tools (`fleet.stacks`: preview, up, refresh, destroy; in
`python -m fleet`, `python -m drift`, `python -m lab` and the provisioner's workers) runs as an
`Operation`. The CLI commands it runs go through `LoggedCommand`, which streams the output of the
operation's own commands (`preview`, `up`, `refresh`, `destroy`) into the operation's log file (mode
0600) and keeps each command's stderr, both as bounded as `fleet.cli` keeps them (1 MiB each, its
first and last half). The output of every other command stays out of the log, since the Automation
API asks some of them for secrets in clear (`config --show-secrets`, `stack output
--show-secrets`); such a command's stderr is logged only when it fails. A successful operation's log
is removed; a failed one's is kept and named in the failure.

A failed CLI command becomes `StackOperationFailed`: the errors the engine reported for it (error
diagnostics by resource, as the CLI's Diagnostics section groups them, and mandatory policy
violations, from the Automation API's event stream), then the `error:` lines of its stderr that the
events did not carry (a locked stack, a state write that failed). It is a `CommandError`, so code
that handles the Automation API's failures handles it too.
"""

from __future__ import annotations

import datetime
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from pulumi import automation

from fleet.cli import BoundedCommand, CliObserver

if TYPE_CHECKING:
    from pulumi.automation import EngineEvent

# The commands whose output is the operation's; nothing else the Automation API runs is logged.
OPERATION_COMMANDS = frozenset({"preview", "up", "refresh", "destroy"})
# What the report shows of one error message; the log has all of it (a failed remote command's error
# quotes its whole script and output).
SHOWN_LINES = 24
SHOWN_HEAD_LINES = 4
SHOWN_LINE_CHARACTERS = 400
# The one-line summary (a job's history, a rollout's state, a report's table): each error, then at most
# this many characters of errors in all, keeping the first and the last ones.
SUMMARY_ERROR_CHARACTERS = 300
SUMMARY_CHARACTERS = 1200
_EXIT_CODE = re.compile(r"\s*code: (-?\d+)")


@dataclass(frozen=True)
class CliError:
    """One error as the CLI reports it: `kind` is `error`, or `[mandatory] <policy>` for a policy
    violation; `resource` names the resource as the CLI's Diagnostics section does."""

    message: str
    resource: str | None = None
    kind: str = "error"

    def lines(self) -> list[str]:
        text = self.message.strip().splitlines() or [""]
        return [f"{self.kind}: {text[0]}", *text[1:]]


class StackOperationFailed(automation.CommandError):
    """A CLI command of a stack operation failed: what the CLI said, which stack, where its output is."""

    def __init__(self, stack: str, command: str, errors: tuple[CliError, ...], log: Path | None) -> None:
        # Exception's own constructor with every argument: the failure pickles as exceptions do.
        Exception.__init__(self, stack, command, errors, log)
        self.name = "StackOperationFailed"
        self.stack, self.command, self.errors, self.log = stack, command, errors, log

    def __str__(self) -> str:
        return self.report()

    @property
    def headline(self) -> str:
        return f"pulumi {self.command} failed on stack {self.stack}"

    def report(self) -> str:
        """What a terminal shows: the errors grouped by resource, as the CLI's Diagnostics section."""
        lines = [f"error: {self.headline}"]
        resources = list(dict.fromkeys(error.resource for error in self.errors))
        # The CLI names errors of no resource last, as it prints them after its Diagnostics section.
        for resource in sorted(resources, key=lambda name: name is None):
            indent = "  "
            if resource is not None:
                lines.append(f"  {resource}:")
                indent = "    "
            for error in self.errors:
                if error.resource == resource:
                    lines += [indent + line for line in _shown(error.lines())]
        if self.log is not None:
            lines.append(f"full log: {self.log}")
        return "\n".join(lines)

    def summary(self) -> str:
        """The same on one line."""
        said = [_cut(" ".join(" ".join(error.lines()).split()), SUMMARY_ERROR_CHARACTERS) for error in self.errors]
        said = [
            f"{error.resource}: {text}" if error.resource else text
            for error, text in zip(self.errors, said, strict=True)
        ]
        while len(said) > 2 and sum(len(text) + 3 for text in said) > SUMMARY_CHARACTERS:
            del said[len(said) // 2]  # the first errors and the last ones (the CLI's verdict) stay
        text = f"{self.headline}: {' | '.join(said)}"
        return text + (f"; full log: {self.log}" if self.log is not None else "")


def describe(error: BaseException, doing: str | None = None) -> str:
    """Any failure of a stack operation on one line: a failed CLI command as `StackOperationFailed.summary`
    says it; anything else as its type and message, after `doing` when given."""
    if isinstance(error, StackOperationFailed):
        return error.summary()
    if isinstance(error, automation.CommandError):
        # Not through an `Operation`: the SDK's message is the command's whole stdout and stderr.
        _, _, stderr = str(error).partition("\n stderr: ")
        said = " | ".join(line.strip() for line in stderr.splitlines() if line.strip().startswith("error:"))
        message = said or stderr or str(error)
    else:
        message = str(error)
    text = _cut(f"{type(error).__name__}: {' '.join(message.split())}", SUMMARY_CHARACTERS)
    return f"{doing}: {text}" if doing else text


def resource_name(urn: str | None) -> str | None:
    """`type (name)` as the CLI's Diagnostics section names a resource, e.g. `hcloud:index:Server (claw-acme)`."""
    if not urn:
        return None
    parts = urn.split("::", 3)
    if len(parts) != 4:
        return urn
    token = parts[2].rsplit("$", 1)[-1]
    package, _, rest = token.partition(":")
    module, _, member = rest.partition(":")
    # The CLI drops a module's last segment when it only repeats the member: index/server:Server.
    parent, _, last = module.rpartition("/")
    if parent and last.lower() == member.lower():
        token = f"{package}:{parent}:{member}"
    return f"{token} ({parts[3]})"


class Operation:
    """One stack operation: its CLI commands' errors and its log file (none without `logs_dir`).

    Used as a context manager: a failed CLI command in it leaves as `StackOperationFailed`."""

    def __init__(self, stack: str, name: str, logs_dir: Path | None) -> None:
        self.stack, self.name, self.logs_dir = stack, name, logs_dir
        self.log: Path | None = None
        self._file: TextIO | None = None
        # The CLI's output comes on its reader threads, the engine's events on the SDK's server threads.
        self._lock = threading.Lock()
        # The CLI command running or last run: its words, whether its output is logged, its stderr.
        self._command = name
        self._logged = False
        self._stderr: list[str] = []
        self._errors: list[CliError] = []
        # A stack handle opened for the operation may run more commands after it: they are not its.
        self.ended = False

    def __enter__(self) -> Operation:
        if self.logs_dir is not None:
            self.logs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
            self.log = self.logs_dir / f"{self.stack}-{stamp}-{self.name}.log"
            descriptor = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            self._file = os.fdopen(descriptor, "w", encoding="utf-8")
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _traceback: Any) -> None:
        failed = None
        if isinstance(error, automation.CommandError) and not isinstance(error, StackOperationFailed):
            failed = StackOperationFailed(self.stack, self._command, self._cli_errors(error), self.log)
            if not self._logged:
                # What the failed command said; its output is not the operation's (it may hold secrets).
                for line in [f"$ pulumi {self._command}", *self._stderr]:
                    self._write(line)
        elif error is not None:
            self._write(f"error: {type(error).__name__}: {error}")
        self.ended = True
        if self._file is not None:
            self._file.close()
            self._file = None
        if error is None and self.log is not None:
            self.log.unlink()
        if failed is not None:
            raise failed from error

    def watch(self, forward: Callable[[EngineEvent], None] | None = None) -> Callable[[EngineEvent], None]:
        """An `on_event` for the operation's commands: notes the errors the engine reports, then `forward`s."""

        def on_event(event: EngineEvent) -> None:
            diagnostic, policy = event.diagnostic_event, event.policy_event
            found = None
            if diagnostic is not None and diagnostic.severity == "error" and not diagnostic.ephemeral:
                found = CliError(diagnostic.message, resource_name(diagnostic.urn))
            elif policy is not None and policy.enforcement_level == "mandatory":
                found = CliError(
                    policy.message, resource_name(policy.resource_urn), f"[mandatory] {policy.policy_name}"
                )
            if found is not None:
                with self._lock:
                    self._errors.append(found)
            if forward is not None:
                forward(event)

        return on_event

    def started(self, command: str, logged: bool) -> None:
        with self._lock:
            self._command, self._logged, self._stderr, self._errors = command, logged, [], []
        if logged:
            self._write(f"$ pulumi {command}")

    def output(self, logged: bool, forward: Callable[[str], object] | None) -> Callable[[str], None]:
        def on_output(line: str) -> None:
            if logged:
                self._write(line)
            if forward is not None:
                forward(line)

        return on_output

    def error_output(self, logged: bool, forward: Callable[[str], object] | None) -> Callable[[str], None]:
        on_output = self.output(logged, forward)

        def on_error(line: str) -> None:
            with self._lock:
                self._stderr.append(line)
            on_output(line)

        return on_error

    def _write(self, line: str) -> None:
        if self._file is not None:
            with self._lock:
                self._file.write(line.rstrip("\n") + "\n")
                self._file.flush()

    def _cli_errors(self, error: automation.CommandError) -> tuple[CliError, ...]:
        with self._lock:
            errors, stderr = list(self._errors), list(self._stderr)
        said = {line.strip() for found in errors for line in found.message.strip().splitlines()[:1]}
        for line in stderr:
            message = line.strip().removeprefix("error:").strip()
            if line.strip().startswith("error:") and message not in said:
                said.add(message)
                errors.append(CliError(message))
        if not errors:
            code = _EXIT_CODE.match(str(error))
            errors.append(CliError(f"the CLI exited with code {code.group(1) if code else '?'} and no error message"))
        return tuple(errors)


class LoggedCommand(BoundedCommand):
    """The pulumi CLI with bounded output (fleet.cli), each command's output also going to the
    `Operation` in progress, if any."""

    def __init__(self, root: str, operation: Operation | None = None, observer: CliObserver | None = None) -> None:
        super().__init__(root, observer)
        self.operation = operation

    def run(
        self,
        args: list[str],
        cwd: str,
        additional_env: Mapping[str, str],
        on_output: Callable[[str], object] | None = None,
        on_error: Callable[[str], object] | None = None,
        stdin: str | None = None,
    ) -> automation.CommandResult:
        operation = self.operation
        if operation is None or operation.ended:
            return super().run(args, cwd, additional_env, on_output, on_error, stdin)
        command = _command_words(args)
        logged = command.split(" ")[0] in OPERATION_COMMANDS
        operation.started(command, logged)
        output, error = operation.output(logged, on_output), operation.error_output(logged, on_error)
        return super().run(args, cwd, additional_env, output, error, stdin)


def _command_words(args: Sequence[str]) -> str:
    """`up`, `stack select`, `config set-all`: the command without its flags and values (config values)."""
    words: list[str] = []
    for arg in args:
        if arg.startswith("-") or len(words) == 2:
            break
        words.append(arg)
    return " ".join(words) or "?"


def _shown(lines: list[str]) -> list[str]:
    if len(lines) > SHOWN_LINES:
        tail = SHOWN_LINES - SHOWN_HEAD_LINES - 1
        hidden = len(lines) - SHOWN_HEAD_LINES - tail
        lines = [*lines[:SHOWN_HEAD_LINES], f"[{hidden} more lines in the log]", *lines[-tail:]]
    return [_cut(line, SHOWN_LINE_CHARACTERS) for line in lines]


def _cut(text: str, limit: int) -> str:
    """At most `limit` characters: the start and the end, which say what failed and how."""
    if len(text) <= limit:
        return text
    half = (limit - 5) // 2
    return f"{text[:half]} [\u2026] {text[-half:]}"
