"""The fleet drift audit: verdicts, table and exit status on stand-in stacks; the SSH read against a
real sshd with a pinned host key."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from drift.access import HostAccess, HostRefused, HostUnreachable, SshStatusReader, host_access_from_state
from drift.fleet import audit_stack, main
from drift.report import Verdict, exit_status, render
from fleet.output import OUTPUT_LIMIT
from tests.drift_standin import DIGEST, NOW, SCENARIOS, TRACE, StandInStacks, audit_standin, status
from tests.loopback_sshd import free_port, keypair, loopback_sshd

EXPECTED = {
    "customer-clean": (Verdict.OK, Verdict.OK),
    "customer-console": (Verdict.DRIFT, Verdict.OK),
    "customer-gone": (Verdict.DRIFT, Verdict.OK),
    "customer-repaired": (Verdict.OK, Verdict.REPAIRED),
    "customer-history": (Verdict.OK, Verdict.OK),
    "customer-unrepaired": (Verdict.OK, Verdict.DRIFT),
    "customer-snapshot": (Verdict.OK, Verdict.DRIFT),
    "customer-stale": (Verdict.OK, Verdict.DRIFT),
    "customer-never": (Verdict.OK, Verdict.DRIFT),
    "customer-blind": (Verdict.OK, Verdict.ERROR),
    "customer-down": (Verdict.OK, Verdict.UNREACHABLE),
    "customer-failed": (Verdict.ERROR, Verdict.OK),
    "customer-broken": (Verdict.ERROR, Verdict.OK),
}
FAILED = (
    "pulumi refresh failed on stack customer-failed: error: the stack is currently locked by 1 lock(s); "
    "full log: drift-logs/customer-failed-20261125T120000.000000Z-refresh-preview.log"
)


def test_each_kind_of_drift_gets_its_verdict() -> None:
    assert set(EXPECTED) == set(SCENARIOS)
    audits = {stack: audit_standin(stack) for stack in SCENARIOS}
    assert {stack: (a.cloud.verdict, a.host.verdict) for stack, a in audits.items()} == EXPECTED
    assert audits["customer-console"].cloud.details == [
        "customer-console-firewall (hcloud:index/firewall:Firewall): changed outside Pulumi: rules"
    ]
    assert audits["customer-gone"].cloud.details == [
        "customer-gone-server (hcloud:index/server:Server): deleted outside Pulumi"
    ]
    assert audits["customer-unrepaired"].host.details == ["not repaired: sshd x"]
    assert "restored from an old snapshot" in audits["customer-snapshot"].host.details[0]
    assert "the drift timer is not running" in audits["customer-stale"].host.details[0]
    assert audits["customer-never"].host.details == ["no drift status on the host: the drift check has never run"]
    assert audits["customer-blind"].host.details == [
        "firewall not checked: unavailable: cannot build the expected ruleset: EPERM"
    ]
    assert audits["customer-down"].host.details == ["customer-down.example: TimeoutError: timed out"]
    assert audits["customer-failed"].cloud.details == [FAILED]
    assert audits["customer-broken"].cloud.details == [
        "refresh preview failed: RuntimeError: the backend answered nonsense error: bad state"
    ]
    assert audits["customer-repaired"].host.details[0].startswith("repaired at 2026-11-25T11:00:00Z: ipv4 chain")


def test_the_table_puts_drift_first_and_unreachable_apart() -> None:
    text = render([audit_standin(stack) for stack in SCENARIOS])
    assert "13 stacks: 6 drift, 1 unreachable, 3 error, 1 repaired, 2 ok." in text
    rows = [line for line in text.splitlines() if line.startswith("| customer-")]
    verdict_order = [row.split(" | ")[0].removeprefix("| ") for row in rows]
    assert verdict_order[:6] == sorted(s for s, v in EXPECTED.items() if Verdict.DRIFT in v)
    assert verdict_order[6:10] == ["customer-down", "customer-blind", "customer-broken", "customer-failed"]
    assert verdict_order[-2:] == ["customer-clean", "customer-history"]
    assert "| customer-down | ok | unreachable | - |" in rows
    assert "never-printed" not in text, "stack outputs other than the address and digest stay out of the report"


@pytest.mark.parametrize(
    "stacks,code",
    [
        (["customer-clean", "customer-repaired", "customer-history"], 0),
        (["customer-clean", "customer-down"], 2),
        (["customer-failed"], 2),
        (["customer-down", "customer-console"], 1),
        (["customer-stale"], 1),
    ],
)
def test_exit_status_for_scheduled_runs(stacks: list[str], code: int) -> None:
    assert exit_status([audit_standin(stack) for stack in stacks]) == code


def test_the_command_audits_in_worker_processes_and_writes_both_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(TRACE, str(tmp_path))
    stacks = ["customer-clean", "customer-console", "customer-down"]
    arguments = [f"--stack={stack}" for stack in stacks]
    out, report = tmp_path / "drift.md", tmp_path / "drift.json"
    code = main([*arguments, "--concurrency=2", f"--out={out}", f"--json={report}"], audit=audit_standin)
    assert code == 1
    assert out.read_text() in capsys.readouterr().out
    findings = json.loads(report.read_text())
    assert [(f["stack"], f["verdict"]) for f in findings] == [
        ("customer-clean", "ok"),
        ("customer-console", "drift"),
        ("customer-down", "unreachable"),
    ]
    pids = {int((tmp_path / f"{stack}.pid").read_text()) for stack in stacks}
    assert 1 <= len(pids) <= 2 and os.getpid() not in pids


def test_the_command_ends_with_each_failed_refresh_preview(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    arguments = ["--stack=customer-clean", "--stack=customer-failed", f"--out={tmp_path / 'drift.md'}"]
    assert main(arguments, audit=audit_standin) == 2
    printed = capsys.readouterr()
    assert f"- cloud: {FAILED}" in printed.out.splitlines()
    assert printed.err == f"{FAILED}\n"


def test_the_command_needs_stacks_or_the_provisioner_and_names_what_is_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main([], audit=audit_standin)
    assert stopped.value.code == 2 and "--stack: name at least one stack" in capsys.readouterr().err
    for variable in ("CLAW_PROVISIONER_URL", "CLAW_OPERATOR_TOKEN", "CLAW_REVIEW_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    assert main(["--settings-from-provisioner"], audit=audit_standin) == 2
    assert "the provisioner: not set: CLAW_PROVISIONER_URL, CLAW_OPERATOR_TOKEN" in capsys.readouterr().err


def test_the_ssh_target_comes_from_outputs_and_state() -> None:
    def secret(value: str) -> dict[str, str]:
        return {"4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270", "plaintext": json.dumps(value)}

    prefix = "urn:pulumi:customer-acme::clawhosters::clawhosters:index:CustomerInstance$tls:index/privateKey:PrivateKey"
    deployment = {
        "resources": [
            {
                "urn": f"{prefix}::customer-acme-provisioning-key",
                "type": "tls:index/privateKey:PrivateKey",
                "outputs": {"privateKeyOpenssh": secret("PRIVATE"), "publicKeyOpenssh": "ssh-ed25519 AAAAprov\n"},
            },
            {
                "urn": f"{prefix}::customer-acme-host-key",
                "type": "tls:index/privateKey:PrivateKey",
                "outputs": {"privateKeyOpenssh": secret("HOSTPRIVATE"), "publicKeyOpenssh": "ssh-ed25519 AAAAhost\n"},
            },
        ]
    }
    access = host_access_from_state(deployment, {"ipv4_address": "203.0.113.10"})
    assert access.host == "203.0.113.10"
    assert access.private_key.get_secret_value() == "PRIVATE"
    assert access.host_public_key == "ssh-ed25519 AAAAhost"
    assert "PRIVATE" not in repr(access)
    encrypted = json.loads(json.dumps(deployment).replace('"plaintext"', '"ciphertext"'))
    with pytest.raises(ValueError, match="--show-secrets"):
        host_access_from_state(encrypted, {"ipv4_address": "203.0.113.10"})


# --- the real SSH read ----------------------------------------------------------------------------


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[tuple[HostAccess, Path]]:
    """A real sshd on loopback that lets root in with one key, as the VPS lets the provisioner in."""
    with loopback_sshd(tmp_path) as server:
        access = HostAccess(
            host="127.0.0.1",
            port=server.port,
            private_key=SecretStr(server.client_private_key),
            host_public_key=server.host_public_key,
        )
        yield access, tmp_path / "baseline-status.json"


def test_the_status_is_read_over_the_pinned_connection(sshd: tuple[HostAccess, Path], tmp_path: Path) -> None:
    access, status_file = sshd
    reader = SshStatusReader(status_file=str(status_file), timeout_seconds=5)
    assert reader.read_status(access) is None, "no status file yet"
    status_file.write_text(status())
    assert json.loads(reader.read_status(access) or "{}")["bundle_digest"] == DIGEST

    class Stacks(StandInStacks):
        def host_access(self, stack: str) -> HostAccess:
            return access

    audit = audit_stack("customer-clean", Stacks(), reader, now=NOW)
    assert (audit.cloud.verdict, audit.host.verdict) == (Verdict.OK, Verdict.OK)

    _, other_host_key = keypair(tmp_path / "impostor")
    with pytest.raises(HostRefused, match="BadHostKey"):
        reader.read_status(access.model_copy(update={"host_public_key": other_host_key}))
    other_client, _ = keypair(tmp_path / "stranger")
    with pytest.raises(HostRefused, match="Authentication"):
        reader.read_status(access.model_copy(update={"private_key": SecretStr(other_client)}))


def test_a_host_that_does_not_answer_is_unreachable(sshd: tuple[HostAccess, Path]) -> None:
    access, status_file = sshd
    reader = SshStatusReader(status_file=str(status_file), timeout_seconds=2)
    with pytest.raises(HostUnreachable):
        reader.read_status(access.model_copy(update={"port": free_port()}))


@pytest.mark.parametrize(
    ("forced", "refusal"),
    [
        ("cat /dev/zero", (HostRefused, f"sent more than {OUTPUT_LIMIT} bytes")),
        ("sleep 600", (HostUnreachable, "no answer within 2 s")),
        ("exec >&- 2>&-; sleep 600", (HostUnreachable, "did not end within 2 s")),
    ],
)
def test_a_host_whose_root_forces_the_command_is_read_within_bounds(
    sshd: tuple[HostAccess, Path], tmp_path: Path, forced: str, refusal: tuple[type[Exception], str]
) -> None:
    access, status_file = sshd
    status_file.write_text(status())
    keys = tmp_path / "authorized_keys"
    keys.write_text(f'command="{forced}" {keys.read_text()}')
    started = time.monotonic()
    error, message = refusal
    with pytest.raises(error, match=message):
        SshStatusReader(status_file=str(status_file), timeout_seconds=2).read_status(access)
    assert time.monotonic() - started < 10
