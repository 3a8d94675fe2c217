"""The two things the fleet audit touches: a customer stack (Automation API) and its VPS (SSH).

`AutomationStacks` needs the stack's backend and its passphrase (the keys are secrets in the state);
`SshStatusReader` reads the drift status file over the same pinned SSH connection the program's
remote commands use: user root, the stack's provisioning key, and the host key the program generated
and installed through cloud-init.
"""

from __future__ import annotations

import base64
import io
import json
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import paramiko
from pulumi.automation import EngineEvent
from pydantic import BaseModel, ConfigDict, SecretStr

from components.drift import STATUS_FILE
from fleet import stacks
from fleet.desired import DesiredConfig
from fleet.output import OUTPUT_LIMIT

PRIVATE_KEY_TYPE = "tls:index/privateKey:PrivateKey"
# pulumi `stack export --show-secrets` writes a secret as this object with its JSON-encoded value.
SECRET_SIGNATURE = "4dabf18193072939515e22adb298388d"  # noqa: S105 (a fixed marker, not a secret)


class HostAccess(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str
    private_key: SecretStr
    host_public_key: str
    port: int = 22


class HostUnreachable(Exception):
    """No SSH session could be opened: the host is down, filtered or not answering."""


class HostRefused(Exception):
    """The host answered but is not the one we pinned, or refused our key."""


class Stacks(Protocol):
    def refresh_preview(self, stack: str) -> list[EngineEvent]: ...
    def outputs(self, stack: str) -> dict[str, Any]: ...
    def host_access(self, stack: str) -> HostAccess: ...


class StatusReader(Protocol):
    def read_status(self, access: HostAccess) -> str | None:
        """The status file's text, None when it does not exist; raises HostUnreachable or HostRefused."""
        ...


def _plain(value: Any) -> Any:
    if isinstance(value, dict) and SECRET_SIGNATURE in value:
        if "plaintext" not in value:
            raise ValueError("the stack export holds encrypted secrets: export with --show-secrets")
        return json.loads(value["plaintext"])
    return value


def host_access_from_state(deployment: Mapping[str, Any], outputs: Mapping[str, Any]) -> HostAccess:
    """The SSH target of a stack from its outputs and its state's keys (provisioning key, host key)."""
    keys: dict[str, dict[str, Any]] = {}
    for resource in deployment.get("resources", []):
        if resource.get("type") == PRIVATE_KEY_TYPE:
            keys[str(resource["urn"]).rsplit("::", 1)[-1]] = resource.get("outputs", {})
    provisioning = next((out for name, out in keys.items() if name.endswith("-provisioning-key")), None)
    host_key = next((out for name, out in keys.items() if name.endswith("-host-key")), None)
    if provisioning is None or host_key is None or not outputs.get("ipv4_address"):
        raise ValueError("the stack has no server address or keys yet")
    return HostAccess(
        host=str(outputs["ipv4_address"]),
        private_key=SecretStr(_plain(provisioning["privateKeyOpenssh"])),
        host_public_key=str(_plain(host_key["publicKeyOpenssh"])).strip(),
    )


@dataclass(frozen=True)
class AutomationStacks:
    """Customer stacks through `fleet.stacks`, the pinned CLI. By default each stack's settings file is
    the checkout's; with `desired` (the provisioner's settings), each stack gets a workspace of its own
    in `workspace.stacks_dir` and its whole config first. A refresh preview takes no stack lock and
    writes nothing (pkg/backend/diy, Refresh with PreviewOnly), so an audit needs no fencing."""

    workspace: stacks.Workspace = field(default_factory=stacks.Workspace)
    desired: DesiredConfig | None = None
    # Each stack's own Hetzner project's read token (fleet.control.ProjectReadTokens); else the workspace's.
    hetzner_token: Callable[[str], SecretStr] | None = None
    _opened: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def _workspace(self, stack: str) -> stacks.Workspace:
        if self.hetzner_token is None:
            return self.workspace
        return self.workspace.model_copy(update={"hetzner_token": self.hetzner_token(stack)})

    def _configured(self, handle: Any, stack: str) -> Any:
        if self.desired is not None:
            stacks.write_config(handle, self.desired(stack))
        self._opened[stack] = handle
        return handle

    def _stack(self, stack: str) -> Any:
        if stack not in self._opened:
            self._configured(stacks.open_stack(self._workspace(stack), stack), stack)
        return self._opened[stack]

    def refresh_preview(self, stack: str) -> list[EngineEvent]:
        """Opens the stack (a failure is this operation's, fleet.failures) and keeps it for the rest."""
        events: list[EngineEvent] = []
        with stacks.operation(self._workspace(stack), stack, "refresh-preview") as (handle, running):
            self._configured(handle, stack).preview_refresh(
                on_event=running.watch(events.append), color="never", suppress_outputs=True
            )
        return events

    def outputs(self, stack: str) -> dict[str, Any]:
        return {name: output.value for name, output in self._stack(stack).outputs().items()}

    def host_access(self, stack: str) -> HostAccess:
        selected = self._stack(stack)
        deployment = selected.export_stack().deployment or {}
        return host_access_from_state(deployment, self.outputs(stack))


class SshStatusReader:
    def __init__(self, status_file: str = STATUS_FILE, timeout_seconds: float = 15) -> None:
        self.status_file = status_file
        self.timeout = timeout_seconds

    def read_status(self, access: HostAccess) -> str | None:
        client = paramiko.SSHClient()
        key_type, key_data = access.host_public_key.split()[:2]
        pinned = paramiko.PKey.from_type_string(key_type, base64.b64decode(key_data))
        name = access.host if access.port == 22 else f"[{access.host}]:{access.port}"
        client.get_host_keys().add(name, key_type, pinned)
        # Only the pinned key is accepted; an unknown one ends the connection.
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        key = paramiko.Ed25519Key.from_private_key(io.StringIO(access.private_key.get_secret_value()))
        try:
            client.connect(
                access.host,
                port=access.port,
                username="root",
                pkey=key,
                timeout=self.timeout,
                banner_timeout=self.timeout,
                auth_timeout=self.timeout,
                allow_agent=False,
                look_for_keys=False,
            )
        except (paramiko.BadHostKeyException, paramiko.AuthenticationException) as error:
            client.close()
            raise HostRefused(f"{type(error).__name__}: {error}") from error
        except (OSError, paramiko.SSHException) as error:
            client.close()
            raise HostUnreachable(f"{type(error).__name__}: {error}") from error
        with client:
            try:
                _, stdout, _ = client.exec_command(f"cat {shlex.quote(self.status_file)}", timeout=self.timeout)
                # The host's root decides what this session sends (a forced command in authorized_keys).
                text = stdout.read(OUTPUT_LIMIT + 1)
                if len(text) > OUTPUT_LIMIT:
                    raise HostRefused(f"the status read sent more than {OUTPUT_LIMIT} bytes; stopped reading")
                if not stdout.channel.status_event.wait(self.timeout):
                    raise HostUnreachable(f"the status read did not end within {self.timeout} s")
                return text.decode(errors="replace") if stdout.channel.exit_status == 0 else None
            except (OSError, paramiko.SSHException) as error:  # the session stalled past the timeout
                said = str(error) or f"no answer within {self.timeout} s"
                raise HostUnreachable(f"{type(error).__name__}: {said}") from error
