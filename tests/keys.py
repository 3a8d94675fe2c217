"""Real OpenSSH public keys for tests, made by ssh-keygen."""

from __future__ import annotations

import subprocess
import tempfile
from functools import cache
from pathlib import Path


@cache
def public_key(key_type: str = "ed25519", bits: int | None = None, comment: str = "customer@laptop") -> str:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "key"
        command = ["ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", comment, "-f", str(path)]
        if bits:
            command += ["-b", str(bits)]
        subprocess.run(command, check=True)
        return path.with_suffix(".pub").read_text().strip()
