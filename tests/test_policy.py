"""The policy pack, loaded as the Pulumi CLI loads it and asked over gRPC what the engine asks.

Each pack is a real `python -u -m pulumi.policy ENGINE .` process in policy/, with the stack's name
and config in its environment as the CLI passes them; the test reads the port it prints and calls
`Analyze` for every resource and `AnalyzeStack` once, with the graph the program registers
(components/offline.py) or a tampered copy of it.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2, json_format, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc
from pulumi_policy.proxy import UNKNOWN_ARRAY_VALUE, UNKNOWN_NUMBER_VALUE, UNKNOWN_STRING_VALUE

from components.gateway import gateway_run_args
from components.host_baseline import BUNDLE_DIR
from components.offline import Cloud, baseline_firewall, build_graph
from config import BaselinePolicy, settings_from_mapping
from policy.pack import PACK_NAME, UNKNOWN_MESSAGE
from policy.rules import COMMAND, FIREWALL, RRSET, SERVER

REPO = Path(__file__).resolve().parent.parent
IMAGE = "ghcr.io/openclaw/gateway:1.4.2@sha256:" + "ef" * 32
POLICY = BaselinePolicy()
GATEWAY, METRICS = POLICY.inbound.gateway_port, POLICY.inbound.metrics_port
DOCKER_API = 2375
OPEN = ", ".join(f"tcp/{port}" for port in sorted(POLICY.inbound.open_tcp_ports))
BLOCKED = ", ".join(f"tcp/{port}" for port in sorted(POLICY.egress.blocked_tcp_ports))
ACME = {"clawhosters:customer_id": "acme", "clawhosters:gateway_image": IMAGE}
SHARED_ID = 777
SHARED = {**ACME, "platform:firewall_mode": "shared", "platform:shared_firewall_id": str(SHARED_ID)}


@dataclass
class Wire:
    """One resource as the engine sends it to an analyzer."""

    type: str
    name: str
    urn: str
    props: dict[str, Any]
    dependencies: list[str] = field(default_factory=list)
    property_dependencies: dict[str, list[str]] = field(default_factory=dict)
    ignore_changes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Finding:
    policy: str
    level: str
    message: str


class Pack:
    """A running policy pack and a client for its analyzer service."""

    def __init__(self, stack: str | None, config: dict[str, str] | None) -> None:
        env = {key: value for key, value in os.environ.items() if not key.startswith("PULUMI_")}
        env |= {"PULUMI_PROJECT": "clawhosters", "PULUMI_DRY_RUN": "true"}
        if stack:
            env["PULUMI_STACK"] = stack
        if config is not None:
            env["PULUMI_CONFIG"] = json.dumps(config)
        # The command line the CLI's pulumi-analyzer-policy-python runs, in the pack's directory.
        self.process = subprocess.Popen(
            [sys.executable, "-u", "-m", "pulumi.policy", "127.0.0.1:1", "."],
            cwd=REPO / "policy",
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.strip().isdigit():
            self.process.kill()
            raise AssertionError(f"the pack did not start: {line!r} {self.process.stderr.read()!r}")  # type: ignore[union-attr]
        self.channel = grpc.insecure_channel(f"127.0.0.1:{int(line)}")
        self.stub = analyzer_pb2_grpc.AnalyzerStub(self.channel)

    def analyze(self, resources: list[Wire]) -> list[Finding]:
        responses = [
            self.stub.Analyze(
                analyzer_pb2.AnalyzeRequest(type=r.type, properties=_struct(r.props), urn=r.urn, name=r.name)
            )
            for r in resources
        ]
        stack_request = analyzer_pb2.AnalyzeStackRequest(
            resources=[
                analyzer_pb2.AnalyzerResource(
                    type=r.type,
                    properties=_struct(r.props),
                    urn=r.urn,
                    name=r.name,
                    dependencies=r.dependencies,
                    propertyDependencies={
                        key: analyzer_pb2.AnalyzerPropertyDependencies(urns=urns)
                        for key, urns in r.property_dependencies.items()
                    },
                    options=analyzer_pb2.AnalyzerResourceOptions(ignoreChanges=r.ignore_changes),
                )
                for r in resources
            ]
        )
        responses.append(self.stub.AnalyzeStack(stack_request))
        level = {analyzer_pb2.ADVISORY: "advisory", analyzer_pb2.MANDATORY: "mandatory"}
        return [Finding(d.policyName, level[d.enforcementLevel], d.message) for r in responses for d in r.diagnostics]

    def close(self) -> None:
        self.channel.close()
        self.process.kill()
        self.process.wait()


def _struct(props: dict[str, Any]) -> struct_pb2.Struct:
    return json_format.ParseDict(props, struct_pb2.Struct())


@pytest.fixture(scope="module")
def packs() -> Iterator[Callable[[str | None, dict[str, str] | None], Pack]]:
    started: dict[str, Pack] = {}

    def pack(stack: str | None, config: dict[str, str] | None) -> Pack:
        key = json.dumps([stack, config])
        if key not in started:
            started[key] = Pack(stack, config)
        return started[key]

    yield pack
    for running in started.values():
        running.close()


def graph_of(config: dict[str, str], cloud: Cloud | None = None) -> list[Wire]:
    """The resources a `pulumi up` of this stack config sends, with `cloud` as what Hetzner holds."""
    graph = build_graph(settings_from_mapping(config), cloud=cloud)
    return [
        Wire(
            type=r.type,
            name=r.name,
            urn=r.urn,
            props=copy.deepcopy(r.wire_inputs),
            dependencies=list(r.dependencies),
            property_dependencies=copy.deepcopy(r.property_dependencies),
            ignore_changes=list(r.ignore_changes),
        )
        for r in graph.registrations
    ]


@pytest.fixture
def acme(packs: Callable[..., Pack]) -> Pack:
    return packs("customer-acme", ACME)


@pytest.fixture
def resources() -> list[Wire]:
    return graph_of(ACME)


def mandatory(findings: list[Finding]) -> list[Finding]:
    assert not [f for f in findings if "can't run policy" in f.message], findings
    return [f for f in findings if f.level == "mandatory"]


def one(resources: list[Wire], typ: str, suffix: str = "") -> Wire:
    return next(r for r in resources if r.type == typ and r.name.endswith(suffix))


def test_the_pack_serves_its_policies_as_the_cli_starts_it(acme: Pack) -> None:
    info = acme.stub.GetAnalyzerInfo(empty_pb2.Empty())
    assert info.name == PACK_NAME
    levels = {policy.name: policy.enforcementLevel for policy in info.policies}
    assert levels["commands-match-rendering"] == analyzer_pb2.MANDATORY
    assert levels["gateway-image-pinned"] == analyzer_pb2.ADVISORY


def test_the_real_instance_passes_every_policy(acme: Pack, resources: list[Wire]) -> None:
    assert acme.analyze(resources) == []


def test_a_shared_firewall_passes_only_with_the_allow_listed_id(packs: Callable[..., Pack]) -> None:
    shared_firewall = Cloud(firewalls=(baseline_firewall(SHARED_ID, POLICY),))
    pack, resources = packs("customer-acme", SHARED), graph_of(SHARED, shared_firewall)
    assert pack.analyze(resources) == []
    one(resources, SERVER).props["firewallIds"] = [SHARED_ID + 1]
    assert any(
        f"it must be attached to the platform's firewall {SHARED_ID}" in f.message for f in pack.analyze(resources)
    )


Tamper = Callable[[list[Wire]], None]


def _gateway_run(resources: list[Wire], edit: Callable[[list[str]], str]) -> None:
    """Rewrite the gateway's `docker run ...` as rendered by components/gateway.py."""
    gateway = one(resources, COMMAND, "-gateway")
    rendered = " ".join(gateway_run_args(POLICY, IMAGE))
    assert rendered in gateway.props["create"]
    gateway.props["create"] = gateway.props["create"].replace(rendered, edit(gateway_run_args(POLICY, IMAGE)))


