"""Runs a stack's `command:remote:Command` resources the way the pulumi-command provider does.

Read from the provider's source (provider/pkg/provider/remote/): `connection.go` dials with
retries (`dialErrorLimit` attempts, default 10, each bounded by `perDialTimeout`, with Pulumi's
retry delays) and, with `hostKey` set, accepts only that key and offers only its algorithm;
`commandOutputs.go` opens one session per command, sends one `env` request per `environment`
entry and fails the command when sshd refuses one, sends `PULUMI_COMMAND_STDOUT`/`STDERR` of the
previous run (a refusal only warns), feeds `stdin`, runs the command text as one `exec` request and
fails on a non-zero exit status with the combined output; `commandController.go` and
`common/inputs.go`: a change of `triggers` replaces the resource (its `delete` command, then
`create`), any other change runs `update`, or `create` when there is none; no change, no run.
"""

from __future__ import annotations

import base64
import contextlib
import io
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import paramiko
from paramiko.common import cMSG_CHANNEL_REQUEST

from lab.netns import connect_from

Action = Literal["create", "update", "replace", "unchanged"]
DEFAULT_DIAL_ERROR_LIMIT = 10
DEFAULT_PER_DIAL_TIMEOUT = 15
# Pulumi's retry.Until: 250 ms, doubling, at most 5 s between attempts.
FIRST_RETRY_DELAY, MAX_RETRY_DELAY = 0.25, 5.0


class CommandFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class Connection:
    host: str
    private_key: str
    host_key: str | None = None
    user: str = "root"
    port: int = 22
    dial_error_limit: int = DEFAULT_DIAL_ERROR_LIMIT
    per_dial_timeout: int = DEFAULT_PER_DIAL_TIMEOUT

    @classmethod
    def from_inputs(cls, inputs: dict[str, Any]) -> Connection:
        return cls(
            host=inputs["host"],
            private_key=inputs["privateKey"],
            host_key=inputs.get("hostKey"),
            user=inputs.get("user", "root"),
            port=int(inputs.get("port", 22)),
            dial_error_limit=int(inputs.get("dialErrorLimit", DEFAULT_DIAL_ERROR_LIMIT)),
            per_dial_timeout=int(inputs.get("perDialTimeout", DEFAULT_PER_DIAL_TIMEOUT)),
        )


@dataclass(frozen=True)
class RemoteCommand:
    """One `command:remote:Command` with the inputs the provider receives."""

    name: str
    connection: Connection
    create: str | None
    update: str | None
    delete: str | None
    environment: dict[str, str]
    stdin: str | None
    triggers: list[Any]
    add_previous_output_in_env: bool

    @classmethod
    def from_inputs(cls, name: str, inputs: dict[str, Any]) -> RemoteCommand:
        return cls(
            name=name,
            connection=Connection.from_inputs(inputs["connection"]),
            create=inputs.get("create"),
            update=inputs.get("update"),
            delete=inputs.get("delete"),
            environment=dict(inputs.get("environment") or {}),
            stdin=inputs.get("stdin"),
            triggers=list(inputs.get("triggers") or []),
            add_previous_output_in_env=inputs.get("addPreviousOutputInEnv", True),
        )

    def comparable(self) -> dict[str, Any]:
        """The inputs whose change the provider acts on (the connection is an input too)."""
        return {
            "connection": self.connection,
            "create": self.create,
            "update": self.update,
            "delete": self.delete,
            "environment": self.environment,
            "stdin": self.stdin,
            "triggers": self.triggers,
        }


@dataclass
class CommandState:
    """What Pulumi's state keeps of a command after it ran."""

    command: RemoteCommand
    stdout: str = ""
    stderr: str = ""


@dataclass
class Step:
    name: str
    action: Action
    seconds: float = 0.0
    stdout: str = ""
    stderr: str = ""
    warnings: list[str] = field(default_factory=list)


