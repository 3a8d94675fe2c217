"""What this repository keeps of output it does not control: a CLI's progress, a host's answer.

A customer with root on their VPS decides what the provisioning key's SSH session sends, and the
command provider passes every line of it on to the CLI, which prints it. So nothing that keeps such
output may keep all of it: at most `OUTPUT_LIMIT` bytes, its first half and its last half (where the
CLI's own errors are), and the count of what was dropped in between.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections import deque
from typing import IO

OUTPUT_LIMIT = 1 << 20
# One line is read at most this long; a longer one arrives in pieces.
LINE_LIMIT = 64 << 10


class DroppedOutput(str):
    """The line a bounded stream hands on in place of what it dropped: how many bytes."""

    dropped: int

    def __new__(cls, dropped: int) -> DroppedOutput:
        line = super().__new__(cls, f"[{dropped} bytes of output dropped]")
        line.dropped = dropped
        return line


def decode(raw: bytes) -> str:
    # A host may send anything; what it sends is shown, never trusted to be UTF-8.
    return raw.decode("utf-8", errors="replace")


class BoundedLines:
    """The lines of a stream, at most `limit` bytes of them: the first half as they come, the last
    half once the stream has ended; the bytes between are counted and dropped."""

    def __init__(self, limit: int = OUTPUT_LIMIT) -> None:
        self.half = limit // 2
        self.head: list[bytes] = []
        self.head_bytes = 0
        self.tail: deque[bytes] = deque()
        self.tail_bytes = 0
        self.dropped = 0

    def add(self, line: bytes) -> bool:
        """Keep `line` (without its newline); True when it belongs to the head, to be shown now."""
        size = len(line) + 1
        if not self.tail and self.head_bytes + size <= self.half:
            self.head.append(line)
            self.head_bytes += size
            return True
        line = line[-(self.half - 1) :]
        self.tail.append(line)
        self.tail_bytes += len(line) + 1
        self.dropped += size - len(line) - 1
        while self.tail_bytes > self.half:
            gone = self.tail.popleft()
            self.tail_bytes -= len(gone) + 1
            self.dropped += len(gone) + 1
        return False

    def tail_lines(self) -> list[str]:
        """What comes after the head: the dropped count (if any), then the kept tail."""
        lines: list[str] = [DroppedOutput(self.dropped)] if self.dropped else []
        return lines + [decode(line) for line in self.tail]

    def lines(self) -> list[str]:
        return [decode(line) for line in self.head] + self.tail_lines()

    def text(self) -> str:
        return "\n".join(self.lines())


class OutputExceeded(ValueError):
    """A command sent more than it may: what it sent was not kept."""


def run_bounded(argv: list[str], timeout: float, limit: int = OUTPUT_LIMIT) -> bytes:
    """The standard output of `argv`, which must exit 0 within `timeout` seconds having sent at most
    `limit` bytes on each of its streams. It is stopped as soon as it sends more (OutputExceeded) or
    runs longer (subprocess.TimeoutExpired); a failure raises subprocess.CalledProcessError."""
    answers: dict[int, bytes] = {}
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:

        def read(index: int, stream: IO[bytes]) -> None:
            answers[index] = stream.read(limit + 1)
            if len(answers[index]) > limit:
                process.kill()

        readers = [
            threading.Thread(target=read, args=(index, stream), daemon=True)
            for index, stream in enumerate((process.stdout, process.stderr))
            if stream is not None
        ]
        for reader in readers:
            reader.start()
        deadline = time.monotonic() + timeout
        for reader in readers:
            reader.join(max(0.0, deadline - time.monotonic()))
        late = any(reader.is_alive() for reader in readers)
        if late:
            process.kill()
        for reader in readers:
            reader.join()
        code = process.wait()
    if late:
        raise subprocess.TimeoutExpired(argv, timeout)
    if any(len(answer) > limit for answer in answers.values()):
        raise OutputExceeded(f"{argv[0]} sent more than {limit} bytes; it was stopped and nothing it sent was kept")
    if code != 0:
        raise subprocess.CalledProcessError(code, argv, answers.get(0), answers.get(1))
    return answers.get(0, b"")
