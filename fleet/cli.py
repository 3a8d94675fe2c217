"""The pulumi CLI as this repository runs it through the Automation API: with bounded output.

The SDK's runner (`pulumi.automation.PulumiCommand.run`) keeps every line the CLI prints, in memory
and in the error it raises, and reads it as strict UTF-8. The CLI prints every line a remote command
sends (the command provider logs each one), and what that command sends is decided by whoever holds
root on the server: `yes` in its `authorized_keys` streams without end. So this runner keeps at most
`fleet.output.OUTPUT_LIMIT` of an operation's progress (the first half as it comes, the last half,
with the CLI's errors, at the end; the count of what it dropped in between), and at most
`ANSWER_LIMIT` of a command's answer (`stack export`, `stack output`, ...), which it never cuts: an
answer that does not fit is an error.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Protocol

from pulumi import automation
from pulumi.automation._cmd import CommandResult, _fixup_path
from pulumi.automation.errors import CommandError, create_command_error

from fleet.output import LINE_LIMIT, OUTPUT_LIMIT, BoundedLines, decode

# Commands whose output is progress for a person (the engine's display); every other answers data.
PROGRESS_COMMANDS = frozenset({"up", "preview", "refresh", "destroy", "import", "watch"})
# A stack's state is the largest answer: the program's is tens of kilobytes.
ANSWER_LIMIT = 16 << 20


class CliObserver(Protocol):
    def started(self, pid: int) -> None:
        """The CLI has just started; raising stops it at once, before it can have done anything."""
        ...

    def exited(self) -> None:
        """The CLI has exited and been reaped: anything it started and left behind may be ended now."""
        ...


def _drain(stream: IO[bytes], kept: BoundedLines, on_line: Callable[[str], object] | None) -> None:
    with stream:
        for raw in iter(lambda: stream.readline(LINE_LIMIT), b""):
            line = raw.rstrip()
            if kept.add(line) and on_line is not None:
                on_line(decode(line))


class BoundedCommand(automation.PulumiCommand):
    """`PulumiCommand` with bounded output; `observer` hears of each CLI process it starts."""

    def __init__(self, root: str, observer: CliObserver | None = None) -> None:
        super().__init__(root=root)
        self.observer = observer

    def run(
        self,
        args: list[str],
        cwd: str,
        additional_env: Mapping[str, str],
        on_output: Callable[[str], object] | None = None,
        on_error: Callable[[str], object] | None = None,
        stdin: str | None = None,
    ) -> CommandResult:
        """As the SDK's `run`; `stdin`, when given, is written to the CLI's standard input."""
        # As the SDK's run: non-interactive, before any "--", and the CLI's own directory first on PATH.
        options_end = args.index("--") if "--" in args else len(args)
        if "--non-interactive" not in args[:options_end]:
            args.insert(0, "--non-interactive")
        env = {**os.environ, **additional_env, "PULUMI_AUTOMATION_API": "true"}
        if Path(self.command).is_absolute():
            env = _fixup_path(env, str(Path(self.command).parent))
        words = itertools.dropwhile(lambda arg: arg.startswith("-"), args)
        command = " ".join(itertools.takewhile(lambda arg: not arg.startswith("-"), words))
        progress = command.partition(" ")[0] in PROGRESS_COMMANDS
        stdout = BoundedLines(OUTPUT_LIMIT if progress else 2 * ANSWER_LIMIT)
        stderr = BoundedLines()
        streams = ((stdout, on_output), (stderr, on_error))
        with subprocess.Popen(
            [self.command, *args],
            stdin=None if stdin is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
        ) as process:
            readers = [
                threading.Thread(target=_drain, args=(pipe, kept, callback), daemon=True)
                for pipe, (kept, callback) in zip((process.stdout, process.stderr), streams, strict=True)
                if pipe is not None
            ]
            try:
                if self.observer is not None:
                    self.observer.started(process.pid)
                for reader in readers:
                    reader.start()
                if process.stdin is not None and stdin is not None:
                    # A CLI that exits before reading it all says why on stderr, and by its exit code.
                    with contextlib.suppress(BrokenPipeError), process.stdin:
                        process.stdin.write(stdin.encode())
                process.wait()
            finally:
                if process.returncode is None:
                    process.kill()
                    process.wait()
                if self.observer is not None:
                    self.observer.exited()
            for reader in readers:
                reader.join()
        for kept, callback in streams:
            if callback is not None:
                for line in kept.tail_lines():
                    callback(line)
        result = CommandResult(stdout=stdout.text(), stderr=stderr.text(), code=process.returncode)
        if result.code != 0:
            raise create_command_error(result)
        if not progress and stdout.tail:
            note = f"the CLI's answer to `{command}` is larger than {ANSWER_LIMIT} bytes"
            raise CommandError(CommandResult(stdout="", stderr=note, code=result.code))
        return result