def _with(*extra: str) -> Tamper:
    return lambda resources: _gateway_run(resources, lambda args: " ".join([args[0], *extra, *args[1:]]))


def continued_line(resources: list[Wire]) -> None:
    _gateway_run(resources, lambda args: " ".join(args[:-1]) + f" \\\n  -p {METRICS}:{METRICS} {args[-1]}")


def container_run(resources: list[Wire]) -> None:
    _gateway_run(resources, lambda args: " ".join(["container", *args]))


def foreign_firewall(resources: list[Wire]) -> None:
    server = one(resources, SERVER)
    server.props["firewallIds"] = [4242]
    server.property_dependencies["firewallIds"] = []


def foreign_firewall_beside_own(resources: list[Wire]) -> None:
    server = one(resources, SERVER)
    server.props["firewallIds"] = [*server.props["firewallIds"], 4242]


def wrong_customer_label(resources: list[Wire]) -> None:
    one(resources, SERVER).props["labels"]["customer"] = "beta"


def backups_off(resources: list[Wire]) -> None:
    one(resources, SERVER).props["backups"] = False


def baseline_only_mentions_the_bundle(resources: list[Wire]) -> None:
    one(resources, COMMAND, "-baseline").props["create"] = f"cd '{BUNDLE_DIR}' && echo sh apply.sh\n"


