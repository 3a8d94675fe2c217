"""Builds a CustomerInstance under Pulumi's mocks and records the resource graph the engine sees."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi
from google.protobuf.json_format import MessageToDict
from pulumi.runtime import rpc
from pulumi.runtime.mocks import MockMonitor, MockResourceArgs

from components.instance import CustomerInstance
from config.loader import StackSettings
from config.policy import BaselinePolicy

SERVER = "hcloud:index/server:Server"
FIREWALL = "hcloud:index/firewall:Firewall"
COMMAND = "command:remote:Command"
SECRET_SIG = rpc._special_secret_sig

FAKE_HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyHostKeyHostKeyHostKeyHostKey00"


@dataclass
class Registration:
    type: str
    name: str
    urn: str
    parent: str
    dependencies: list[str]
    ignore_changes: list[str]
    inputs: dict[str, Any]
    # The serialized inputs, where secrets still carry their marker.
    wire_inputs: dict[str, Any]

    def input_is_secret(self, key: str) -> bool:
        value = self.wire_inputs.get(key)
        return isinstance(value, dict) and value.get(rpc._special_sig_key) == SECRET_SIG


class _Mocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.next_id = 1000

    def new_resource(self, args: MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.next_id += 1
        state = dict(args.inputs)
        if args.typ == SERVER:
            state |= {"ipv4Address": "203.0.113.10", "ipv6Address": "2001:db8:10::1"}
        elif args.typ == "tls:index/privateKey:PrivateKey":
            state |= {
                "privateKeyOpenssh": f"-----BEGIN OPENSSH PRIVATE KEY-----\n{args.name}\n",
                "publicKeyOpenssh": FAKE_HOST_KEY + "\n",
            }
        elif args.typ == "random:index/randomPassword:RandomPassword":
            state |= {"result": "s3cretGatewayPassw0rd"}
        elif args.typ == COMMAND:
            state |= {"stdout": "", "stderr": ""}
        return str(self.next_id), state

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        return {}


class _RecordingMonitor(MockMonitor):
    def __init__(self, mocks: _Mocks, graph: Graph) -> None:
        super().__init__(mocks)
        self.graph = graph

    def RegisterResource(self, request: Any) -> Any:
        if request.type != "pulumi:pulumi:Stack":
            self.graph.registrations.append(
                Registration(
                    type=request.type,
                    name=request.name,
                    urn=self.make_urn(request.parent, request.type, request.name),
                    parent=request.parent,
                    dependencies=list(request.dependencies),
                    ignore_changes=list(request.ignoreChanges),
                    inputs=rpc.deserialize_properties(request.object),
                    wire_inputs=MessageToDict(request.object),
                )
            )
        return super().RegisterResource(request)


@dataclass
class Graph:
    registrations: list[Registration] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    secret_outputs: dict[str, bool] = field(default_factory=dict)

    def of_type(self, typ: str) -> list[Registration]:
        return [r for r in self.registrations if r.type == typ]

    def one(self, typ: str) -> Registration:
        found = self.of_type(typ)
        assert len(found) == 1, f"expected one {typ}, found {len(found)}"
        return found[0]

    def named(self, name: str) -> Registration:
        return next(r for r in self.registrations if r.name == name)


OUTPUT_NAMES = (
    "server_id",
    "firewall_id",
    "ipv4_address",
    "ipv6_address",
    "gateway_url",
    "gateway_password",
    "baseline_digest",
)


def build_graph(settings: StackSettings, policy: BaselinePolicy | None = None) -> Graph:
    """Run the component under mocks; return every registration and the resolved outputs."""
    graph = Graph()
    mocks = _Mocks()
    pulumi.runtime.set_mocks(
        mocks,
        project="clawhosters",
        stack=settings.customer.stack_name,
        preview=False,
        monitor=_RecordingMonitor(mocks, graph),
    )

    @pulumi.runtime.test
    def run() -> pulumi.Output[Any]:
        instance = CustomerInstance(settings.customer.stack_name, settings, policy)
        outputs = {name: getattr(instance, name) for name in OUTPUT_NAMES}

        async def collect() -> None:
            for name, output in outputs.items():
                graph.outputs[name] = await output.future()
                graph.secret_outputs[name] = await output.is_secret()

        return pulumi.Output.from_input(collect())

    run()
    return graph
