"""`python -m lab` when its stack operation fails: the CLI's errors, the stack and the log, exit 1, no
traceback. The lab is replaced by one whose operations fail as `fleet.stacks` fails them (a real lab
run needs the lab lock and minutes; tests/engine proves the failure itself on the real CLI)."""

from __future__ import annotations

from pathlib import Path

import pytest

import lab.__main__ as lab_main
from fleet.failures import CliError, StackOperationFailed

LOG = Path("/var/lib/clawhosters-lab/logs/customer-lab-20261125T120000.000000Z-up.log")
SERVER_REFUSED = CliError(
    "creating server: resource_unavailable: cx23 is not available in fsn1", "hcloud:index:Server (claw-lab)"
)
FAILED_UP = StackOperationFailed("customer-lab", "up", (SERVER_REFUSED, CliError("update failed")), LOG)
SAID = [
    "error: pulumi up failed on stack customer-lab",
    "  hcloud:index:Server (claw-lab):",
    "    error: creating server: resource_unavailable: cx23 is not available in fsn1",
    "  error: update failed",
    f"full log: {LOG}",
]


class FailingLab:
    def up(self) -> list[object]:
        raise FAILED_UP

    def deployed(self) -> bool:
        return True

    def destroy(self) -> int:
        raise FAILED_UP  # the decommissioning `up` before the destroy


def test_a_failed_up_ends_with_the_cli_errors_the_stack_and_the_log(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(lab_main, "Lab", FailingLab)
    assert lab_main.main(["up"]) == 1
    printed = capsys.readouterr()
    assert printed.err.splitlines() == SAID and printed.out == ""


def test_a_failed_destroy_says_so_and_the_lab_goes_anyway(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    removed: list[bool] = []
    monkeypatch.setattr(lab_main, "Lab", FailingLab)
    monkeypatch.setattr(lab_main, "down", lambda: removed.append(True))
    assert lab_main.main(["down"]) == 1
    printed = capsys.readouterr()
    assert printed.err.splitlines() == [*SAID, "lab: removing everything anyway"]
    assert removed == [True] and printed.out == "lab removed\n"
