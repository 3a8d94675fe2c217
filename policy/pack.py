"""The CrossGuard policies: thin wrappers that hand resources to the rules in policy/rules.py.

The pack itself is built in policy/__main__.py only: constructing a PolicyPack starts serving
the Pulumi engine and does not return.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from config.policy import BaselinePolicy
from policy import rules

POLICY = BaselinePolicy()
PACK_NAME = "clawhosters-baseline"


def _resource_policy(
    name: str,
    description: str,
    resource_type: str,
    check: Callable[[Mapping[str, Any]], list[str]],
    level: EnforcementLevel = EnforcementLevel.MANDATORY,
) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        if args.resource_type == resource_type:
            for message in check(args.props):
                report_violation(message, None)

    return ResourceValidationPolicy(name=name, description=description, validate=validate, enforcement_level=level)


def _baseline_before_gateway(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    resources = [
        rules.Resource(
            type=r.resource_type,
            name=r.name,
            urn=r.urn,
            props=r.props,
            dependencies=tuple(dependency.urn for dependency in r.dependencies),
        )
        for r in args.resources
    ]
    for message in rules.baseline_before_gateway(resources):
        report_violation(message, None)


def policies() -> list[ResourceValidationPolicy | StackValidationPolicy]:
    advisory = EnforcementLevel.ADVISORY
    return [
        _resource_policy(
            "firewall-inbound-only-ssh-and-gateway",
            "The cloud firewall opens only the baseline's inbound tcp ports, to both address families.",
            rules.FIREWALL,
            lambda props: rules.firewall_inbound(props, POLICY),
        ),
        _resource_policy(
            "firewall-blocks-smtp-and-irc",
            "The cloud firewall keeps the SMTP and IRC ports closed outbound.",
            rules.FIREWALL,
            lambda props: rules.firewall_outbound(props, POLICY),
        ),
        _resource_policy(
            "server-created-with-firewall",
            "Every server is created with a firewall attached.",
            rules.SERVER,
            rules.server_has_firewall,
        ),
        _resource_policy(
            "server-labels",
            "Every server carries the customer and managed-by labels.",
            rules.SERVER,
            rules.server_labels,
        ),
        _resource_policy(
            "gateway-publishes-only-its-port",
            "Containers publish only the gateway port; metrics are never public.",
            rules.COMMAND,
            lambda props: rules.gateway_publishing(props, POLICY),
        ),
        StackValidationPolicy(
            name="baseline-before-gateway",
            description="Every server gets the host baseline, and the gateway starts only after it.",
            validate=_baseline_before_gateway,
            enforcement_level=EnforcementLevel.MANDATORY,
        ),
        _resource_policy(
            "gateway-image-pinned",
            "The gateway image is pinned by digest.",
            rules.COMMAND,
            rules.gateway_image_pinned,
            advisory,
        ),
        _resource_policy(
            "server-type-and-location",
            "Servers use a server type and location the platform offers.",
            rules.SERVER,
            rules.server_placement,
            advisory,
        ),
    ]
