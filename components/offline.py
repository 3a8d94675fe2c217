"""Run the program offline under Pulumi's mocks and record the resource graph the engine sees.

Used by the tests, and by `python -m components.offline Pulumi.<stack>.yaml` to show what a stack
would create without a cloud account or the Pulumi CLI. Ids and addresses are stand-ins.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import runpy
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pulumi
import yaml
from google.protobuf.json_format import MessageToDict
from pulumi.runtime import rpc
from pulumi.runtime.mocks import MockMonitor, MockResourceArgs
from pydantic import SecretStr

from components.cloud_firewall import firewall_rules
from components.instance import CustomerInstance
from config.customer import CustomerConfig
from config.hetzner import HETZNER, ServerType
from config.loader import ConfigError, StackSettings
from config.policy import BaselinePolicy

PROGRAM = Path(__file__).resolve().parent.parent / "__main__.py"
SERVER = "hcloud:index/server:Server"
FIREWALL = "hcloud:index/firewall:Firewall"
SNAPSHOT = "hcloud:index/snapshot:Snapshot"
RRSET = "hcloud:index/zoneRrset:ZoneRrset"
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
    protect: bool
    retain_on_delete: bool
    inputs: dict[str, Any]
    # The serialized inputs, where secrets still carry their marker.
    wire_inputs: dict[str, Any]
    # Which resources each input property was computed from, as the engine hands them to policies.
    property_dependencies: dict[str, list[str]] = field(default_factory=dict)
    # The explicit provider's reference (`urn::id`); empty for the package's default provider.
    provider: str = ""

    def input_is_secret(self, key: str) -> bool:
        return _is_secret(self.wire_inputs.get(key))

    def public_inputs(self) -> dict[str, Any]:
        """The serialized inputs with every secret value blanked out, as a diff would show them."""
        return _redact(self.wire_inputs)


def _is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(rpc._special_sig_key) == SECRET_SIG


def _redact(value: Any) -> Any:
    if _is_secret(value):
        return "[secret]"
    if isinstance(value, dict):
        return {key: _redact(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_redact(item) for item in value]
    return value


@dataclass(frozen=True)
class CloudServer:
    """A server that already exists at Hetzner, as the provider's data sources report it."""

    name: str
    location: str
    firewall_ids: tuple[int, ...]
    labels: Mapping[str, str]
    server_type: str = "cx23"
    disk_gb: int = 40
    status: str = "running"


@dataclass(frozen=True)
class CloudFirewall:
    id: int
    name: str
    # Hetzner's rule fields: direction, protocol, port, source_ips / destination_ips.
    rules: tuple[Mapping[str, Any], ...]
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Cloud:
    """What the Hetzner project holds before the program runs; empty: a first `pulumi up`."""

    servers: tuple[CloudServer, ...] = ()
    firewalls: tuple[CloudFirewall, ...] = ()
    # Hetzner's catalogue (config/hetzner.yaml), and the (type, location) pairs it has run out of.
    server_types: tuple[ServerType, ...] = HETZNER.server_types
    sold_out: frozenset[tuple[str, str]] = frozenset()


def baseline_firewall(firewall_id: int, policy: BaselinePolicy, name: str = "platform-baseline") -> CloudFirewall:
    """A firewall whose rules are exactly the policy's, as a platform's shared firewall should be."""
    rules = tuple(
        {
            key: value
            for key, value in {
                "direction": rule.direction,
                "protocol": rule.protocol,
                "port": rule.port,
                "source_ips": rule.source_ips,
                "destination_ips": rule.destination_ips,
            }.items()
            if value is not None
        }
        for rule in firewall_rules(policy)
    )
    return CloudFirewall(id=firewall_id, name=name, rules=rules)


def _selected(labels: Mapping[str, str], selector: str | None) -> bool:
    wanted = dict(term.split("=", 1) for term in (selector or "").split(",") if term)
    return all(labels.get(key) == value for key, value in wanted.items())


def _rule_result(rule: Mapping[str, Any]) -> dict[str, Any]:
    names = {"source_ips": "sourceIps", "destination_ips": "destinationIps"}
    return {names.get(key, key): value for key, value in rule.items()}