class Runner:
    """Runs commands over SSH from `namespace` with the provider's semantics."""

    def __init__(self, namespace: str | None = None) -> None:
        self.namespace = namespace

    @contextlib.contextmanager
    def connect(self, connection: Connection) -> Iterator[paramiko.Transport]:
        key = paramiko.Ed25519Key.from_private_key(io.StringIO(connection.private_key))
        expected = _parse_public_key(connection.host_key) if connection.host_key else None
        delay = FIRST_RETRY_DELAY
        transport: paramiko.Transport | None = None
        for attempt in range(1, max(connection.dial_error_limit, 1) + 1):
            transport = None
            try:
                sock = connect_from(self.namespace, connection.host, connection.port, connection.per_dial_timeout)
                transport = paramiko.Transport(sock)
                if expected is not None:
                    # Like HostKeyAlgorithms = [pinned key's type]: only that key can be presented.
                    transport.get_security_options().key_types = [expected.get_name()]
                transport.banner_timeout = transport.auth_timeout = connection.per_dial_timeout
                transport.start_client(timeout=connection.per_dial_timeout)
                presented = transport.get_remote_server_key()
                if expected is not None and presented.asbytes() != expected.asbytes():
                    raise paramiko.SSHException("ssh: host key mismatch")
                transport.auth_publickey(connection.user, key)
                break
            except (OSError, paramiko.SSHException, EOFError) as failure:
                if transport is not None:
                    transport.close()
                if attempt >= connection.dial_error_limit:
                    raise CommandFailed(f"after {attempt} failed attempts: {failure}") from failure
                time.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_DELAY)
        assert transport is not None
        try:
            yield transport
        finally:
            transport.close()

    def run(
        self,
        connection: Connection,
        text: str,
        environment: dict[str, str],
        stdin: str | None,
        previous: CommandState | None = None,
    ) -> tuple[str, str, list[str]]:
        """One session: env requests, stdin, the command as one exec request. (stdout, stderr, warnings)."""
        warnings: list[str] = []
        with self.connect(connection) as transport:

            def session() -> paramiko.Channel:
                channel = transport.open_session(timeout=connection.per_dial_timeout)
                for name, value in environment.items():
                    if not _setenv(channel, name, value):
                        raise CommandFailed(f"could not set environment variable {name!r}: ssh: setenv failed")
                return channel

            channel = session()
            if previous is not None:
                for name, value in (
                    ("PULUMI_COMMAND_STDOUT", previous.stdout),
                    ("PULUMI_COMMAND_STDERR", previous.stderr),
                ):
                    if value and not _setenv(channel, name, value):
                        warnings.append(f"Unable to set '{name}'")
                        # A refusal leaves Go's session usable; paramiko closes the channel, so the
                        # command gets a new one with the same accepted environment.
                        channel = session()
            channel.exec_command(text)
            if stdin:
                channel.sendall(stdin.encode())
            channel.shutdown_write()
            stdout, stderr = io.BytesIO(), io.BytesIO()
            while True:
                ready = False
                if channel.recv_ready():
                    stdout.write(channel.recv(65536))
                    ready = True
                if channel.recv_stderr_ready():
                    stderr.write(channel.recv_stderr(65536))
                    ready = True
                if not ready:
                    if channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready():
                        break
                    time.sleep(0.05)
            status = channel.recv_exit_status()
            out = stdout.getvalue().decode(errors="replace")
            err = stderr.getvalue().decode(errors="replace")
            if status != 0:
                raise CommandFailed(f"Process exited with status {status}: running {text[:80]!r}...:\n{out}{err}")
            return out.removesuffix("\n"), err.removesuffix("\n"), warnings

    def apply(self, command: RemoteCommand, previous: CommandState | None) -> tuple[Step, CommandState]:
        """What `pulumi up` does with this resource, given its state from the last run."""
        started = time.monotonic()
        if previous is None:
            action: Action = "create"
        elif previous.command.triggers != command.triggers:
            action = "replace"
        elif previous.command.comparable() != command.comparable():
            action = "update"
        else:
            step = Step(command.name, "unchanged")
            return step, previous
        if action == "replace" and previous is not None and previous.command.delete:
            self.run(previous.command.connection, previous.command.delete, previous.command.environment, None, previous)
        text = command.create
        if action == "update" and command.update:
            text = command.update
        stdout = stderr = ""
        warnings: list[str] = []
        if text:
            stdout, stderr, warnings = self.run(
                command.connection,
                text,
                command.environment,
                command.stdin,
                previous if action == "update" and command.add_previous_output_in_env else None,
            )
        state = CommandState(command, stdout, stderr)
        return Step(command.name, action, time.monotonic() - started, stdout, stderr, warnings), state


def _setenv(channel: paramiko.Channel, name: str, value: str) -> bool:
    """An `env` request that wants a reply, as Go's `Session.Setenv` sends it; paramiko's own
    `set_environment_variable` asks for none and so never learns of a refusal."""
    message = paramiko.Message()
    message.add_byte(cMSG_CHANNEL_REQUEST)
    message.add_int(channel.remote_chanid)
    message.add_string("env")
    message.add_boolean(True)
    message.add_string(name)
    message.add_string(value)
    channel._event_pending()
    channel.transport._send_user_message(message)
    try:
        channel._wait_for_event()
    except paramiko.SSHException:
        return False
    return not channel.closed


def _parse_public_key(line: str) -> paramiko.PKey:
    kind, blob = line.split()[:2]
    return paramiko.PKey.from_type_string(kind, base64.b64decode(blob))