def gateway_not_waiting(resources: list[Wire]) -> None:
    one(resources, COMMAND, "-gateway").dependencies = [one(resources, SERVER).urn]


def extra_inbound_port(resources: list[Wire]) -> None:
    rule = {"direction": "in", "protocol": "tcp", "port": str(METRICS), "sourceIps": list(POLICY.inbound.source_cidrs)}
    one(resources, FIREWALL).props["rules"].append(rule)


def no_outbound_rules(resources: list[Wire]) -> None:
    firewall = one(resources, FIREWALL)
    firewall.props["rules"] = [r for r in firewall.props["rules"] if r["direction"] == "in"]


def smtp_allowed(resources: list[Wire]) -> None:
    everything = {"direction": "out", "protocol": "tcp", "port": "1-65535", "destinationIps": ["0.0.0.0/0"]}
    one(resources, FIREWALL).props["rules"].append(everything)


def extra_docker_resource(resources: list[Wire]) -> None:
    server = one(resources, SERVER)
    urn = server.urn.replace(SERVER, "docker:index/container:Container").replace("-server", "-metrics")
    resources.append(Wire("docker:index/container:Container", "customer-acme-metrics", urn, {"image": "x"}))


def baseline_on_another_host(resources: list[Wire]) -> None:
    one(resources, COMMAND, "-baseline").property_dependencies["connection"] = []


def gateway_on_a_decoy_address(resources: list[Wire]) -> None:
    one(resources, SERVER).props["ipv4Address"] = "203.0.113.10"
    one(resources, COMMAND, "-gateway").props["connection"]["value"]["host"] = "198.51.100.7"


def update_hook(resources: list[Wire]) -> None:
    one(resources, COMMAND, "-gateway").props["update"] = "docker run --network host evil"


RENDERING = "runs a script the program does not render for customer-acme"


@pytest.mark.parametrize(
    "tamper,policy,message",
    [
        (_with("--network", "host"), "commands-match-rendering", "run --network host --rm"),
        (_with("-P"), "commands-match-rendering", RENDERING),
        (_with("--publish-all"), "commands-match-rendering", RENDERING),
        (_with(f"-p{METRICS}:{METRICS}"), "commands-match-rendering", f"-p{METRICS}:{METRICS}"),
        (_with(f"-p={DOCKER_API}:{DOCKER_API}"), "commands-match-rendering", RENDERING),
        (continued_line, "commands-match-rendering", "nearest is the gateway script"),
        (container_run, "commands-match-rendering", RENDERING),
        (update_hook, "commands-match-rendering", "has an update script"),
        (baseline_on_another_host, "commands-match-rendering", "baseline does not connect to the stack's server"),
        (gateway_on_a_decoy_address, "commands-match-rendering", "connects to 198.51.100.7, not to server"),
        (foreign_firewall, "server-created-with-firewall", "is attached to [4242]"),
        (
            foreign_firewall_beside_own,
            "server-created-with-firewall",
            "4242] where only the stack's own firewall belongs",
        ),
        (wrong_customer_label, "server-matches-stack", "label customer='beta'; stack customer-acme must carry"),
        (backups_off, "server-matches-stack", "has backups False; the stack's settings render True"),
        (baseline_only_mentions_the_bundle, "baseline-before-gateway", "gets no baseline command"),
        (baseline_only_mentions_the_bundle, "commands-match-rendering", f"customer-acme-baseline {RENDERING}"),
        (gateway_not_waiting, "baseline-before-gateway", "does not wait for the baseline"),
        (extra_inbound_port, "firewall-inbound-only-ssh-and-gateway", f"opens tcp/{METRICS}; only {OPEN} may be open"),
        (extra_inbound_port, "server-created-with-firewall", "which fails the baseline"),
        (no_outbound_rules, "firewall-blocks-smtp-and-irc", "no outbound rules, so all egress is allowed"),
        (smtp_allowed, "firewall-blocks-smtp-and-irc", f"outbound tcp {BLOCKED} is allowed"),
        (extra_docker_resource, "only-instance-resources", "which the program does not create"),
    ],
)
def test_a_tampered_graph_is_caught(
    acme: Pack, resources: list[Wire], tamper: Tamper, policy: str, message: str
) -> None:
    tamper(resources)
    found = mandatory(acme.analyze(resources))
    assert any(f.policy == policy and message in f.message for f in found), found


