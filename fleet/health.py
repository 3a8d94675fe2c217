"""The health gate after each stack's deploy: the gateway answers, and the baseline on the host is
the one the stack rendered (its digest equals the stack's `baseline_digest` output).

`check_health` takes a `Probe`, the seam between the decision and the network: `LiveProbe` asks the
gateway over HTTP and reads the installed bundle over SSH, pinned to the host key in the stack's
state; tests hand it a probe of their own.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from components.bundle import Bundle, RenderedFile
from components.host_baseline import BUNDLE_DIR
from fleet.output import run_bounded

# Without credentials the gateway must refuse: basic auth is part of the contract.
GATEWAY_UNAUTHENTICATED = 401
HTTP_TIMEOUT_SECONDS = 10
SSH_TIMEOUT_SECONDS = 30


class Probe(Protocol):
    def gateway_status(self, url: str) -> int | None:
        """The HTTP status of an unauthenticated GET, or None when nothing answers."""
        ...

    def host_bundle(self, stack: str, outputs: Mapping[str, Any]) -> bytes:
        """A tar stream of the baseline bundle directory as installed on the stack's host."""
        ...


def bundle_digest(tar_stream: bytes) -> str:
    """The digest `Bundle.digest` gives the regular files of a tar stream (paths, modes, contents)."""
    files = []
    with tarfile.open(fileobj=io.BytesIO(tar_stream)) as archive:
        for member in archive.getmembers():
            if member.isfile():
                content = archive.extractfile(member)
                assert content is not None
                path = PurePosixPath(os.path.normpath(member.name))
                files.append(RenderedFile(path=path, content=content.read().decode(), mode=member.mode & 0o7777))
    return Bundle(files=tuple(files)).digest


def check_health(stack: str, outputs: Mapping[str, Any], probe: Probe) -> list[str]:
    """What is wrong with a freshly deployed stack; empty when it is healthy."""
    problems = []
    url = outputs.get("gateway_url")
    status = probe.gateway_status(str(url)) if url else None
    if status != GATEWAY_UNAUTHENTICATED:
        problems.append(
            f"the gateway at {url} answered {status if status is not None else 'nothing'} without credentials; "
            f"expected {GATEWAY_UNAUTHENTICATED} (basic auth)"
        )
    expected = outputs.get("baseline_digest")
    try:
        installed = bundle_digest(probe.host_bundle(stack, outputs))
    except (OSError, tarfile.TarError, ValueError, subprocess.SubprocessError) as error:
        problems.append(f"the baseline on the host could not be read: {error}")
    else:
        if installed != expected:
            problems.append(
                f"the baseline on the host has digest {installed[:12]}…, the stack rendered "
                f"{str(expected)[:12]}…: the host does not run the reviewed baseline"
            )
    return problems


class LiveProbe:
    """HTTP to the gateway; SSH as root with the stack's provisioning key, pinned to its host key."""

    def __init__(
        self, state: Callable[[str], Mapping[str, Any]], ssh_port: int = 22, bundle_dir: str = BUNDLE_DIR
    ) -> None:
        # stack -> its exported state with secrets shown (fleet.stacks.open_stack(...).export_stack()).
        self.state = state
        self.ssh_port = ssh_port
        self.bundle_dir = bundle_dir

    def gateway_status(self, url: str) -> int | None:
        try:
            with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_SECONDS) as response:  # noqa: S310 (our gateway)
                return int(response.status)
        except urllib.error.HTTPError as error:
            return error.code
        except (urllib.error.URLError, OSError):
            return None

    def host_bundle(self, stack: str, outputs: Mapping[str, Any]) -> bytes:
        keys = _keys(self.state(stack), stack)
        address = str(outputs["ipv4_address"])
        with tempfile.TemporaryDirectory() as directory:
            key_file, known_hosts = Path(directory) / "key", Path(directory) / "known_hosts"
            key_file.write_text(keys["provisioning"])
            key_file.chmod(0o600)
            host = address if self.ssh_port == 22 else f"[{address}]:{self.ssh_port}"
            known_hosts.write_text(f"{host} {keys['host']}\n")
            # The host's root decides what this session sends: at most fleet.output.OUTPUT_LIMIT is read.
            return run_bounded(
                [
                    "ssh",
                    "-i",
                    str(key_file),
                    "-p",
                    str(self.ssh_port),
                    "-o",
                    f"UserKnownHostsFile={known_hosts}",
                    "-o",
                    "StrictHostKeyChecking=yes",
                    "-o",
                    "BatchMode=yes",
                    "-o",
                    f"ConnectTimeout={SSH_TIMEOUT_SECONDS}",
                    f"root@{address}",
                    f"tar -C '{self.bundle_dir}' -cf - .",
                ],
                timeout=SSH_TIMEOUT_SECONDS * 2,
            )


def _keys(deployment: Mapping[str, Any], stack: str) -> dict[str, str]:
    """The provisioning private key and the host public key from a stack's exported state."""
    found: dict[str, str] = {}
    for resource in deployment.get("resources", []):
        name = str(resource.get("urn", "")).rsplit("::", 1)[-1]
        outputs = resource.get("outputs") or {}
        if name == f"{stack}-provisioning-key":
            found["provisioning"] = _plain(outputs["privateKeyOpenssh"])
        elif name == f"{stack}-host-key":
            found["host"] = _plain(outputs["publicKeyOpenssh"]).strip()
    if set(found) != {"provisioning", "host"}:
        raise ValueError(f"stack {stack}'s state holds no provisioning or host key")
    return found


def _plain(value: Any) -> str:
    # `stack export --show-secrets` writes a secret as {"<sig>": ..., "plaintext": "<json>"}.
    if isinstance(value, Mapping) and "plaintext" in value:
        return str(json.loads(value["plaintext"]))
    return str(value)
