"""The CrossGuard policies: thin wrappers that hand resources to the rules in policy/rules.py.

`serve()` constructs the PolicyPack, which serves the Pulumi engine over gRPC and does not return;
the CLI reaches it through policy/__main__.py.

Fail closed: the SDK turns a policy that meets an unknown value into an ADVISORY "can't run
policy". These wrappers never let an unknown reach the SDK: the rules see plain values, reject
unknowns themselves, and a mandatory rule that cannot decide reports a mandatory violation.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pulumi.runtime
from pulumi_policy import (
    EnforcementLevel,
    PolicyPack,
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
MANDATORY = EnforcementLevel.MANDATORY
ADVISORY = EnforcementLevel.ADVISORY
UNKNOWN_MESSAGE = (
    "{what} is not known during preview, so this mandatory rule cannot check it; the gate stays closed "
    "until it is a value the program renders before deployment"
)


def plain(value: Any) -> Any:
    """The value behind pulumi_policy's unknown-checking proxies, unknown sentinels left in place."""
    if isinstance(value, Mapping):
        return {key: plain(value["__target"][key]) for key in value} if _proxied(value) else dict(value)
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        target = value["__target"] if _proxied(value) else value
        return [plain(item) for item in target]
    return value


def _proxied(value: Any) -> bool:
    return type(value).__module__ == "pulumi_policy.proxy"


def _run(check: Callable[[], list[str]], report: ReportViolation, urn: str | None = None) -> None:
    try:
        messages = check()
    except rules.UnknownInput as unknown:
        messages = [UNKNOWN_MESSAGE.format(what=unknown.what)]
    for message in messages:
        report(message, urn)


def stack_canon() -> rules.Canon:
    """This stack's canonical rendering, from the stack name and config the CLI passes the pack."""
    return rules.canon_for(os.environ.get("PULUMI_STACK"), pulumi.runtime.get_config_env(), POLICY)


def _resource_policy(
    name: str,
    description: str,
    resource_type: str,
    check: Callable[[Mapping[str, Any]], list[str]],
    level: EnforcementLevel = MANDATORY,
) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        if args.resource_type == resource_type:
            props = plain(args.props)
            _run(lambda: check(props), report_violation)

    return ResourceValidationPolicy(name=name, description=description, validate=validate, enforcement_level=level)


def stack_resources(args: StackValidationArgs) -> list[rules.Resource]:
    return [
        rules.Resource(
            type=r.resource_type,
            name=r.name,
            urn=r.urn,
            props=plain(r.props),
            dependencies=tuple(dependency.urn for dependency in r.dependencies),
            property_dependencies={
                key: tuple(dependency.urn for dependency in value) for key, value in r.property_dependencies.items()
            },
            ignore_changes=tuple(r.opts.ignore_changes or ()),
        )
        for r in args.resources
    ]


def _stack_policy(
    name: str,
    description: str,
    check: Callable[[list[rules.Resource], rules.Canon], list[str]],
    level: EnforcementLevel = MANDATORY,
) -> StackValidationPolicy:
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        resources = stack_resources(args)
        try:
            canon = stack_canon()
        except rules.CanonError as error:
            report_violation(f"the stack's canonical rendering is unavailable: {error}", None)
            return
        _run(lambda: check(resources, canon), report_violation)

    return StackValidationPolicy(name=name, description=description, validate=validate, enforcement_level=level)


def policies() -> list[ResourceValidationPolicy | StackValidationPolicy]:
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
        _stack_policy(
            "only-instance-resources",
            "A customer stack holds only the resources the CustomerInstance component creates.",
            lambda resources, _canon: rules.resource_types(resources),
        ),
        _stack_policy(
            "server-matches-stack",
            "The server carries the stack's own customer label and the settings the stack renders.",
            rules.servers_match_stack,
        ),
        _stack_policy(
            "server-created-with-firewall",
            "Every server is created attached to the stack's own passing firewall or the allow-listed shared one.",
            rules.server_firewalls,
        ),
        _stack_policy(
            "commands-match-rendering",
            "Every remote command runs exactly the script the program renders for this stack.",
            rules.commands_match_rendering,
        ),
        _stack_policy(
            "baseline-before-gateway",
            "Every server gets the host baseline, and the gateway starts only after it.",
            rules.baseline_before_gateway,
        ),
        _stack_policy(
            "hostname-records-match-stack",
            "The customer's name in the platform's zone has one A and one AAAA record, the server's addresses.",
            rules.hostname_records,
        ),
        _stack_policy(
            "gateway-image-pinned",
            "The gateway image is pinned by digest.",
            lambda _resources, canon: rules.gateway_image_pinned(canon),
            ADVISORY,
        ),
        _resource_policy(
            "server-type-and-location",
            "Servers use a server type and location the platform offers.",
            rules.SERVER,
            rules.server_placement,
            ADVISORY,
        ),
    ]


def serve() -> None:
    """Serve the pack to the Pulumi engine; prints the gRPC port and never returns."""
    PolicyPack(name=PACK_NAME, enforcement_level=MANDATORY, policies=policies())
