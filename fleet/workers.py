"""One operation per stack, each in its own worker process, with a per-stack timeout.

The Automation API keeps process-global state, so stacks never share a process: each gets a fresh
one, forked from a forkserver (a clean process, never the caller with its threads). A worker that
crashes or outlives its timeout is an outcome like any other (a failure for that stack), never an
exception that loses the rest of the fleet. Each worker leads its own process group, so a timeout
also kills the `pulumi` CLI it started.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Generic, TypeVar

from fleet.failures import describe

R = TypeVar("R")
Operation = Callable[[str], R]


@dataclass(frozen=True)
class Outcome(Generic[R]):
    """What one stack's operation came to: a result, or why there is none."""

    stack: str
    result: R | None
    failure: str | None
    seconds: float
    timed_out: bool = False


@dataclass
class _Running:
    stack: str
    process: BaseProcess
    results: Connection
    started: float


def _work(operation: Operation[R], stack: str, results: Connection) -> None:
    os.setsid()
    try:
        result = operation(stack)
    except Exception as error:  # any failure is this stack's outcome
        results.send(("error", describe(error)))
    else:
        results.send(("ok", result))
    results.close()


def run_each(
    stacks: Iterable[str],
    operation: Operation[R],
    *,
    concurrency: int,
    timeout: float,
    proceed: Callable[[], bool] = lambda: True,
    on_outcome: Callable[[Outcome[R]], None] = lambda _outcome: None,
) -> list[Outcome[R]]:
    """Run `operation(stack)` for each stack, at most `concurrency` at a time, each in a fresh process.

    Before starting each stack `proceed()` is asked; once it says no, nothing more starts and the
    running ones finish. `on_outcome` sees each outcome as it arrives. Returns the outcomes of the
    stacks that ran, in completion order.
    """
    context = multiprocessing.get_context("forkserver")
    # Each stack still gets a fresh process, forked from a server that has only imported these:
    # no Automation API state is shared, and a stack does not pay for the imports again.
    context.set_forkserver_preload(["fleet.preview", "fleet.rollout"])
    pending = deque(stacks)
    running: dict[Connection, _Running] = {}
    outcomes: list[Outcome[R]] = []

    def finish(job: _Running, result: R | None, failure: str | None, timed_out: bool = False) -> None:
        del running[job.results]
        job.results.close()
        outcome = Outcome(job.stack, result, failure, time.monotonic() - job.started, timed_out)
        outcomes.append(outcome)
        on_outcome(outcome)

    while pending or running:
        while pending and len(running) < concurrency and proceed():
            stack = pending.popleft()
            reader, writer = context.Pipe(duplex=False)
            process = context.Process(target=_work, args=(operation, stack, writer), name=f"fleet:{stack}")
            process.start()
            writer.close()
            running[reader] = _Running(stack, process, reader, time.monotonic())
        if not running:
            break
        now = time.monotonic()
        next_deadline = min(job.started + timeout for job in running.values())
        for ready in wait(list(running), timeout=max(0.0, next_deadline - now)):
            assert isinstance(ready, Connection)
            job = running[ready]
            try:
                status, payload = ready.recv()
            except EOFError:
                job.process.join()
                finish(job, None, f"worker crashed (exit code {job.process.exitcode})")
                continue
            job.process.join()
            if status == "ok":
                finish(job, payload, None)
            else:
                finish(job, None, payload)
        now = time.monotonic()
        for job in [job for job in running.values() if now >= job.started + timeout]:
            _kill_group(job.process)
            finish(job, None, f"timed out after {timeout:g} s; the worker and its pulumi process were killed", True)
    return outcomes


def _kill_group(process: BaseProcess) -> None:
    if process.pid is not None:
        # No group yet if the worker has not reached setsid; then killing the worker is enough.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    process.kill()
    process.join()
