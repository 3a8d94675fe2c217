"""The requests the transcripts hold: what the engine sends the command and tls providers for the
program, as recorded with PULUMI_DEBUG_GRPC from a lab `up`, with its live values as placeholders.

A new customer's preview (everything the server gives still unknown, in the form the program sends
and in the secret form pulumi-command's SDK would send), the `up` (known, secret connection), an
edit, a new trigger, a refresh's Read, the gateway's password on stdin, and the failures a run can
meet: a failing script, a refused environment variable, another host key, a host that is not
listening. The scripts are harmless ones, run on a loopback sshd.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from tests.loopback_sshd import free_port, keypair, loopback_sshd
from tests.providers.harness import Placeholders, Step, normalise_random

# The shape of the program's first step; what a script says changes no answer.
WAIT_FOR_CLOUD_INIT = "set -eu\nuntil [ -f /var/lib/cloud/instance/boot-finished ]; do sleep 2; done\n"
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
SECRET_KEY, SECRET_SIG = "4dabf18193072939515e22adb298388d", "1b47061264138c4ac30d75fd1eb44270"

TRANSCRIPTS = Path(__file__).parent / "transcripts"
STACK = "customer-demo"
COMMAND = "command:remote:Command"
PRIVATE_KEY = "tls:index/privateKey:PrivateKey"
# What the program's component names its resources (components.instance).
COMMAND_NAMES = ("wait-cloud-init", "gateway", "once")
COMMAND_ID = re.compile(rf"\b(?P<stem>{STACK}-(?:{'|'.join(COMMAND_NAMES)}))[0-9a-f]{{8}}\b")


def secret(value: Any) -> dict[str, Any]:
    return {SECRET_KEY: SECRET_SIG, "value": value}


def _urn(type_: str, name: str) -> str:
    return f"urn:pulumi:{STACK}::clawhosters::clawhosters:index:CustomerInstance${type_}::{name}"


def _provider_steps(package: str, version: str) -> list[Step]:
    urn = f"urn:pulumi:{STACK}::clawhosters::pulumi:providers:{package}::default_{version.replace('.', '_')}"
    identity = {"urn": urn, "name": f"default_{version.replace('.', '_')}", "type": f"pulumi:providers:{package}"}
    return [
        Step("plugin-info", "GetPluginInfo", {}),
        Step("check-config", "CheckConfig", {**identity, "olds": {}, "news": {"version": version}}),
        Step(
            "configure",
            "Configure",
            {
                **identity,
                "variables": {},
                "args": {"$response": ["check-config", "inputs"]},
                "acceptSecrets": True,
                "acceptResources": True,
                "sendsOldInputs": True,
                "sendsOldInputsToDelete": True,
                "id": UNKNOWN,
            },
        ),
    ]


class _Command:
    """Request builders for one `command:remote:Command` of the stack."""

    def __init__(self, name: str) -> None:
        self.name = f"{STACK}-{name}"
        self.identity = {"urn": _urn(COMMAND, self.name), "name": self.name, "type": COMMAND}
        # The Check step each Create step took its inputs from.
        self.inputs_of: dict[str, str] = {}

    def check(self, step: str, news: dict[str, Any], about: str, olds: dict[str, Any] | None = None) -> Step:
        request = {**self.identity, "olds": olds or {}, "news": news, "randomSeed": "AAAA", "oldOutputs": {}}
        return Step(step, "Check", request, about)

    def create(self, step: str, checked: str, about: str, preview: bool = False) -> Step:
        self.inputs_of[step] = checked
        request = {**self.identity, "properties": {"$response": [checked, "inputs"]}, "preview": preview}
        return Step(step, "Create", request, about)

    def change(self, step: str, method: str, created: str, checked: str, about: str) -> Step:
        """A Diff or an Update of what `created` made (from the inputs `checked` before it) to the
        inputs of step `checked`."""
        request = {
            **self.identity,
            "id": {"$response": [created, "id"]},
            "olds": {"$response": [created, "properties"]},
            "news": {"$response": [checked, "inputs"]},
            "oldInputs": {"$response": [self.inputs_of[created], "inputs"]},
        }
        return Step(step, method, request, about)


def _connection(**changes: Any) -> dict[str, Any]:
    """The program's connection once the server exists (components.instance), to the loopback sshd."""
    return {
        "host": "127.0.0.1",
        "port": "${SSH_PORT}",
        "user": "root",
        "privateKey": "${CLIENT_KEY}",
        "hostKey": "${HOST_KEY}",
        "dialErrorLimit": 60,
        "perDialTimeout": 15,
        **changes,
    }


