"""How a failure reads where the CLI's own words are long or not at hand (tests/engine shows real
failures of the real CLI; the tools' own tests show what each prints)."""

from __future__ import annotations

from pathlib import Path

from pulumi import automation

from fleet.failures import CliError, StackOperationFailed, describe

LOG = Path("/var/lib/clawhosters/logs/customer-acme-20261125T120000.000000Z-up.log")


def test_a_failed_remote_command_shows_its_start_and_its_end_and_leaves_the_rest_to_the_log() -> None:
    # pulumi-command's error quotes the whole script on its first line, then the command's output.
    script = "running " + repr("set -eu\n" * 300)
    output = [f"Get:{index} http://deb.debian.org/debian bookworm/main" for index in range(98)]
    message = "\n".join([f"{script}: Process exited with status 100; output:", *output, "E: Unable to locate package"])
    failed = StackOperationFailed(
        "customer-acme", "up", (CliError(message, "command:remote:Command (customer-acme-packages)"),), LOG
    )
    shown = str(failed).splitlines()
    assert shown[:2] == [
        "error: pulumi up failed on stack customer-acme",
        "  command:remote:Command (customer-acme-packages):",
    ]
    first = shown[2]
    assert first.startswith("    error: running 'set -eu\\nset -eu") and first.endswith(
        "Process exited with status 100; output:"
    )
    assert len(first) <= 4 + 400
    assert shown[3:6] == [f"    Get:{index} http://deb.debian.org/debian bookworm/main" for index in range(3)]
    assert shown[6] == "    [77 more lines in the log]"
    assert shown[-2:] == ["    E: Unable to locate package", f"full log: {LOG}"]
    assert len(shown) == 2 + 24 + 1


def test_the_summary_keeps_the_first_errors_and_the_cli_verdict() -> None:
    errors = tuple(
        CliError(f"resource {index} failed: " + "x" * 250, f"hcloud:index:Server (s{index})") for index in range(9)
    )
    failed = StackOperationFailed("customer-acme", "up", (*errors, CliError("update failed")), LOG)
    summary = failed.summary()
    assert summary.startswith(
        "pulumi up failed on stack customer-acme: hcloud:index:Server (s0): error: resource 0 failed"
    )
    assert summary.endswith(f" | error: update failed; full log: {LOG}")
    assert "(s8): error: resource 8 failed" in summary and "(s4)" not in summary, "the middle ones go"
    assert "\n" not in summary and len(summary) < 1200 + len(str(LOG)) + 100


def test_a_cli_failure_outside_an_operation_is_said_by_its_error_lines() -> None:
    result = automation.CommandResult(
        stdout="Updating (customer-acme):\n",
        stderr="warning: the object store answered slowly\n"
        "error: could not write the checkpoint\n"
        "error: there was a problem deleting the lock at s3://state/.pulumi/locks/customer-acme",
        code=255,
    )
    assert describe(automation.CommandError(result)) == (
        "CommandError: error: could not write the checkpoint | "
        "error: there was a problem deleting the lock at s3://state/.pulumi/locks/customer-acme"
    )
    assert (
        describe(RuntimeError("the health gate:\n  no answer"), "deploy")
        == "deploy: RuntimeError: the health gate: no answer"
    )
