"""The guardrails as plain functions over resources, so they are tested without the Pulumi CLI.

Every expectation is derived from `BaselinePolicy()`; nothing here re-types a port. Each function
returns the violations it finds, each message saying what is wrong and how to fix it.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from components.gateway import GATEWAY_DIR
from components.host_baseline import BUNDLE_DIR
from config.customer import HETZNER_LOCATIONS
from config.policy import MAX_PORT, BaselinePolicy

SERVER = "hcloud:index/server:Server"
FIREWALL = "hcloud:index/firewall:Firewall"
COMMAND = "command:remote:Command"
REQUIRED_LABELS = ("customer", "managed-by")
# The server types the platform sells; anything else is worth a second look in review.
ALLOWED_SERVER_TYPES = ("cx22", "cx32", "cx42", "cx52", "cpx11", "cpx21", "cpx31", "cax11", "cax21", "cax31")
_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
_IMAGE_ARGUMENT = re.compile(r"sh install\.sh '([^']+)'")


@dataclass(frozen=True)
class Resource:
    """What a policy sees of one resource: its type, identity, inputs and dependencies."""

    type: str
    name: str
    urn: str
    props: Mapping[str, Any]
    dependencies: tuple[str, ...] = field(default=())


def _ports(rule: Mapping[str, Any]) -> set[int]:
    text = str(rule.get("port") or "")
    if text in ("", "any"):
        return set(range(1, MAX_PORT + 1))
    first, _, last = text.partition("-")
    return set(range(int(first), int(last or first) + 1))


def firewall_inbound(props: Mapping[str, Any], policy: BaselinePolicy) -> list[str]:
    inbound = [rule for rule in props.get("rules") or [] if rule.get("direction") == "in"]
    expected = set(policy.inbound.open_tcp_ports)
    violations = []
    opened: set[int] = set()
    for rule in inbound:
        if rule.get("protocol") != "tcp":
            violations.append(
                f"inbound {rule.get('protocol')} is open; the baseline allows inbound tcp only: remove the rule"
            )
            continue
        extra = _ports(rule) - expected
        if extra:
            violations.append(
                f"inbound tcp {rule.get('port')} opens {_describe(extra)}; only {_describe(expected)} may be "
                "open: derive the rules from BaselinePolicy (components/cloud_firewall.py)"
            )
        opened |= _ports(rule) & expected
        sources = set(rule.get("sourceIps") or [])
        if sources != set(policy.inbound.source_cidrs):
            violations.append(
                f"inbound tcp {rule.get('port')} admits {sorted(sources)}; the baseline admits "
                f"{list(policy.inbound.source_cidrs)} (both address families)"
            )
    if missing := expected - opened:
        violations.append(f"inbound {_describe(missing)} is not open; customers could not reach SSH or the gateway")
    return violations


def firewall_outbound(props: Mapping[str, Any], policy: BaselinePolicy) -> list[str]:
    outbound = [rule for rule in props.get("rules") or [] if rule.get("direction") == "out"]
    if not outbound:
        return [
            "the firewall has no outbound rules, so all egress is allowed, SMTP and IRC included: add allow "
            "rules for the complement of the blocked ports (components/cloud_firewall.outbound_rules)"
        ]
    allowed: set[int] = set()
    for rule in outbound:
        if rule.get("protocol") == "tcp":
            allowed |= _ports(rule)
    if leaked := allowed & set(policy.egress.blocked_tcp_ports):
        return [
            f"outbound tcp {_describe(leaked)} is allowed; SMTP/IRC ports must stay blocked: derive the rules "
            "from policy.egress.allowed_tcp_ranges"
        ]
    return []


def server_has_firewall(props: Mapping[str, Any]) -> list[str]:
    if props.get("firewallIds"):
        return []
    return [
        "the server is created without a firewall, leaving it open until one is attached: pass firewall_ids "
        "at creation (dedicated or the platform's shared firewall)"
    ]


def server_labels(props: Mapping[str, Any]) -> list[str]:
    labels = props.get("labels") or {}
    missing = [label for label in REQUIRED_LABELS if not labels.get(label)]
    if not missing:
        return []
    return [f"the server lacks the labels {missing}; fleet tooling finds customers by them: set them on the server"]


def published_ports(command_text: str) -> list[str]:
    """The `--publish`/`-p` values of every `docker run` in a command's text."""
    published = []
    for line in command_text.splitlines():
        if "docker run" not in line and "docker create" not in line:
            continue
        line = line.split("=", 1)[1] if line.startswith("ExecStart=") else line
        try:
            words = shlex.split(line)
        except ValueError:
            words = line.split()
        for index, word in enumerate(words):
            if word in ("--publish", "-p") and index + 1 < len(words):
                published.append(words[index + 1])
            elif word.startswith("--publish="):
                published.append(word.removeprefix("--publish="))
    return published