def command_steps() -> list[Step]:
    wait, gateway, once = _Command("wait-cloud-init"), _Command("gateway"), _Command("once")
    gateway_preview = {"connection": UNKNOWN, "create": "sh install.sh", "triggers": [UNKNOWN, "digest"]}
    waited = {"connection": secret(_connection()), "create": "echo waited; echo a note >&2", "triggers": ["1000004"]}
    return [
        *_provider_steps("command", "1.2.1"),
        # A new customer's preview: the server, its address and the keys do not exist yet.
        wait.check(
            "preview-check",
            {"connection": UNKNOWN, "create": WAIT_FOR_CLOUD_INIT, "triggers": [UNKNOWN]},
            "the preview of a new customer: connection unknown (the program's form)",
        ),
        wait.check(
            "preview-check-secret-unknown",
            {"connection": secret(UNKNOWN), "create": WAIT_FOR_CLOUD_INIT, "triggers": [UNKNOWN]},
            "the form pulumi-command's SDK sends: a secret still unknown comes back as known defaults",
        ),
        wait.create("preview-create", "preview-check", "the preview's create", preview=True),
        gateway.check(
            "preview-check-stdin",
            {**gateway_preview, "stdin": UNKNOWN},
            "the gateway's password on stdin, unknown (the program's form)",
        ),
        gateway.check(
            "preview-check-stdin-secret-unknown",
            {**gateway_preview, "stdin": secret(UNKNOWN)},
            "a secret stdin still unknown comes back as a known empty string",
        ),
        # The up: everything known, the connection secret as a whole.
        wait.check("check", waited, "the up: a known, secret connection"),
        wait.create("create", "check", "runs create over SSH; its output becomes stdout and stderr"),
        wait.change("diff-unchanged", "Diff", "create", "check", "a second up: nothing changed"),
        wait.check("check-edited", {**waited, "create": "echo edited"}, "an edited script"),
        wait.change("diff-edited", "Diff", "create", "check-edited", "an edited script is an update"),
        wait.change(
            "update",
            "Update",
            "create",
            "check-edited",
            "runs create again (no update script); the previous output is refused by a stock sshd: a warning",
        ),
        wait.check("check-new-trigger", {**waited, "triggers": ["1000005"]}, "a new server id"),
        wait.change("diff-new-trigger", "Diff", "create", "check-new-trigger", "a changed trigger replaces"),
        Step(
            "read",
            "Read",
            {
                **wait.identity,
                "id": {"$response": ["create", "id"]},
                "properties": {"$response": ["create", "properties"]},
                "inputs": {"$response": ["check", "inputs"]},
            },
            "a refresh",
        ),
        gateway.check(
            "check-stdin",
            {"connection": secret(_connection()), "create": "cat", "stdin": secret("gateway-password")},
            "the gateway's password on stdin, known",
        ),
        gateway.create("create-stdin", "check-stdin", "stdin reaches the script"),
        once.check("check-failing", {"connection": secret(_connection()), "create": "echo about-to-fail; exit 3"}, ""),
        once.create("create-failing", "check-failing", "a failing script fails the create with its output"),
        once.check(
            "check-environment",
            {"connection": secret(_connection()), "create": "echo never", "environment": {"CLAW_COLOUR": "teal"}},
            "",
        ),
        once.create("create-environment", "check-environment", "sshd refuses the variable: the create fails"),
        once.check(
            "check-other-host-key",
            {"connection": secret(_connection(hostKey="${OTHER_HOST_KEY}", dialErrorLimit=1)), "create": "echo never"},
            "",
        ),
        once.create("create-other-host-key", "check-other-host-key", "another host key: no script runs"),
        once.check(
            "check-closed-port",
            {"connection": secret(_connection(port="${CLOSED_PORT}", dialErrorLimit=2)), "create": "echo never"},
            "",
        ),
        once.create("create-closed-port", "check-closed-port", "nothing listens: the dial error limit counts retries"),
        once.check(
            "check-proxy",
            {
                "connection": secret(
                    _connection(proxy={"host": "127.0.0.1", "port": "${SSH_PORT}", "privateKey": "${CLIENT_KEY}"})
                ),
                "create": "echo through the bastion",
                "delete": "echo deleted",
            },
            "",
        ),
        once.create("create-proxy", "check-proxy", "through a bastion"),
        Step(
            "delete-with-script",
            "Delete",
            {
                **once.identity,
                "id": {"$response": ["create-proxy", "id"]},
                "properties": {"$response": ["create-proxy", "properties"]},
                "oldInputs": {"$response": ["check-proxy", "inputs"]},
            },
            "delete runs its script",
        ),
        Step(
            "delete",
            "Delete",
            {
                **wait.identity,
                "id": {"$response": ["create", "id"]},
                "properties": {"$response": ["create", "properties"]},
                "oldInputs": {"$response": ["check", "inputs"]},
            },
            "no delete script: nothing runs",
        ),
    ]