class StandInMocks(pulumi.runtime.Mocks):
    """Stand-in provider answers: the state a resource would have after `pulumi up`, and the data
    sources' view of `cloud`."""

    def __init__(self, cloud: Cloud | None = None) -> None:
        self.cloud = cloud or Cloud()

    def new_resource(self, args: MockResourceArgs) -> tuple[str, dict[str, Any]]:
        # Numeric like Hetzner's ids, and stable per name so graphs can be compared.
        resource_id = str(int(hashlib.sha256(args.name.encode()).hexdigest()[:8], 16))
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
        return resource_id, state

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        data_sources = {
            "hcloud:index/getServers:getServers": self._servers,
            "hcloud:index/getFirewalls:getFirewalls": self._firewalls,
            "hcloud:index/getFirewall:getFirewall": self._firewall,
            "hcloud:index/getServerTypes:getServerTypes": self._server_types,
        }
        if args.token not in data_sources:
            raise NotImplementedError(f"no stand-in for the data source {args.token}")
        return data_sources[args.token](args.args)

    def _servers(self, query: Mapping[str, Any]) -> dict[str, Any]:
        servers = [s for s in self.cloud.servers if _selected(s.labels, query.get("withSelector"))]
        return {"id": "servers", "servers": [self._server_result(server) for server in servers]}

    def _firewalls(self, query: Mapping[str, Any]) -> dict[str, Any]:
        firewalls = [f for f in self.cloud.firewalls if _selected(f.labels, query.get("withSelector"))]
        return {"id": "firewalls", "firewalls": [self._firewall_result(f) for f in firewalls]}

    def _firewall(self, query: Mapping[str, Any]) -> dict[str, Any]:
        for firewall in self.cloud.firewalls:
            if firewall.id == int(query["id"]):
                return self._firewall_result(firewall)
        # What the provider answers for an unknown id.
        raise ValueError(f"firewall not found: {int(query['id'])}")

    def _server_types(self, _query: Mapping[str, Any]) -> dict[str, Any]:
        now = datetime.now(UTC)
        # As Hetzner lists them: a type sold nowhere any more is not listed at all.
        listed = [server_type for server_type in self.cloud.server_types if server_type.orderable_anywhere(now)]
        return {
            "id": "server_types",
            "serverTypes": [
                {
                    "name": server_type.name,
                    "architecture": server_type.architecture,
                    "disk": server_type.disk,
                    "locations": [
                        {
                            "name": location,
                            "available": server_type.orderable_in(location, now)
                            and (server_type.name, location) not in self.cloud.sold_out,
                        }
                        for location in server_type.locations
                    ],
                }
                for server_type in listed
            ],
        }

    @staticmethod
    def _server_result(server: CloudServer) -> dict[str, Any]:
        return {
            "id": int(hashlib.sha256(server.name.encode()).hexdigest()[:8], 16),
            "name": server.name,
            "location": server.location,
            "firewallIds": list(server.firewall_ids),
            "labels": dict(server.labels),
            "serverType": server.server_type,
            "primaryDiskSize": server.disk_gb,
            "status": server.status,
        }

    @staticmethod
    def _firewall_result(firewall: CloudFirewall) -> dict[str, Any]:
        return {
            "id": firewall.id,
            "name": firewall.name,
            "labels": dict(firewall.labels),
            "rules": [_rule_result(rule) for rule in firewall.rules],
        }


class _RecordingMonitor(MockMonitor):
    def __init__(self, mocks: StandInMocks, graph: Graph) -> None:
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
                    protect=request.protect,
                    retain_on_delete=request.retainOnDelete,
                    inputs=_reveal(rpc.deserialize_properties(request.object)),
                    wire_inputs=MessageToDict(request.object),
                    property_dependencies={
                        key: list(value.urns) for key, value in request.propertyDependencies.items()
                    },
                    provider=request.provider,
                )
            )
        return super().RegisterResource(request)


def _reveal(value: Any) -> Any:
    """The plain values behind secret markers, so tests can compare inputs."""
    if isinstance(value, dict):
        if value.get(rpc._special_sig_key) == SECRET_SIG:
            return _reveal(value["value"])
        return {key: _reveal(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_reveal(item) for item in value]
    return value


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
    "hostname",
)


def _mock(graph: Graph, stack: str, mocks: StandInMocks, preview: bool = False) -> None:
    # A fresh root stack per run: set_mocks keeps an existing one, and with it the last run's exports.
    pulumi.runtime.settings.ROOT.set(None)
    pulumi.runtime.set_mocks(
        mocks, project="clawhosters", stack=stack, preview=preview, monitor=_RecordingMonitor(mocks, graph)
    )


def _resolve_into(graph: Graph, outputs: dict[str, Any]) -> pulumi.Output[None]:
    async def collect() -> None:
        for name, value in outputs.items():
            output = pulumi.Output.from_input(value)
            graph.outputs[name] = await output.future()
            graph.secret_outputs[name] = await output.is_secret()

    return pulumi.Output.from_input(collect())


def build_graph(
    config: StackSettings | CustomerConfig,
    policy: BaselinePolicy | None = None,
    cloud: Cloud | None = None,
    mocks: StandInMocks | None = None,
    dns_token: SecretStr | None = None,
) -> Graph:
    """Run the component under mocks, with `cloud` as what already exists at Hetzner (or other
    provider answers, `mocks`); return every registration and the resolved outputs."""
    graph = Graph()
    stack = (config.customer if isinstance(config, StackSettings) else config).stack_name
    _mock(graph, stack, mocks or StandInMocks(cloud))

    @pulumi.runtime.test
    def run() -> pulumi.Output[None]:
        instance = CustomerInstance(stack, config, policy, dns_token=dns_token)
        return _resolve_into(graph, {name: getattr(instance, name) for name in OUTPUT_NAMES})

    run()
    return graph


