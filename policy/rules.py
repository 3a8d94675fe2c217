"""The guardrails as plain functions over resources, so they are tested without the Pulumi CLI.

A stack is compared with its canonical rendering: the remote commands the program renders for the
stack's own settings (`components.instance.remote_scripts`), a server labelled for the stack's own
customer, attached to an in-stack firewall that passes the firewall rules or to the platform's
allow-listed shared firewall. Nothing here parses a shell command or re-types a port: the numbers
come from `BaselinePolicy()`, the texts from the renderers.

A value that is unknown during preview cannot be checked; a mandatory rule that meets one raises
`UnknownInput`, which the pack reports as a mandatory violation (the gate fails closed).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pulumi_policy.proxy import (
    UNKNOWN_ARCHIVE_VALUE,
    UNKNOWN_ARRAY_VALUE,
    UNKNOWN_ASSET_VALUE,
    UNKNOWN_BOOLEAN_VALUE,
    UNKNOWN_NUMBER_VALUE,
    UNKNOWN_OBJECT_VALUE,
    UNKNOWN_STRING_VALUE,
)

from components.instance import COMPONENT_TYPE, ONCE_PER_SERVER_STEPS, RemoteScripts, remote_scripts
from config.customer import DEFAULT_SERVER_TYPES, HETZNER_LOCATIONS, MANAGED_BY
from config.loader import ConfigError, StackSettings, settings_from_mapping
from config.policy import MAX_PORT, BaselinePolicy

SERVER = "hcloud:index/server:Server"
FIREWALL = "hcloud:index/firewall:Firewall"
COMMAND = "command:remote:Command"
RRSET = "hcloud:index/zoneRrset:ZoneRrset"
# The customer's name has one record set of each type, holding the server's address of that family.
HOSTNAME_TYPES = ("A", "AAAA")
# Every resource type a customer stack consists of; anything else (a docker container, a second
# provider) did not come from the program's rendering.
INSTANCE_TYPES = (
    COMPONENT_TYPE,
    "tls:index/privateKey:PrivateKey",
    "random:index/randomPassword:RandomPassword",
    "hcloud:index/sshKey:SshKey",
    FIREWALL,
    SERVER,
    COMMAND,
    # Taken only when the platform decommissions the customer.
    "hcloud:index/snapshot:Snapshot",
    # The customer's A and AAAA records, with `platform:dns_zone` (written by the DNS project's provider).
    RRSET,
    "pulumi:pulumi:Stack",
)
PROVIDER_PREFIX = "pulumi:providers:"
UNKNOWN_VALUES = frozenset(
    {
        UNKNOWN_ARCHIVE_VALUE,
        UNKNOWN_ARRAY_VALUE,
        UNKNOWN_ASSET_VALUE,
        UNKNOWN_BOOLEAN_VALUE,
        UNKNOWN_NUMBER_VALUE,
        UNKNOWN_OBJECT_VALUE,
        UNKNOWN_STRING_VALUE,
    }
)
# Lines of a command's diff shown in a finding: enough to see the change, short enough to read.
DIFF_LINES = 24


class UnknownInput(Exception):
    """A value a mandatory rule needs is not known (during preview)."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


class CanonError(Exception):
    """The stack's canonical rendering cannot be established (bad or missing stack settings)."""


@dataclass(frozen=True)
class Resource:
    """What a policy sees of one resource: its type, identity, inputs and dependencies."""

    type: str
    name: str
    urn: str
    props: Mapping[str, Any]
    dependencies: tuple[str, ...] = field(default=())
    # Which resources each input was computed from (property name -> urns).
    property_dependencies: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Inputs whose changes the engine ignores for this resource (its `ignore_changes` option).
    ignore_changes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Canon:
    """What the program renders for this stack."""

    stack: str
    settings: StackSettings
    policy: BaselinePolicy
    scripts: RemoteScripts


def canon_for(stack: str | None, config: Mapping[str, str], policy: BaselinePolicy) -> Canon:
    """The canonical rendering of `stack` from its configuration, as the CLI hands both to the pack."""
    if not stack:
        raise CanonError("the stack's name is not known (PULUMI_STACK is unset), so nothing can be compared")
    try:
        settings = settings_from_mapping(config)
    except ConfigError as error:
        raise CanonError(str(error)) from error
    if settings.customer.stack_name != stack:
        raise CanonError(
            f"stack {stack} is configured for customer {settings.customer.customer_id!r}; a customer's stack is "
            f"named {settings.customer.stack_name}"
        )
    return Canon(stack=stack, settings=settings, policy=policy, scripts=remote_scripts(settings, policy))


