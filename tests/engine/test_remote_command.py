"""The command and tls providers built here, through the real CLI, against a real sshd.

sshd is Debian's own binary on a loopback port. What is checked is what the host shows (which
scripts ran, in which order, with which input) and what the CLI reports.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tests.engine.test_engine import STACK, Cli
from tests.loopback_sshd import LoopbackSshd, loopback_sshd

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="sshd lets root in only when run as root")

PROGRAM = Path(__file__).parent / "remote"


@dataclass(frozen=True)
class Host:
    sshd: LoopbackSshd
    marker: Path

    def runs(self) -> list[str]:
        return self.marker.read_text().splitlines() if self.marker.exists() else []


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Host]:
    (tmp_path / "sshd").mkdir()
    # Only CLAW_* variables are accepted, as a configured sshd would; PULUMI_COMMAND_* are not.
    with loopback_sshd(tmp_path / "sshd", accept_env="CLAW_*") as server:
        yield Host(server, tmp_path / "runs")


@pytest.fixture
def remote(tmp_path: Path, sshd: Host) -> Cli:
    cli = Cli(tmp_path, program=PROGRAM)
    cli.run("stack", "init", STACK)
    settings = {
        "host": "127.0.0.1",
        "port": str(sshd.sshd.port),
        "host_key": sshd.sshd.host_public_key,
        "create": f"echo create-1 >> {sshd.marker}; echo created; cat",
        "delete": f"echo delete >> {sshd.marker}",
    }
    for key, value in settings.items():
        cli.run("config", "set", key, value)
    cli.run("config", "set", "--secret", "private_key", stdin=sshd.sshd.client_private_key)
    cli.run("config", "set", "--secret", "stdin", "from-stdin")
    return cli


def outputs(cli: Cli) -> dict[str, object]:
    return json.loads(cli.run("stack", "output", "--json", "--show-secrets").stdout)


def test_a_script_runs_once_and_its_output_is_the_resource_output(remote: Cli, sshd: Host) -> None:
    remote.run("up", "--yes")
    assert sshd.runs() == ["create-1"]
    assert outputs(remote)["stdout"] == "created\nfrom-stdin"
    remote.run("up", "--yes", "--expect-no-changes")
    assert sshd.runs() == ["create-1"], "an unchanged command must not run again"
    remote.run("destroy", "--yes")
    assert sshd.runs() == ["create-1", "delete"]


def test_an_edit_runs_update_or_create_again_and_a_trigger_replaces(remote: Cli, sshd: Host) -> None:
    remote.run("up", "--yes")
    remote.run("config", "set", "create", f"echo create-2 >> {sshd.marker}; echo again")
    edited = remote.run("up", "--yes")
    assert sshd.runs() == ["create-1", "create-2"]
    # The previous output travels as PULUMI_COMMAND_STDOUT, which this sshd refuses: a warning only.
    assert "PULUMI_COMMAND_STDOUT" in edited.stdout + edited.stderr
    remote.run("config", "set", "update", f"echo update >> {sshd.marker}")
    remote.run("config", "set", "create", f"echo create-3 >> {sshd.marker}")
    remote.run("up", "--yes")
    assert sshd.runs()[-1] == "update"
    remote.run("config", "set", "trigger", "2")
    replaced = remote.run("preview", "--diff")
    assert "+-" in replaced.stdout and "triggers" in replaced.stdout
    remote.run("up", "--yes")
    # Pulumi replaces create-before-delete: the new resource's create, then the old one's delete.
    assert sshd.runs()[-2:] == ["create-3", "delete"]


def test_an_accepted_variable_reaches_the_script_and_a_refused_one_fails_it(remote: Cli, sshd: Host) -> None:
    remote.run("config", "set", "environment", json.dumps({"CLAW_COLOUR": "teal"}))
    remote.run("config", "set", "create", f'echo "$CLAW_COLOUR" >> {sshd.marker}')
    remote.run("up", "--yes")
    assert sshd.runs() == ["teal"]
    remote.run("config", "set", "environment", json.dumps({"OTHER": "x"}))
    remote.run("config", "set", "create", f"echo never >> {sshd.marker}")
    refused = remote.run("up", "--yes", check=False)
    assert refused.returncode != 0 and "OTHER" in refused.stdout and "AcceptEnv" in refused.stdout
    assert sshd.runs() == ["teal"]


def test_a_failing_script_fails_the_up_with_its_output(remote: Cli, sshd: Host) -> None:
    remote.run("config", "set", "create", "echo about-to-fail; exit 3")
    failed = remote.run("up", "--yes", check=False)
    assert failed.returncode != 0
    assert "exited with status 3" in failed.stdout and "about-to-fail" in failed.stdout


def test_another_host_key_is_refused_before_any_script_runs(remote: Cli, sshd: Host, tmp_path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", tmp_path / "other"], check=True)
    remote.run("config", "set", "host_key", (tmp_path / "other.pub").read_text().strip())
    remote.run("config", "set", "dial_error_limit", "2")
    refused = remote.run("up", "--yes", check=False)
    assert refused.returncode != 0 and "host key mismatch" in refused.stdout
    assert sshd.runs() == []


def test_tls_keys_are_real_keys_of_each_algorithm_and_stay_until_their_inputs_change(tmp_path: Path) -> None:
    cli = Cli(tmp_path, program=PROGRAM)
    cli.run("stack", "init", STACK)
    cli.run("config", "set", "keys", "true")
    preview = cli.run("preview", "--json")
    assert json.loads(preview.stdout)["changeSummary"]["create"] == 4
    cli.run("up", "--yes")
    first = outputs(cli)
    kinds = {"ed25519": ed25519.Ed25519PrivateKey, "rsa": rsa.RSAPrivateKey, "ecdsa": ec.EllipticCurvePrivateKey}
    for name, kind in kinds.items():
        key_id, openssh, pem, pkcs8, public_openssh, public_pem, sha256 = first[name]  # type: ignore[misc]
        private = serialization.load_ssh_private_key(openssh.encode(), None)
        assert isinstance(private, kind)
        for encoded in (pem, pkcs8):
            assert serialization.load_pem_private_key(encoded.encode(), None).public_key() == private.public_key()
        assert serialization.load_ssh_public_key(public_openssh.encode()) == private.public_key()
        assert public_openssh.endswith("\n")
        assert serialization.load_pem_public_key(public_pem.encode()) == private.public_key()
        fingerprint = subprocess.run(
            ["ssh-keygen", "-l", "-f", "-"], input=public_openssh, capture_output=True, text=True, check=True
        ).stdout.split()[1]
        assert sha256 == fingerprint
        # The resource id, as terraform-provider-tls derives it: SHA-1 of the public key's DER.
        digest = hashes.Hash(hashes.SHA1())  # noqa: S303
        der = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        digest.update(der.strip())
        assert key_id == digest.finalize().hex()
    assert first["rsa"][2].startswith("-----BEGIN RSA PRIVATE KEY-----")  # type: ignore[index]
    assert first["ecdsa"][2].startswith("-----BEGIN EC PRIVATE KEY-----")  # type: ignore[index]
    assert first["ed25519"][2].startswith("-----BEGIN PRIVATE KEY-----")  # type: ignore[index]

    cli.run("up", "--yes", "--expect-no-changes")
    assert outputs(cli) == first
    cli.run("config", "set", "rsa_bits", "3072")
    cli.run("up", "--yes")
    second = outputs(cli)
    assert second["ed25519"] == first["ed25519"] and second["rsa"] != first["rsa"]
    rsa_key = serialization.load_ssh_private_key(second["rsa"][1].encode(), None)  # type: ignore[index]
    assert isinstance(rsa_key, rsa.RSAPrivateKey) and rsa_key.key_size == 3072
    # The private encodings are secrets in the state, not only in the program.
    state = cli.run("stack", "export").stdout
    assert "BEGIN OPENSSH PRIVATE KEY" not in state and "BEGIN RSA PRIVATE KEY" not in state
