"""The rollout's health gate over the real transports: an HTTP gateway and an sshd on loopback, with
the keys taken from a stack export the way `LiveProbe` reads them from a stack's state."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from components.host_baseline import HostSettings, render_host_baseline
from config import BaselinePolicy
from fleet.health import LiveProbe, check_health
from fleet.output import OUTPUT_LIMIT
from tests.loopback_sshd import keypair, loopback_sshd

STACK = "customer-acme"
SECRET_SIG = {"4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270"}

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("sshd", path="/usr/sbin:/usr/bin") is None,
    reason="needs root and sshd (CI runs as root with openssh-server)",
)


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[dict[str, Any]]:
    with loopback_sshd(tmp_path) as server:
        yield {"port": server.port, "private": server.client_private_key, "host": server.host_public_key}


@pytest.fixture
def gateway() -> Iterator[str]:
    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="gateway"')
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()


def _export(private_key: str, host_key: str) -> dict[str, Any]:
    """A stack's state as `pulumi stack export --show-secrets` writes it (the parts the probe reads)."""
    prefix = "urn:pulumi:customer-acme::clawhosters::clawhosters:index:CustomerInstance$tls:index/privateKey:PrivateKey"
    return {
        "resources": [
            {"urn": f"{prefix}::{STACK}-host-key", "outputs": {"publicKeyOpenssh": host_key + "\n"}},
            {
                "urn": f"{prefix}::{STACK}-provisioning-key",
                "outputs": {"privateKeyOpenssh": {**SECRET_SIG, "plaintext": json.dumps(private_key)}},
            },
        ]
    }


def test_a_healthy_host_passes_and_a_host_with_another_baseline_fails(
    tmp_path: Path, sshd: dict[str, Any], gateway: str
) -> None:
    bundle = render_host_baseline(BaselinePolicy(), HostSettings())
    bundle.write_to(tmp_path / "bundle")
    state = _export(sshd["private"], sshd["host"])
    probe = LiveProbe(lambda _stack: state, ssh_port=sshd["port"], bundle_dir=str(tmp_path / "bundle"))
    outputs = {"gateway_url": gateway, "baseline_digest": bundle.digest, "ipv4_address": "127.0.0.1"}
    assert check_health(STACK, outputs, probe) == []

    (tmp_path / "bundle/apply.sh").write_text("#!/bin/sh\nexit 0\n")
    problems = check_health(STACK, outputs, probe)
    assert len(problems) == 1 and "the host does not run the reviewed baseline" in problems[0]


def test_the_ssh_session_is_pinned_to_the_host_key_in_the_state(
    tmp_path: Path, sshd: dict[str, Any], gateway: str
) -> None:
    _, impostor = keypair(tmp_path / "impostor")
    probe = LiveProbe(
        lambda _stack: _export(sshd["private"], impostor), ssh_port=sshd["port"], bundle_dir=str(tmp_path)
    )
    problems = check_health(STACK, {"gateway_url": gateway, "baseline_digest": "x", "ipv4_address": "127.0.0.1"}, probe)
    assert len(problems) == 1 and "the baseline on the host could not be read" in problems[0]


@pytest.mark.parametrize("forced", ["cat /dev/zero", "yes >&2", "yes"])
def test_a_host_whose_root_streams_without_end_fails_the_gate_at_once_having_kept_nothing(
    tmp_path: Path, sshd: dict[str, Any], gateway: str, forced: str
) -> None:
    """Root on the VPS forces the provisioning key's command: the read stops after 1 MiB, on either stream."""
    keys = tmp_path / "authorized_keys"
    keys.write_text(f'command="{forced}" {keys.read_text()}')
    probe = LiveProbe(lambda _stack: _export(sshd["private"], sshd["host"]), ssh_port=sshd["port"])
    outputs = {"gateway_url": gateway, "baseline_digest": "x", "ipv4_address": "127.0.0.1"}
    started = time.monotonic()
    [problem] = check_health(STACK, outputs, probe)
    assert time.monotonic() - started < 20
    assert f"sent more than {OUTPUT_LIMIT} bytes; it was stopped and nothing it sent was kept" in problem