NAMED = {**ACME, "platform:dns_zone": "gateways.example.com"}
HOSTNAME = "hostname-records-match-stack"


def _record(resources: list[Wire], kind: str) -> Wire:
    return next(r for r in resources if r.type == RRSET and r.props["type"] == kind)


def another_customers_name(resources: list[Wire]) -> None:
    _record(resources, "A").props["name"] = "beta"


def a_foreign_address(resources: list[Wire]) -> None:
    record = _record(resources, "AAAA")
    record.props["records"] = [{"value": "2001:db8:66::1"}]
    record.property_dependencies["records"] = []


def an_extra_address(resources: list[Wire]) -> None:
    _record(resources, "A").props["records"].append({"value": "198.51.100.66"})


def a_second_a_record(resources: list[Wire]) -> None:
    copied = copy.deepcopy(_record(resources, "A"))
    copied.name, copied.urn = "customer-acme-extra", copied.urn.replace("-a-record", "-extra")
    resources.append(copied)


@pytest.mark.parametrize(
    "tamper,message",
    [
        (another_customers_name, "writes beta.gateways.example.com; stack customer-acme's name is acme."),
        (a_foreign_address, "customer-acme-aaaa-record must hold exactly one record, the stack's server's address"),
        (an_extra_address, "customer-acme-a-record must hold exactly one record"),
        (a_second_a_record, "has DNS records of types ['A', 'A', 'AAAA']"),
    ],
)
def test_the_customer_s_name_holds_only_its_server_s_addresses(
    packs: Callable[..., Pack], tamper: Tamper, message: str
) -> None:
    pack, resources = packs("customer-acme", NAMED), graph_of(NAMED)
    assert pack.analyze(resources) == []
    tamper(resources)
    found = mandatory(pack.analyze(resources))
    assert any(f.policy == HOSTNAME and message in f.message for f in found), found
    # The same records in a stack whose settings name no zone are not the program's.
    unzoned = mandatory(packs("customer-acme", ACME).analyze(graph_of(NAMED)))
    assert any(f.policy == HOSTNAME and "name no platform:dns_zone" in f.message for f in unzoned), unzoned


def test_a_fresh_stack_s_records_pass_while_the_server_s_addresses_are_unknown(packs: Callable[..., Pack]) -> None:
    pack, resources = packs("customer-acme", NAMED), graph_of(NAMED)
    for kind in ("A", "AAAA"):
        _record(resources, kind).props["records"] = UNKNOWN_ARRAY_VALUE
    assert pack.analyze(resources) == []
    a_foreign_address(resources)
    assert any(f.policy == HOSTNAME for f in mandatory(pack.analyze(resources)))


def test_a_fresh_stack_passes_although_its_firewall_id_is_not_known_yet(acme: Pack, resources: list[Wire]) -> None:
    server = one(resources, SERVER)
    for unknown in (UNKNOWN_ARRAY_VALUE, [UNKNOWN_NUMBER_VALUE]):
        server.props["firewallIds"] = unknown
        assert acme.analyze(resources) == []


def test_in_both_modes_a_firewall_set_unknown_as_a_whole_passes_when_derived_from_the_own_firewall(
    packs: Callable[..., Pack],
) -> None:
    """What the hcloud provider previews for a new stack in `both` mode, and for the step from
    `shared` to `both`: the set with the own firewall's unknown id in it, unknown as a whole."""
    both = {**SHARED, "platform:firewall_mode": "both"}
    shared_firewall = Cloud(firewalls=(baseline_firewall(SHARED_ID, POLICY),))
    pack, resources = packs("customer-acme", both), graph_of(both, shared_firewall)
    one(resources, SERVER).props["firewallIds"] = UNKNOWN_ARRAY_VALUE
    assert pack.analyze(resources) == []
    one(resources, FIREWALL).props["rules"][0]["port"] = str(METRICS)
    assert any("which fails the baseline" in f.message for f in mandatory(pack.analyze(resources)))