def gateway_publishing(props: Mapping[str, Any], policy: BaselinePolicy) -> list[str]:
    gateway, metrics = policy.inbound.gateway_port, policy.inbound.metrics_port
    allowed = {f"{gateway}:{gateway}", f"127.0.0.1:{metrics}:{metrics}"}
    violations = []
    for spec in published_ports(str(props.get("create") or "")):
        if spec in allowed:
            continue
        if spec.split("/")[0].endswith(f":{metrics}") and not spec.startswith("127.0.0.1:"):
            violations.append(
                f"the gateway publishes metrics ({spec}) publicly; bind it to 127.0.0.1 or do not publish it"
            )
        else:
            violations.append(f"the gateway publishes {spec}; only {gateway} may be published")
    return violations


def _is_baseline(resource: Resource) -> bool:
    text = str(resource.props.get("create") or "")
    return resource.type == COMMAND and f"cd '{BUNDLE_DIR}'" in text and "sh apply.sh" in text


def _is_gateway(resource: Resource) -> bool:
    text = str(resource.props.get("create") or "")
    return resource.type == COMMAND and (f"cd '{GATEWAY_DIR}'" in text or "docker run" in text)


def _ancestors(resource: Resource, by_urn: Mapping[str, Resource]) -> set[str]:
    seen: set[str] = set()
    pending = list(resource.dependencies)
    while pending:
        urn = pending.pop()
        if urn in seen:
            continue
        seen.add(urn)
        if urn in by_urn:
            pending.extend(by_urn[urn].dependencies)
    return seen


def baseline_before_gateway(resources: Iterable[Resource]) -> list[str]:
    resources = list(resources)
    by_urn = {resource.urn: resource for resource in resources}
    baselines = [r for r in resources if _is_baseline(r)]
    violations = []
    for server in (r for r in resources if r.type == SERVER):
        if not any(server.urn in _ancestors(baseline, by_urn) for baseline in baselines):
            violations.append(
                f"server {server.name} gets no baseline command; every server needs the host baseline "
                "(components/host_baseline.py) installed by a remote command that depends on it"
            )
    for gateway in (r for r in resources if _is_gateway(r)):
        if not any(baseline.urn in _ancestors(gateway, by_urn) for baseline in baselines):
            violations.append(
                f"gateway command {gateway.name} does not wait for the baseline; add depends_on the baseline "
                "command so the firewall is active before the gateway starts"
            )
    return violations


def gateway_image_pinned(props: Mapping[str, Any]) -> list[str]:
    images = _IMAGE_ARGUMENT.findall(str(props.get("create") or ""))
    return [
        f"the gateway image {image} is not pinned by digest; use '<image>@sha256:<digest>' so every "
        "instance runs the reviewed build"
        for image in images
        if not _DIGEST.search(image)
    ]


def server_placement(props: Mapping[str, Any]) -> list[str]:
    violations = []
    if props.get("serverType") not in ALLOWED_SERVER_TYPES:
        violations.append(
            f"server type {props.get('serverType')} is not one the platform sells ({', '.join(ALLOWED_SERVER_TYPES)})"
        )
    if props.get("location") not in HETZNER_LOCATIONS:
        violations.append(f"location {props.get('location')} is not one of {', '.join(HETZNER_LOCATIONS)}")
    return violations


def _describe(ports: set[int]) -> str:
    return ", ".join(f"tcp/{port}" for port in sorted(ports)[:10]) + (" …" if len(ports) > 10 else "")