def run_program(
    config: dict[str, str], graph: Graph, stack: str | None = None, cloud: Cloud | None = None, preview: bool = False
) -> None:
    """Run the stack's `__main__.py` under mocks as stack `stack` (default: the customer's own,
    `customer-<customer_id>`) with this stack config, as an `up` or a `preview`; its exports land in
    `graph.outputs`. A config error is raised before any resource is registered."""
    _mock(graph, stack or f"customer-{config.get('clawhosters:customer_id', '')}", StandInMocks(cloud), preview)
    pulumi.runtime.set_all_config(config)
    try:

        @pulumi.runtime.test
        def run() -> pulumi.Output[None]:
            runpy.run_path(str(PROGRAM))
            root = pulumi.runtime.get_root_resource()
            assert root is not None
            return _resolve_into(graph, root.outputs)  # type: ignore[attr-defined]

        run()
    finally:
        pulumi.runtime.set_all_config({})


def stack_file_config(path: Path) -> dict[str, str]:
    """A `Pulumi.<stack>.yaml` file's config as the text values the runtime hands the program."""
    document = yaml.safe_load(path.read_text()) or {}
    config: dict[str, str] = {}
    for key, value in (document.get("config") or {}).items():
        if isinstance(value, bool):
            config[key] = "true" if value else "false"
        elif isinstance(value, list | dict):
            config[key] = json.dumps(value)
        else:
            config[key] = str(value)
    return config


def _rule_text(rule: dict[str, Any]) -> str:
    peers = rule.get("sourceIps") or rule.get("destinationIps") or []
    direction = "from" if rule["direction"] == "in" else "to"
    return f"{rule['direction']:<4}{rule['protocol']:<5}{rule.get('port', ''):<12}{direction} {', '.join(peers)}"


def describe(graph: Graph) -> str:
    lines = ["Resources (all children of the CustomerInstance component):"]
    lines += [f"  + {r.type:<40} {r.name}" for r in graph.registrations]
    for firewall in graph.of_type(FIREWALL):
        lines.append(f"Cloud firewall {firewall.inputs['name']}:")
        lines += [f"  {_rule_text(rule)}" for rule in firewall.inputs["rules"]]
    server = graph.one(SERVER)
    firewall_ids = [int(firewall_id) for firewall_id in server.inputs["firewallIds"]]
    lines.append(
        f"Server {server.inputs['name']}: {server.inputs['serverType']} in {server.inputs['location']}, "
        f"image {server.inputs['image']}, firewall ids {firewall_ids}, labels {server.inputs['labels']}"
    )
    protection = (
        "protected (Pulumi protect, Hetzner delete and rebuild protection)" if server.protect else "UNPROTECTED"
    )
    lines.append(f"  {protection}; a resize keeps the disk: {server.inputs.get('keepDisk', False)}")
    for snapshot in graph.of_type(SNAPSHOT):
        lines.append(
            f"  decommissioning: snapshot {snapshot.name}, labels {snapshot.inputs['labels']}, kept by destroy"
        )
    for record in graph.of_type(RRSET):
        values = [entry["value"] for entry in record.inputs["records"]]
        lines.append(
            f"DNS: {record.inputs['type']} {record.inputs['name']}.{record.inputs['zone']} -> {', '.join(values)} "
            "(the DNS project's provider)"
        )
    steps = {r.urn: r.name for r in graph.registrations if r.type in (SERVER, COMMAND)}
    lines.append("Remote commands:")
    for command in graph.of_type(COMMAND):
        after = [steps[urn] for urn in command.dependencies if urn in steps]
        lines.append(f"  {command.name:<34} after {', '.join(after)}")
    lines.append("Outputs:")
    for name, value in graph.outputs.items():
        shown = "[secret]" if graph.secret_outputs[name] else value
        lines.append(f"  {name} = {shown}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m components.offline",
        description="Show what a customer stack would create, offline (Pulumi mocks: no cloud, no CLI).",
    )
    parser.add_argument("stack_file", type=Path, help="a Pulumi.<stack>.yaml file")
    args = parser.parse_args(argv)
    graph = Graph()
    # Pulumi.<stack>.yaml: the file's name says which stack it configures.
    stack = args.stack_file.name.removeprefix("Pulumi.").removesuffix(".yaml")
    config = stack_file_config(args.stack_file)
    # Offline there is no account to ask: a shared firewall is assumed to match the baseline.
    shared = config.get("platform:shared_firewall_id", "")
    cloud = Cloud(firewalls=(baseline_firewall(int(shared), BaselinePolicy()),)) if shared.isdigit() else None
    try:
        # As `pulumi preview` would: nothing is written, so no DNS project token is needed.
        run_program(config, graph, stack=stack, cloud=cloud, preview=True)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    print(describe(graph))
    return 0


if __name__ == "__main__":
    sys.exit(main())
