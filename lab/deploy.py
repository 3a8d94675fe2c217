"""`pulumi up` of one customer stack onto the lab's booted machine.

The program runs under Pulumi's mocks (`components.offline.build_graph`), with the answers a real
`up` would give: real SSH keys from the `tls` resources, a real password, the lab VPS's addresses
for the server. Those values are kept between runs, as Pulumi's state keeps them. The lab plays
Hetzner for the server (it boots a machine from the server's `user_data` and provisioning key)
and the pulumi-command provider for every remote command (`lab.replay`), in dependency order.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pulumi.runtime.mocks import MockResourceArgs

from components.offline import (
    COMMAND,
    SERVER,
    Cloud,
    CloudFirewall,
    CloudServer,
    Graph,
    Registration,
    StandInMocks,
    build_graph,
)
from config.loader import StackSettings
from config.policy import BaselinePolicy
from lab.replay import CommandFailed, CommandState, RemoteCommand, Runner, Step

TLS_KEY = "tls:index/privateKey:PrivateKey"
PASSWORD_TYPE = "random:index/randomPassword:RandomPassword"  # noqa: S105 (a type token)


def _new_key() -> dict[str, str]:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return {"privateKeyOpenssh": private, "publicKeyOpenssh": public.decode() + "\n"}


def _new_password(length: int) -> dict[str, str]:
    alphabet = string.ascii_letters + string.digits
    return {"result": "".join(secrets.choice(alphabet) for _ in range(length))}


class LabMocks(StandInMocks):
    """The provider answers of a real `up` against the lab: kept values, real keys."""

    def __init__(self, values: dict[str, dict[str, str]], ipv4: str, ipv6: str, cloud: Cloud) -> None:
        super().__init__(cloud)
        self.values = values
        self.ipv4, self.ipv6 = ipv4, ipv6

    def new_resource(self, args: MockResourceArgs) -> tuple[str, dict[str, Any]]:
        resource_id, state = super().new_resource(args)
        if args.typ == SERVER:
            state |= {"ipv4Address": self.ipv4, "ipv6Address": self.ipv6}
        elif args.typ == TLS_KEY:
            state |= self.values.setdefault(args.name, _new_key())
        elif args.typ == PASSWORD_TYPE:
            state |= self.values.setdefault(args.name, _new_password(int(args.inputs["length"])))
        return resource_id, state


class DeployFailed(RuntimeError):
    def __init__(self, message: str, steps: list[Step]) -> None:
        super().__init__(message)
        self.steps = steps


@dataclass
class Stack:
    """One customer stack's state between runs, in memory: resource values, the cloud, commands."""

    ipv4: str
    ipv6: str
    values: dict[str, dict[str, str]] = field(default_factory=dict)
    # What Hetzner reports (nothing before the first `up`): the program's own safety checks read it.
    cloud: Cloud = field(default_factory=Cloud)
    commands: dict[str, CommandState] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)

    def graph(self, settings: StackSettings, policy: BaselinePolicy | None = None) -> Graph:
        return build_graph(settings, policy, mocks=LabMocks(self.values, self.ipv4, self.ipv6, self.cloud))

    def up(
        self,
        settings: StackSettings,
        runner: Runner,
        create_server: Callable[[Registration], None],
        policy: BaselinePolicy | None = None,
    ) -> list[Step]:
        graph = self.graph(settings, policy)
        server = graph.one(SERVER)
        if not self.cloud.servers:
            create_server(server)
            labels = server.inputs["labels"]
            firewall_ids = tuple(int(firewall_id) for firewall_id in server.inputs["firewallIds"])
            self.cloud = Cloud(
                servers=(CloudServer(server.inputs["name"], server.inputs["location"], firewall_ids, labels),),
                firewalls=tuple(
                    CloudFirewall(id=i, name=f"firewall-{i}", rules=(), labels=labels) for i in firewall_ids
                ),
            )
        steps: list[Step] = []
        # Everything but the commands exists once the server does (keys, password, firewall).
        done = {registration.urn for registration in graph.registrations if registration.type != COMMAND}
        for registration in graph.of_type(COMMAND):
            waiting = [urn for urn in registration.dependencies if urn not in done]
            assert not waiting, f"{registration.name} depends on {waiting}, not yet applied"
            command = RemoteCommand.from_inputs(registration.name, registration.inputs)
            try:
                step, state = runner.apply(command, self.commands.get(registration.name))
            except CommandFailed as failure:
                raise DeployFailed(f"{registration.name}: {failure}", steps) from failure
            self.commands[registration.name] = state
            steps.append(step)
            done.add(registration.urn)
        self.outputs = graph.outputs
        return steps
