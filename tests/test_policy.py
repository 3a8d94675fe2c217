"""The policy pack: the real CustomerInstance graph passes; tampered graphs fail with the right message."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from pulumi_policy import EnforcementLevel, ResourceValidationArgs, ResourceValidationPolicy, StackValidationPolicy

from components.offline import Graph, build_graph
from config import BaselinePolicy, CustomerConfig, StackSettings
from policy import rules
from policy.pack import policies

IMAGE = "ghcr.io/openclaw/gateway:1.4.2@sha256:" + "ef" * 32
POLICY = BaselinePolicy()
GATEWAY, METRICS = POLICY.inbound.gateway_port, POLICY.inbound.metrics_port
DOCKER_API = 2375
OPEN = ", ".join(f"tcp/{port}" for port in sorted(POLICY.inbound.open_tcp_ports))
BLOCKED = ", ".join(f"tcp/{port}" for port in sorted(POLICY.egress.blocked_tcp_ports))


def _resources(graph: Graph) -> list[rules.Resource]:
    return [
        rules.Resource(type=r.type, name=r.name, urn=r.urn, props=r.inputs, dependencies=tuple(r.dependencies))
        for r in graph.registrations
    ]


@pytest.fixture(scope="module")
def resources() -> list[rules.Resource]:
    settings = StackSettings(customer=CustomerConfig(customer_id="acme", gateway_image=IMAGE))
    return _resources(build_graph(settings))


def _one(resources: list[rules.Resource], typ: str, suffix: str = "") -> rules.Resource:
    return next(r for r in resources if r.type == typ and r.name.endswith(suffix))


def _replace(
    resources: list[rules.Resource], target: rules.Resource, **changes: Any
) -> tuple[list[rules.Resource], rules.Resource]:
    changed = dataclasses.replace(target, **changes)
    return [changed if r is target else r for r in resources], changed


def _violations(resources: list[rules.Resource], level: EnforcementLevel | None = None) -> list[str]:
    """Run every policy of the pack, through its pulumi_policy wrapper, over these resources."""
    found: list[str] = []

    def report(message: str, _urn: str | None = None) -> None:
        found.append(message)

    for policy in policies():
        if level is not None and policy.enforcement_level != level:
            continue
        if isinstance(policy, ResourceValidationPolicy):
            for resource in resources:
                args = ResourceValidationArgs(resource.type, resource.props, resource.urn, resource.name, None, None)
                validate: Any = policy.validate
                for check in validate if isinstance(validate, list) else [validate]:
                    check(args, report)
        else:
            assert isinstance(policy, StackValidationPolicy)
            stack_args = _StackArgs(resources)
            policy.validate(stack_args, report)  # type: ignore[misc]
    return found


class _PolicyResource:
    def __init__(self, resource: rules.Resource, by_urn: dict[str, _PolicyResource]) -> None:
        self.resource_type, self.name, self.urn, self.props = resource.type, resource.name, resource.urn, resource.props
        self._dependencies, self._by_urn = resource.dependencies, by_urn

    @property
    def dependencies(self) -> list[_PolicyResource]:
        return [self._by_urn[urn] for urn in self._dependencies if urn in self._by_urn]


class _StackArgs:
    """The shape of pulumi_policy.StackValidationArgs that the stack policy reads."""

    def __init__(self, resources: list[rules.Resource]) -> None:
        by_urn: dict[str, _PolicyResource] = {}
        self.resources = [_PolicyResource(r, by_urn) for r in resources]
        by_urn.update({r.urn: r for r in self.resources})


def test_the_pack_has_mandatory_and_advisory_policies() -> None:
    levels = {policy.name: policy.enforcement_level for policy in policies()}
    assert levels["gateway-image-pinned"] == EnforcementLevel.ADVISORY
    assert sum(level == EnforcementLevel.MANDATORY for level in levels.values()) == 6


def test_the_real_instance_passes_every_policy(resources: list[rules.Resource]) -> None:
    assert _violations(resources) == []


Tamper = Callable[[list[rules.Resource]], list[rules.Resource]]


def _firewall_rules(resources: list[rules.Resource], rules_now: list[dict[str, Any]]) -> list[rules.Resource]:
    firewall = _one(resources, rules.FIREWALL)
    return _replace(resources, firewall, props={**firewall.props, "rules": rules_now})[0]


def extra_inbound_port(resources: list[rules.Resource]) -> list[rules.Resource]:
    current = list(_one(resources, rules.FIREWALL).props["rules"])
    extra = {"direction": "in", "protocol": "tcp", "port": str(METRICS), "sourceIps": list(POLICY.inbound.source_cidrs)}
    return _firewall_rules(resources, [*current, extra])


def inbound_ipv4_only(resources: list[rules.Resource]) -> list[rules.Resource]:
    current = _one(resources, rules.FIREWALL).props["rules"]
    return _firewall_rules(
        resources, [{**r, "sourceIps": ["0.0.0.0/0"]} if r["direction"] == "in" else r for r in current]
    )


def no_outbound_rules(resources: list[rules.Resource]) -> list[rules.Resource]:
    current = _one(resources, rules.FIREWALL).props["rules"]
    return _firewall_rules(resources, [r for r in current if r["direction"] == "in"])


def smtp_allowed(resources: list[rules.Resource]) -> list[rules.Resource]:
    current = list(_one(resources, rules.FIREWALL).props["rules"])
    everything = {"direction": "out", "protocol": "tcp", "port": "1-65535", "destinationIps": ["0.0.0.0/0"]}
    return _firewall_rules(resources, [*current, everything])


def server_without_firewall(resources: list[rules.Resource]) -> list[rules.Resource]:
    server = _one(resources, rules.SERVER)
    return _replace(resources, server, props={**server.props, "firewallIds": []})[0]


def server_without_label(resources: list[rules.Resource]) -> list[rules.Resource]:
    server = _one(resources, rules.SERVER)
    return _replace(resources, server, props={**server.props, "labels": {"customer": "acme"}})[0]


def _gateway_text(resources: list[rules.Resource], old: str, new: str) -> list[rules.Resource]:
    gateway = _one(resources, rules.COMMAND, "-gateway")
    assert old in gateway.props["create"]
    return _replace(resources, gateway, props={**gateway.props, "create": gateway.props["create"].replace(old, new)})[0]


def metrics_published(resources: list[rules.Resource]) -> list[rules.Resource]:
    return _gateway_text(resources, f"--publish 127.0.0.1:{METRICS}:{METRICS}", f"--publish {METRICS}:{METRICS}")


def docker_api_published(resources: list[rules.Resource]) -> list[rules.Resource]:
    published = f"--publish {GATEWAY}:{GATEWAY}"
    return _gateway_text(resources, published, f"{published} -p {DOCKER_API}:{DOCKER_API}")


def no_baseline_command(resources: list[rules.Resource]) -> list[rules.Resource]:
    baseline = _one(resources, rules.COMMAND, "-baseline")
    return [
        dataclasses.replace(r, dependencies=tuple(urn for urn in r.dependencies if urn != baseline.urn))
        for r in resources
        if r is not baseline
    ]


def gateway_not_waiting(resources: list[rules.Resource]) -> list[rules.Resource]:
    baseline = _one(resources, rules.COMMAND, "-baseline")
    gateway = _one(resources, rules.COMMAND, "-gateway")
    server = _one(resources, rules.SERVER)
    return _replace(resources, gateway, dependencies=(server.urn,))[0] if baseline else resources


@pytest.mark.parametrize(
    "tamper,message",
    [
        (extra_inbound_port, f"opens tcp/{METRICS}; only {OPEN} may be open"),
        (inbound_ipv4_only, "admits ['0.0.0.0/0']"),
        (no_outbound_rules, "no outbound rules, so all egress is allowed"),
        (smtp_allowed, f"outbound tcp {BLOCKED} is allowed"),
        (server_without_firewall, "created without a firewall"),
        (server_without_label, "lacks the labels ['managed-by']"),
        (metrics_published, f"publishes metrics ({METRICS}:{METRICS}) publicly"),
        (docker_api_published, f"publishes {DOCKER_API}:{DOCKER_API}; only {GATEWAY} may be published"),
        (no_baseline_command, "gets no baseline command"),
        (gateway_not_waiting, "does not wait for the baseline"),
    ],
)
def test_a_tampered_graph_fails_with_the_right_message(
    resources: list[rules.Resource], tamper: Tamper, message: str
) -> None:
    violations = _violations(tamper(resources), EnforcementLevel.MANDATORY)
    assert any(message in violation for violation in violations), violations


def test_advisories_flag_unpinned_images_and_unknown_server_types(resources: list[rules.Resource]) -> None:
    unpinned = _gateway_text(resources, f"'{IMAGE}'", "'ghcr.io/openclaw/gateway:latest'")
    server = _one(unpinned, rules.SERVER)
    odd = _replace(unpinned, server, props={**server.props, "serverType": "ccx63"})[0]
    advisories = _violations(odd, EnforcementLevel.ADVISORY)
    assert any("ghcr.io/openclaw/gateway:latest is not pinned by digest" in v for v in advisories)
    assert any("server type ccx63 is not one the platform sells" in v for v in advisories)
    assert _violations(odd, EnforcementLevel.MANDATORY) == []


def test_published_ports_reads_unit_lines_and_plain_commands() -> None:
    text = "ExecStart=/usr/bin/docker run --rm -p 1:1 --publish=2:2 --publish '3:3' image\nother -p 4:4\n"
    assert rules.published_ports(text) == ["1:1", "2:2", "3:3"]
