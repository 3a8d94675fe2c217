"""What the repository keeps of the CLI's output (fleet/cli.py, fleet/output.py): a stand-in CLI, a
shell script, prints without end as the real one does when a host streams (each line a remote
command sends becomes a line of the CLI's), and bytes that are not UTF-8."""

from __future__ import annotations

from pathlib import Path

import pytest
from pulumi.automation.errors import CommandError

from fleet.cli import ANSWER_LIMIT, BoundedCommand
from fleet.output import OUTPUT_LIMIT, BoundedLines, DroppedOutput

PRINTED = 3_000_000
CLI = f"""#!/bin/sh
case "$*" in
    *version*) echo v3.276.0 ;;
    *" up "*) yes "progress line" | head -c {PRINTED}; printf '\\377\\376 not utf-8\\n'; echo "error: it failed" >&2
       exit 255 ;;
    *export*) head -c {ANSWER_LIMIT + 1} /dev/zero | tr '\\0' 'x' ;;
    *"import --refuse"*) echo "error: refused" >&2; exit 1 ;;
    *import*) wc -c ;;
esac
"""


@pytest.fixture
def command(tmp_path: Path) -> BoundedCommand:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "pulumi").write_text(CLI)
    (tmp_path / "bin" / "pulumi").chmod(0o755)
    return BoundedCommand(str(tmp_path))


def test_a_stream_keeps_its_first_and_last_half_and_counts_exactly_what_it_drops() -> None:
    kept = BoundedLines(limit=100)
    lines = [f"line {number:03}".encode() for number in range(40)]  # 9 bytes each with the newline
    shown = [line for line in lines if kept.add(line)]
    assert shown == lines[:5], "the head, shown as it comes: 50 bytes"
    assert [line.encode() for line in kept.tail_lines()[1:]] == lines[-5:], "the tail, once the stream ends"
    assert kept.tail_lines()[0] == DroppedOutput(30 * 9) and kept.tail_lines()[0].dropped == 270
    huge = BoundedLines(limit=100)
    huge.add(b"x" * 500)
    assert huge.lines() == [DroppedOutput(451), "x" * 49], "a line longer than the half keeps its end"


def test_progress_is_kept_to_a_megabyte_whatever_the_cli_prints(command: BoundedCommand, tmp_path: Path) -> None:
    seen: list[str] = []
    with pytest.raises(CommandError) as failed:
        command.run(["up", "--yes"], str(tmp_path), {}, on_output=seen.append)
    [dropped] = [line for line in seen if isinstance(line, DroppedOutput)]
    assert PRINTED - OUTPUT_LIMIT < dropped.dropped < PRINTED - OUTPUT_LIMIT + 100
    assert sum(len(line) + 1 for line in seen if line is not dropped) <= OUTPUT_LIMIT
    assert seen[-1] == "progress l\ufffd\ufffd not utf-8", "the end is kept, bytes that are not UTF-8 replaced"
    message = str(failed.value)
    assert "error: it failed" in message and str(dropped) in message and len(message) < OUTPUT_LIMIT + 4096


def test_an_answer_is_whole_or_an_error(command: BoundedCommand, tmp_path: Path) -> None:
    with pytest.raises(CommandError, match=f"the CLI's answer to `stack export` is larger than {ANSWER_LIMIT} bytes"):
        command.run(["stack", "export", "--show-secrets"], str(tmp_path), {})


def test_an_input_reaches_the_cli_whole_and_one_it_does_not_read_fails_only_as_the_cli_does(
    command: BoundedCommand, tmp_path: Path
) -> None:
    state = "s" * (4 << 20)  # more than a pipe holds: written while the CLI's output is read
    assert command.run(["stack", "import"], str(tmp_path), {}, stdin=state).stdout == str(len(state))
    with pytest.raises(CommandError, match="error: refused"):
        command.run(["stack", "import", "--refuse"], str(tmp_path), {}, stdin=state)