def is_unknown(value: Any) -> bool:
    return isinstance(value, str) and value in UNKNOWN_VALUES


def known(value: Any, what: str) -> Any:
    """`value` with every nested unknown rejected: a rule never decides on a value it cannot see."""
    if is_unknown(value):
        raise UnknownInput(what)
    if isinstance(value, Mapping):
        return {key: known(item, f"{what}.{key}") for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [known(item, f"{what}[{index}]") for index, item in enumerate(value)]
    return value


def _ports(rule: Mapping[str, Any]) -> set[int]:
    text = str(rule.get("port") or "")
    if text in ("", "any"):
        return set(range(1, MAX_PORT + 1))
    first, _, last = text.partition("-")
    return set(range(int(first), int(last or first) + 1))


def firewall_inbound(props: Mapping[str, Any], policy: BaselinePolicy) -> list[str]:
    rules = known(props.get("rules") or [], "the firewall's rules")
    inbound = [rule for rule in rules if rule.get("direction") == "in"]
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
    rules = known(props.get("rules") or [], "the firewall's rules")
    outbound = [rule for rule in rules if rule.get("direction") == "out"]
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


def resource_types(resources: Iterable[Resource]) -> list[str]:
    packages = {kind.split(":", 1)[0] for kind in INSTANCE_TYPES}
    return [
        f"{resource.name} is a {resource.type}, which the program does not create; a customer stack holds only "
        "the CustomerInstance's resources"
        for resource in resources
        if resource.type not in INSTANCE_TYPES
        and not (resource.type.startswith(PROVIDER_PREFIX) and resource.type.removeprefix(PROVIDER_PREFIX) in packages)
    ]


def servers_match_stack(resources: Iterable[Resource], canon: Canon) -> list[str]:
    customer, platform = canon.settings.customer, canon.settings.platform
    servers = [r for r in resources if r.type == SERVER]
    if len(servers) != 1:
        return [f"stack {canon.stack} has {len(servers)} servers; a customer stack has exactly one"]
    server = servers[0]
    expected = {
        "name": customer.server_name,
        "serverType": customer.server_type,
        "location": customer.location,
        # A change cannot quietly leave customers without Hetzner's backups.
        "backups": platform.backups.mode == "hetzner",
    }
    violations = [
        f"server {server.name} has {key} {actual!r}; the stack's settings render {value!r}"
        for key, value in expected.items()
        if (actual := known(server.props.get(key), f"the server's {key}")) != value
    ]
    labels = known(server.props.get("labels") or {}, "the server's labels")
    for label, value in {"customer": customer.customer_id, "managed-by": MANAGED_BY}.items():
        if labels.get(label) != value:
            violations.append(
                f"server {server.name} has the label {label}={labels.get(label)!r}; stack {canon.stack} must carry "
                f"{label}={value!r}: fleet tooling finds customers by it"
            )
    return violations


def server_firewalls(resources: Iterable[Resource], canon: Canon) -> list[str]:
    """Every server is created attached to what the stack's settings call for: the allow-listed
    shared firewall (`platform:shared_firewall_id`) and/or the stack's own firewall, which must pass
    the firewall rules. The own firewall's id is unknown until it exists; the property's dependencies
    say where a value comes from.

    The hcloud provider previews `firewallIds` as a Terraform set, which is wholly unknown as soon as
    one member is: in `both` mode, before the own firewall exists (a new stack, or the step from
    `shared` to `both`), even the shared id in it cannot be seen. Such a value is accepted when it is
    derived from the stack's own passing firewall alone, as in `dedicated` mode; the next preview,
    with every id known, checks the shared firewall is among them."""
    resources = list(resources)
    platform = canon.settings.platform
    shared = platform.shared_firewall_id
    own_expected = platform.firewall_mode != "shared"
    firewalls = {r.urn: r for r in resources if r.type == FIREWALL}
    violations = []
    for server in (r for r in resources if r.type == SERVER):
        value = server.props.get("firewallIds")
        sources = tuple(server.property_dependencies.get("firewallIds", ()))
        own = [firewalls[urn] for urn in sources if urn in firewalls]
        derived = len(own) == 1 and len(sources) == 1
        if is_unknown(value):
            if not (own_expected and derived):
                raise UnknownInput("the server's firewallIds")
            ids: list[Any] = [value] if shared is None else [value, shared]
        else:
            ids = [item if is_unknown(item) else _as_int(item) for item in value or []]
        if not ids:
            violations.append(
                f"server {server.name} is created without a firewall, leaving it open until one is attached: pass "
                "firewall_ids at creation"
            )
            continue
        if shared is not None and shared not in ids:
            violations.append(
                f"server {server.name} is attached to {ids}; it must be attached to the platform's firewall "
                f"{shared} (platform:shared_firewall_id)"
            )
        rest = [item for item in ids if item != shared]
        if not own_expected or not derived:
            if rest:
                violations.append(
                    f"server {server.name} is attached to {rest}, which is neither computed from the stack's own "
                    "firewall nor the allow-listed shared firewall; attach the stack's firewall (firewall.id)"
                )
            elif own_expected:
                violations.append(f"server {server.name} is not attached to the stack's own firewall")
            continue
        if len(rest) != 1:
            violations.append(f"server {server.name} is attached to {rest} where only the stack's own firewall belongs")
        if problems := firewall_inbound(own[0].props, canon.policy) + firewall_outbound(own[0].props, canon.policy):
            violations.append(
                f"server {server.name} is attached to firewall {own[0].name}, which fails the baseline: "
                + "; ".join(problems)
            )
    return violations


def _as_int(value: Any) -> Any:
    # Struct numbers arrive as floats; ids are integers.
    return int(value) if isinstance(value, int | float) else value


def hostname_records(resources: Iterable[Resource], canon: Canon) -> list[str]:
    """The customer's name, `<customer_id>.<platform:dns_zone>`, has one A and one AAAA record set, each
    holding one record computed from the stack's server (its address, unknown until the server exists,
    so traced through the property's dependencies): no stack points its name, or another customer's,
    elsewhere. Without a zone in the settings a stack has no records."""
    resources = list(resources)
    zone, customer = canon.settings.platform.dns_zone, canon.settings.customer.customer_id
    records = [r for r in resources if r.type == RRSET]
    if zone is None:
        return [f"{r.name} is a DNS record, but the stack's settings name no platform:dns_zone" for r in records]
    servers = {r.urn for r in resources if r.type == SERVER}
    kinds = sorted(str(known(r.props.get("type"), f"the type of {r.name}")) for r in records)
    violations = []
    if kinds != list(HOSTNAME_TYPES):
        violations.append(
            f"stack {canon.stack} has DNS records of types {kinds}; {customer}.{zone} has one A and one AAAA record"
        )
    for record in records:
        name = known(record.props.get("name"), f"the name of {record.name}")
        written = f"{name}.{known(record.props.get('zone'), f'the zone of {record.name}')}"
        if written != customer + "." + zone:
            violations.append(f"{record.name} writes {written}; stack {canon.stack}'s name is {customer}.{zone}")
        values = record.props.get("records")
        sources = set(record.property_dependencies.get("records", ()))
        # The provider previews the records as a Terraform set, wholly unknown while the address is:
        # then only where it comes from can be seen, and the next preview counts the records.
        one_record = is_unknown(values) or (isinstance(values, list) and len(values) == 1)
        if not one_record or not sources or not sources <= servers:
            violations.append(
                f"{record.name} must hold exactly one record, the stack's server's address (server.ipv4_address or "
                "server.ipv6_address)"
            )
    return violations


def commands_match_rendering(resources: Iterable[Resource], canon: Canon) -> list[str]:
    """Every remote command runs exactly a script the program renders for this stack.

    A once-per-server step of a server that exists keeps the script it ran when the server was
    created: the engine ignores changes of its `create` and its trigger (the server's id) stays the
    same, so it runs nothing, whatever the current rendering. Only such a step may hold another
    script; a new server's steps, or a step whose `create` changes are not ignored, must match."""
    scripts = {
        "wait-for-cloud-init": canon.scripts.wait_for_cloud_init,
        "packages": canon.scripts.packages,
        "baseline": canon.scripts.baseline,
        "gateway": canon.scripts.gateway,
    }
    resources = list(resources)
    servers = {r.urn: r for r in resources if r.type == SERVER}
    violations = []
    for command in (r for r in resources if r.type == COMMAND):
        violations += _connects_to_the_server(command, servers)
        create = known(command.props.get("create"), f"the create script of {command.name}")
        for hook in ("update", "delete"):
            if known(command.props.get(hook), f"the {hook} script of {command.name}"):
                violations.append(
                    f"command {command.name} has an {hook} script; the program renders create scripts only"
                )
        if create in scripts.values() or _runs_nothing(command, canon, servers):
            continue
        role, text = max(scripts.items(), key=lambda item: difflib.SequenceMatcher(None, item[1], create).quick_ratio())
        violations.append(
            f"command {command.name} runs a script the program does not render for {canon.stack}; nearest is the "
            f"{role} script, which differs:\n{_diff(text, str(create))}"
        )
    return violations


def _runs_nothing(command: Resource, canon: Canon, servers: Mapping[str, Resource]) -> bool:
    """A once-per-server step of an existing server, which the engine will not run again."""
    if command.name not in {f"{canon.stack}-{step}" for step in ONCE_PER_SERVER_STEPS}:
        return False
    if "create" not in command.ignore_changes:
        return False
    # Its trigger is the server's id: unknown before a new or replacing server exists, and then
    # the step runs and its script must match.
    from_server = any(urn in servers for urn in command.property_dependencies.get("triggers", ()))
    triggers = command.props.get("triggers")
    return from_server and isinstance(triggers, list) and len(triggers) == 1 and not is_unknown(triggers[0])


def _connects_to_the_server(command: Resource, servers: Mapping[str, Resource]) -> list[str]:
    """A rendered script on a decoy host protects nothing: the connection comes from the stack's server."""
    server = next((servers[urn] for urn in command.property_dependencies.get("connection", ()) if urn in servers), None)
    if server is None:
        return [f"command {command.name} does not connect to the stack's server; derive its host from the server"]
    connection = command.props.get("connection")
    host = connection.get("host") if isinstance(connection, Mapping) else None
    address = server.props.get("ipv4Address")
    if host is None or address is None or is_unknown(host) or is_unknown(address) or host == address:
        return []
    return [f"command {command.name} connects to {host}, not to server {server.name} at {address}"]


def baseline_before_gateway(resources: Iterable[Resource], canon: Canon) -> list[str]:
    """The server gets the rendered baseline command, and the rendered gateway command waits for it."""
    resources = list(resources)
    by_urn = {resource.urn: resource for resource in resources}

    def runs(resource: Resource, script: str) -> bool:
        return resource.type == COMMAND and resource.props.get("create") == script

    baselines = [r for r in resources if runs(r, canon.scripts.baseline)]
    gateways = [r for r in resources if runs(r, canon.scripts.gateway)]
    violations = []
    for server in (r for r in resources if r.type == SERVER):
        if not any(server.urn in _ancestors(baseline, by_urn) for baseline in baselines):
            violations.append(
                f"server {server.name} gets no baseline command; every server needs the host baseline the program "
                "renders (components/host_baseline.py), installed by a remote command that depends on the server"
            )
        if not any(server.urn in _ancestors(gateway, by_urn) for gateway in gateways):
            violations.append(f"server {server.name} gets no gateway command as the program renders it")
    for gateway in gateways:
        if not any(baseline.urn in _ancestors(gateway, by_urn) for baseline in baselines):
            violations.append(
                f"gateway command {gateway.name} does not wait for the baseline; add depends_on the baseline "
                "command so the firewall is active before the gateway starts"
            )
    return violations


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


def gateway_image_pinned(canon: Canon) -> list[str]:
    customer = canon.settings.customer
    if customer.gateway_image_pinned:
        return []
    return [
        f"the gateway image {customer.gateway_image} is not pinned by digest; use '<image>@sha256:<digest>' so "
        "every instance runs the reviewed build"
    ]


def server_placement(props: Mapping[str, Any]) -> list[str]:
    violations = []
    server_type = known(props.get("serverType"), "the server's serverType")
    location = known(props.get("location"), "the server's location")
    if server_type not in DEFAULT_SERVER_TYPES:
        violations.append(
            f"server type {server_type} is not one the platform sells ({', '.join(DEFAULT_SERVER_TYPES)})"
        )
    if location not in HETZNER_LOCATIONS:
        violations.append(f"location {location} is not one of {', '.join(HETZNER_LOCATIONS)}")
    return violations


def _diff(expected: str, actual: str) -> str:
    lines = list(
        difflib.unified_diff(expected.splitlines(), actual.splitlines(), "rendered", "deployed", n=1, lineterm="")
    )
    shown = lines[:DIFF_LINES]
    if len(lines) > DIFF_LINES:
        shown.append(f"… {len(lines) - DIFF_LINES} more diff lines")
    return "\n".join(shown)


def _describe(ports: set[int]) -> str:
    return ", ".join(f"tcp/{port}" for port in sorted(ports)[:10]) + (" …" if len(ports) > 10 else "")
