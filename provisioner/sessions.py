"""The processes of a worker's stack operations, and how they are ended.

Each worker process leads a session of its own (it calls setsid when it starts), and whatever its
operation starts stays in that session: the CLI, and what the CLI starts, the language host, the
program, the policy pack and each provider. A process group would not hold them: the CLI gives each
plugin a process group of its own (pulumi's `plugin.go` starts it with `Setpgid`, and kills it
through that group), and the language host does the same for the program; none of them starts a
session. So the operation's processes are the members of the worker's session other than the worker,
whoever their parent is by now (a plugin whose CLI died belongs to the master, which adopts orphans).

`Ending` ends a session's members as a whole: time for a graceful end first (a CLI that got SIGINT
finishes its in-flight steps, writes the state and releases its lock), then SIGTERM to every member,
a grace period, SIGKILL to every member, until none is left running. It only signals: a child is
reaped by whoever started it (the thread that runs its `subprocess`), an orphan by the master.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

log = logging.getLogger("provisioner")
PROC = Path("/proc")
STEP_SECONDS = 0.05
# After SIGKILL: a process still there this much later is stuck in the kernel (uninterruptible I/O).
KILL_WAIT_SECONDS = 5.0


def _stat(pid: int) -> tuple[str, int] | None:
    """A process's state letter and session id, None when it is gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # pid (comm) state ppid pgrp session ...: comm may hold spaces and parentheses.
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[3])


def running(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def session_of(pid: int) -> int | None:
    stat = _stat(pid)
    return None if stat is None else stat[1]


def members(session: int, besides: int | None = None) -> list[int]:
    """The running processes of `session`, except `besides`."""
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == besides:
            continue
        stat = _stat(int(entry.name))
        if stat is not None and stat[1] == session and stat[0] not in ("Z", "X"):
            found.append(int(entry.name))
    return found


def _send(pids: list[int], signum: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            continue


@dataclass
class Ending:
    """Ending every member of `session` (but `besides`): `graceful_seconds` for them to end on their
    own, then SIGTERM, `kill_grace_seconds`, then SIGKILL, until none is left running."""

    session: int
    graceful_seconds: float
    kill_grace_seconds: float
    besides: int | None = None
    started: float = field(default_factory=time.monotonic)
    terminated: float | None = None
    # Every process that had to be signalled (SIGTERM or SIGKILL): it did not end on its own.
    signalled: set[int] = field(default_factory=set)

    def step(self) -> bool:
        """Move the ending on; True once no member is left running."""
        alive = members(self.session, self.besides)
        if not alive:
            return True
        now = time.monotonic()
        if self.terminated is None:
            if now < self.started + self.graceful_seconds:
                return False
            self.terminated = now
            log.warning("terminating the operation's processes", extra={"pids": alive})
            _send(alive, signal.SIGTERM)
        elif now >= self.terminated + self.kill_grace_seconds:
            _send(alive, signal.SIGKILL)
        self.signalled.update(alive)
        return False

    def run(self) -> bool:
        """Step until no member is left running; False if some survive SIGKILL (stuck in the kernel)."""
        deadline = self.started + self.graceful_seconds + self.kill_grace_seconds + KILL_WAIT_SECONDS
        while not self.step():
            if time.monotonic() > deadline:
                log.error(
                    "processes of the operation outlived SIGKILL",
                    extra={"pids": members(self.session, self.besides)},
                )
                return False
            time.sleep(STEP_SECONDS)
        return True


class OperationProcesses:
    """A worker process's operation, as the CLI runner reports it (a `fleet.cli.CliObserver`).

    `on_cli` hears of each CLI the moment it starts (the provisioner names it in the stack's holder
    record, so a lock it leaves is known to be the operation's own); when a CLI has exited, whatever
    it started and left behind is ended before the runner goes on.
    """

    def __init__(self) -> None:
        self.on_cli: Callable[[int], None] | None = None
        self.kill_grace_seconds = 5.0

    def started(self, pid: int) -> None:
        if self.on_cli is not None:
            self.on_cli(pid)

    def exited(self) -> None:
        end_own_operation(0, self.kill_grace_seconds)


# One per worker process: its operations run one at a time, the Automation API's state being global.
PROCESSES = OperationProcesses()


def end_own_operation(graceful_seconds: float, kill_grace_seconds: float) -> Ending:
    """End every process of this worker's operation (the members of its session but itself). A process
    that does not lead its session is no worker process (the runner used elsewhere: an operator's
    shell, a test): its session is its parents', and nothing is ended."""
    ending = Ending(os.getsid(0), graceful_seconds, kill_grace_seconds, besides=os.getpid())
    if ending.session == os.getpid():
        ending.run()
    return ending


def interrupt_children(interrupted: set[int]) -> set[int]:
    """SIGINT, once each, to this process's running children (the CLI: pulumi's graceful cancel; a
    second SIGINT would make it stop at once, leaving its lock). Returns the children."""
    children = {child.pid for child in psutil.Process().children() if running(child.pid)}
    _send(sorted(children - interrupted), signal.SIGINT)
    interrupted.update(children)
    return children