def _edited_packages_script(resources: list[Wire]) -> Wire:
    packages = one(resources, COMMAND, "-packages")
    packages.props["create"] += ": the script a later commit renders differently\n"
    return packages


def test_an_existing_servers_once_per_server_step_may_keep_the_script_it_ran(acme: Pack, resources: list[Wire]) -> None:
    """After an edit of the packages script, every existing stack still holds (and never reruns)
    the old one: a rollout must not be blocked by it."""
    _edited_packages_script(resources)
    assert acme.analyze(resources) == []


@pytest.mark.parametrize(
    "edit",
    [
        lambda packages: packages.ignore_changes.clear(),  # an edit would run on every server
        lambda packages: packages.props.update(triggers=[UNKNOWN_STRING_VALUE]),  # a new server runs it
        lambda packages: packages.property_dependencies.update(triggers=[]),  # not the server's step
    ],
    ids=["create-changes-not-ignored", "new-server", "trigger-not-from-the-server"],
)
def test_a_once_per_server_step_that_will_run_must_match_the_rendering(
    acme: Pack, resources: list[Wire], edit: Callable[[Wire], object]
) -> None:
    edit(_edited_packages_script(resources))
    found = mandatory(acme.analyze(resources))
    assert any(f.policy == "commands-match-rendering" and "customer-acme-packages" in f.message for f in found), found


@pytest.mark.parametrize(
    "edit,policy,what",
    [
        (lambda rs: one(rs, COMMAND, "-gateway").props.update(create=UNKNOWN_STRING_VALUE),
         "commands-match-rendering", "the create script of customer-acme-gateway"),
        (lambda rs: one(rs, SERVER).props["labels"].update(customer=UNKNOWN_STRING_VALUE),
         "server-matches-stack", "the server's labels.customer"),
        (lambda rs: one(rs, FIREWALL).props.update(rules=UNKNOWN_ARRAY_VALUE),
         "firewall-inbound-only-ssh-and-gateway", "the firewall's rules"),
        (lambda rs: one(rs, SERVER).property_dependencies.update(firewallIds=[]) or one(rs, SERVER).props.update(
            firewallIds=UNKNOWN_ARRAY_VALUE), "server-created-with-firewall", "the server's firewallIds"),
    ],
)  # fmt: skip
def test_an_unknown_value_a_mandatory_rule_needs_is_a_mandatory_violation(
    acme: Pack, resources: list[Wire], edit: Tamper, policy: str, what: str
) -> None:
    edit(resources)
    found = mandatory(acme.analyze(resources))
    assert any(f.policy == policy and UNKNOWN_MESSAGE.format(what=what) in f.message for f in found), found


def test_without_the_stack_settings_nothing_passes(packs: Callable[..., Pack], resources: list[Wire]) -> None:
    for stack, config, reason in [
        ("customer-acme", None, "clawhosters:customer_id: required setting is missing"),
        ("customer-beta", ACME, "stack customer-beta is configured for customer 'acme'"),
        (None, ACME, "PULUMI_STACK is unset"),
    ]:
        found = mandatory(packs(stack, config).analyze(resources))
        assert {f.policy for f in found} >= {"commands-match-rendering", "server-created-with-firewall"}
        assert all(reason in f.message for f in found if f.policy == "commands-match-rendering"), found


def test_advisories_flag_unpinned_images_and_unknown_server_types(packs: Callable[..., Pack]) -> None:
    config = {
        **ACME,
        "clawhosters:gateway_image": "ghcr.io/openclaw/gateway:latest",
        "clawhosters:server_type": "ccx63",
        # A platform that offers more than the usual types: the advisory still asks about them.
        "platform:server_types": json.dumps(["cx23", "ccx63"]),
    }
    found = packs("customer-acme", config).analyze(graph_of(config))
    assert {f.level for f in found} == {"advisory"}, found
    assert any("ghcr.io/openclaw/gateway:latest is not pinned by digest" in f.message for f in found)
    assert any("server type ccx63 is not one the platform sells" in f.message for f in found)