def tls_steps() -> list[Step]:
    def key_step(step: str, method: str, name: str, about: str = "", **fields: Any) -> Step:
        identity = {"urn": _urn(PRIVATE_KEY, f"{STACK}-{name}"), "name": f"{STACK}-{name}", "type": PRIVATE_KEY}
        return Step(step, method, {**identity, **fields}, about)

    def created(step: str) -> dict[str, Any]:
        return {"$response": [step, "properties"]}

    return [
        *_provider_steps("tls", "5.6.2"),
        key_step("check", "Check", "host-key", "the program's keys", olds={}, news={"algorithm": "ED25519"}),
        key_step("preview-create", "Create", "host-key", properties={"$response": ["check", "inputs"]}, preview=True),
        key_step("create", "Create", "host-key", properties={"$response": ["check", "inputs"]}),
        key_step(
            "check-again",
            "Check",
            "host-key",
            "a second up",
            olds={"$response": ["check", "inputs"]},
            news={"algorithm": "ED25519"},
        ),
        key_step(
            "diff-unchanged",
            "Diff",
            "host-key",
            id={"$response": ["create", "id"]},
            olds=created("create"),
            news={"$response": ["check-again", "inputs"]},
            oldInputs={"$response": ["check", "inputs"]},
        ),
        key_step(
            "read",
            "Read",
            "host-key",
            "a refresh",
            id={"$response": ["create", "id"]},
            properties=created("create"),
            inputs={"$response": ["check", "inputs"]},
        ),
        key_step("check-rsa", "Check", "host-key", olds={}, news={"algorithm": "RSA", "rsaBits": 3072}),
        key_step(
            "diff-algorithm",
            "Diff",
            "host-key",
            "another algorithm replaces the key",
            id={"$response": ["create", "id"]},
            olds=created("create"),
            news={"$response": ["check-rsa", "inputs"]},
            oldInputs={"$response": ["check", "inputs"]},
        ),
        key_step("create-rsa", "Create", "host-key", properties={"$response": ["check-rsa", "inputs"]}),
        key_step("check-ecdsa", "Check", "host-key", olds={}, news={"algorithm": "ECDSA", "ecdsaCurve": "P256"}),
        key_step("create-ecdsa", "Create", "host-key", properties={"$response": ["check-ecdsa", "inputs"]}),
        key_step(
            "check-unknown", "Check", "host-key", "an algorithm not known yet", olds={}, news={"algorithm": UNKNOWN}
        ),
        key_step(
            "check-invalid", "Check", "host-key", "an algorithm that does not exist", olds={}, news={"algorithm": "DSA"}
        ),
        key_step(
            "delete",
            "Delete",
            "host-key",
            id={"$response": ["create", "id"]},
            properties=created("create"),
            oldInputs={"$response": ["check", "inputs"]},
        ),
    ]


@contextmanager
def live_values(directory: Path) -> Iterator[Placeholders]:
    """The loopback sshd the command transcript runs on, and the values its placeholders stand for."""
    with loopback_sshd(directory) as sshd:
        _, other_host_key = keypair(directory / "other-host")
        yield Placeholders(
            {
                "SSH_PORT": sshd.port,
                "CLOSED_PORT": free_port(),
                "CLIENT_KEY": sshd.client_private_key,
                # Without ssh-keygen's comment (user@host), which differs by machine.
                "HOST_KEY": _without_comment(sshd.host_public_key),
                "OTHER_HOST_KEY": _without_comment(other_host_key),
            }
        )


def _without_comment(public_key: str) -> str:
    return " ".join(public_key.split()[:2])


@contextmanager
def no_live_values(_directory: Path) -> Iterator[Placeholders]:
    yield Placeholders()


@dataclass(frozen=True)
class Transcribed:
    """A provider whose answers are recorded: its requests, how its live values are made, and how
    its random values are described."""

    steps: Callable[[], list[Step]]
    live_values: Callable[[Path], AbstractContextManager[Placeholders]]
    normalise: Callable[[Any], Any]


PROVIDERS = {
    "command": Transcribed(command_steps, live_values, partial(normalise_random, id_pattern=COMMAND_ID)),
    "tls": Transcribed(tls_steps, no_live_values, normalise_random),
}


def transcript_path(provider: str) -> Path:
    return TRANSCRIPTS / f"{provider}.json"
