"""A real sshd on loopback that lets root in with one key, as a VPS lets the provisioner in."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"


@dataclass(frozen=True)
class LoopbackSshd:
    port: int
    client_private_key: str
    host_public_key: str


def keypair(path: Path) -> tuple[str, str]:
    """A new ed25519 key at `path`: (private key, public key line)."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.read_text(), path.with_suffix(".pub").read_text().strip()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def loopback_sshd(directory: Path, accept_env: str | None = None) -> Iterator[LoopbackSshd]:
    """sshd as root on a free loopback port; `accept_env` is its AcceptEnv pattern (none by default)."""
    client_private, client_public = keypair(directory / "client")
    _, host_public = keypair(directory / "host")
    (directory / "authorized_keys").write_text(client_public + "\n")
    port = free_port()
    config = directory / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {directory / 'host'}\n"
        f"AuthorizedKeysFile {directory / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
        f"PasswordAuthentication no\nKbdInteractiveAuthentication no\nStrictModes no\nUsePAM no\n"
        f"PidFile {directory / 'sshd.pid'}\n" + (f"AcceptEnv {accept_env}\n" if accept_env else "")
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
    server = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield LoopbackSshd(port, client_private, host_public)
    finally:
        server.terminate()
        server.wait(timeout=10)
