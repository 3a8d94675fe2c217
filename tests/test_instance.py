"""The per-customer resource graph, asserted on what the Pulumi engine receives (mocks, no cloud)."""

from __future__ import annotations

import itertools
import json
import re
import shlex
from typing import Any

import pytest
from pydantic import SecretStr

from components.cloud_firewall import firewall_rules
from components.instance import COMPONENT_TYPE
from components.offline import COMMAND, FIREWALL, SERVER, Cloud, Graph, baseline_firewall, build_graph, run_program
from config import BaselinePolicy, BlockedService, ConfigError, CustomerConfig, PlatformConfig, StackSettings
from tests.keys import public_key

IMAGE = "ghcr.io/openclaw/gateway:1.4.2@sha256:" + "cd" * 32
POLICY = BaselinePolicy()
COMMAND_CHAIN = ("wait-cloud-init", "packages", "baseline", "gateway")


def settings(**customer: Any) -> StackSettings:
    platform = customer.pop("platform", PlatformConfig())
    return StackSettings(
        customer=CustomerConfig.model_validate({"customer_id": "acme", "gateway_image": IMAGE, **customer}),
        platform=platform,
    )


@pytest.fixture(scope="module")
def graph() -> Graph:
    return build_graph(settings())


def _ports(rule: dict[str, Any]) -> set[int]:
    first, _, last = rule["port"].partition("-")
    return set(range(int(first), int(last or first) + 1))


def test_firewall_opens_exactly_ssh_and_gateway_inbound_on_both_families(graph: Graph) -> None:
    inbound = [rule for rule in graph.one(FIREWALL).inputs["rules"] if rule["direction"] == "in"]
    assert {rule["protocol"] for rule in inbound} == {"tcp"}
    assert set().union(*(_ports(rule) for rule in inbound)) == set(POLICY.inbound.open_tcp_ports)
    for rule in inbound:
        assert set(rule["sourceIps"]) == {"0.0.0.0/0", "::/0"}


def test_firewall_allows_every_outbound_tcp_port_except_smtp_and_irc(graph: Graph) -> None:
    outbound = [rule for rule in graph.one(FIREWALL).inputs["rules"] if rule["direction"] == "out"]
    for rule in outbound:
        assert set(rule["destinationIps"]) == {"0.0.0.0/0", "::/0"}
    allowed_tcp: list[int] = []
    for rule in outbound:
        if rule["protocol"] == "tcp":
            allowed_tcp.extend(_ports(rule))
    assert len(allowed_tcp) == len(set(allowed_tcp)), "overlapping tcp rules"
    blocked = set(POLICY.egress.blocked_tcp_ports)
    allowed_set = set(allowed_tcp)
    assert [port for port in range(1, 65536) if port not in allowed_set] == sorted(blocked)
    protocols = [rule["protocol"] for rule in outbound if rule["protocol"] != "tcp"]
    # Everything Hetzner filters besides tcp is allowed once: the contract blocks only SMTP and IRC.
    assert sorted(protocols) == ["esp", "gre", "icmp", "udp"]
    udp = next(rule for rule in outbound if rule["protocol"] == "udp")
    assert _ports(udp) == set(range(1, 65536))


def test_server_is_created_with_its_firewall_labels_and_both_address_families(graph: Graph) -> None:
    server = graph.one(SERVER)
    firewall = graph.one(FIREWALL)
    firewall_id = int(graph.outputs["firewall_id"])
    assert server.inputs["firewallIds"] == [firewall_id]
    assert firewall.urn in server.dependencies
    assert server.inputs["labels"] == {"customer": "acme", "managed-by": "clawhosters"}
    assert server.inputs["image"] == "debian-12"
    assert server.inputs["location"] == "fsn1"
    assert server.inputs["publicNets"] == [{"ipv4Enabled": True, "ipv6Enabled": True}]
    ssh_key = graph.one("hcloud:index/sshKey:SshKey")
    assert ssh_key.urn in server.dependencies
    # As Hetzner stores it: a key ending in a line end would be replaced on the next `up`.
    assert ssh_key.inputs["publicKey"] == ssh_key.inputs["publicKey"].strip()
    assert set(server.ignore_changes) >= {"image", "userData", "sshKeys"}


def test_cloud_init_pins_the_host_key_that_the_connection_verifies(graph: Graph) -> None:
    server = graph.one(SERVER)
    assert server.input_is_secret("userData")
    cloud_init = json.loads(server.inputs["userData"].removeprefix("#cloud-config\n"))
    assert cloud_init["ssh_pwauth"] is False
    host_public = cloud_init["ssh_keys"]["ed25519_public"]
    for command in graph.of_type(COMMAND):
        assert command.input_is_secret("connection")
        connection = command.inputs["connection"]
        assert connection["hostKey"] == host_public
        assert connection["host"] == graph.outputs["ipv4_address"]
        assert connection["dialErrorLimit"] > 10


def test_every_resource_is_a_child_of_the_component(graph: Graph) -> None:
    component = graph.one(COMPONENT_TYPE)
    children = [r for r in graph.registrations if r is not component]
    assert children
    assert all(r.parent == component.urn for r in children)


def test_commands_run_in_order_wait_packages_baseline_gateway(graph: Graph) -> None:
    commands = {c.name.removeprefix("customer-acme-"): c for c in graph.of_type(COMMAND)}
    assert set(commands) == set(COMMAND_CHAIN)
    assert graph.one(SERVER).urn in commands["wait-cloud-init"].dependencies
    for before, after in itertools.pairwise(COMMAND_CHAIN):
        assert commands[before].urn in commands[after].dependencies, f"{after} must wait for {before}"
    server_id = graph.outputs["server_id"]
    for command in commands.values():
        assert server_id in command.inputs["triggers"], "a rebuilt server re-runs every step"
    digest = graph.outputs["baseline_digest"]
    assert digest in commands["baseline"].inputs["triggers"]
    # A baseline change re-runs the baseline only: the customer's gateway keeps running.
    assert digest not in commands["gateway"].inputs["triggers"]
    assert "DPkg::Lock::Timeout" in commands["packages"].inputs["create"]


def test_first_boot_steps_run_once_per_server_and_the_others_on_every_change(graph: Graph) -> None:
    commands = {c.name.removeprefix("customer-acme-"): c for c in graph.of_type(COMMAND)}
    for once in ("wait-cloud-init", "packages"):
        # An edit of their scripts is no diff at all on a running server; a new server runs them.
        assert commands[once].ignore_changes == ["create"] and "update" not in commands[once].inputs
    for step in ("baseline", "gateway"):
        assert commands[step].ignore_changes == [], f"{step} must follow every edit"


def _published(unit_or_script: str) -> list[str]:
    exec_start = next(line for line in unit_or_script.splitlines() if line.startswith("ExecStart="))
    words = shlex.split(exec_start.removeprefix("ExecStart="))
    return [words[i + 1] for i, word in enumerate(words) if word in ("--publish", "-p")]


def test_gateway_publishes_only_the_gateway_port_and_keeps_metrics_local(graph: Graph) -> None:
    gateway = graph.named("customer-acme-gateway")
    gateway_port, metrics_port = POLICY.inbound.gateway_port, POLICY.inbound.metrics_port
    assert _published(gateway.inputs["create"]) == [
        f"{gateway_port}:{gateway_port}",
        f"127.0.0.1:{metrics_port}:{metrics_port}",
    ]
    assert f"sh install.sh '{IMAGE}'" in gateway.inputs["create"]
    assert "Restart=always" in gateway.inputs["create"]


def test_gateway_password_is_secret_everywhere(graph: Graph) -> None:
    assert graph.secret_outputs["gateway_password"]
    password = graph.outputs["gateway_password"]
    gateway = graph.named("customer-acme-gateway")
    # On standard input, never as an SSH environment request (a stock sshd refuses those).
    assert "environment" not in gateway.inputs
    assert gateway.inputs["stdin"] == password
    assert gateway.public_inputs()["stdin"] == "[secret]"
    for registration in graph.registrations:
        assert password not in json.dumps(registration.public_inputs()), f"{registration.name} leaks it"
    for name, secret in graph.secret_outputs.items():
        if name != "gateway_password":
            assert not secret, f"{name} should be a plain output"
            assert password not in str(graph.outputs[name])


def test_outputs(graph: Graph) -> None:
    assert graph.outputs["gateway_url"] == f"http://203.0.113.10:{POLICY.inbound.gateway_port}/"
    assert graph.outputs["ipv6_address"] == "2001:db8:10::1"
    assert re.fullmatch(r"[0-9a-f]{64}", graph.outputs["baseline_digest"])
    assert graph.outputs["server_id"].isdigit()


def _server_inputs(g: Graph) -> dict[str, Any]:
    return g.one(SERVER).wire_inputs


def _baseline(g: Graph) -> Any:
    return g.named("customer-acme-baseline")


def test_a_policy_change_reruns_the_baseline_but_never_touches_the_server(graph: Graph) -> None:
    stricter = POLICY.model_copy(update={"syn_guard": POLICY.syn_guard.model_copy(update={"rate_per_second": 20})})
    changed = build_graph(settings(), stricter)
    assert _baseline(changed).inputs["triggers"] != _baseline(graph).inputs["triggers"]
    assert _baseline(changed).inputs["create"] != _baseline(graph).inputs["create"]
    assert _server_inputs(changed) == _server_inputs(graph)
    gateway = "customer-acme-gateway"
    assert changed.named(gateway).inputs == graph.named(gateway).inputs


def test_customer_ssh_keys_go_to_the_baseline_not_the_server(graph: Graph) -> None:
    key = public_key("ed25519", comment="customer-key-marker")
    enabled = build_graph(settings(ssh_enabled=True, ssh_public_keys=[key]))
    assert _server_inputs(enabled) == _server_inputs(graph)
    assert key in _baseline(enabled).inputs["create"]
    assert key not in _baseline(graph).inputs["create"]
    assert _baseline(enabled).inputs["triggers"] != _baseline(graph).inputs["triggers"]


def test_hetzner_backs_every_server_up_unless_the_platform_takes_its_own_snapshots(graph: Graph) -> None:
    assert graph.one(SERVER).inputs["backups"] is True
    own = build_graph(settings(platform=PlatformConfig.model_validate({"backups": {"mode": "snapshots"}})))
    assert own.one(SERVER).inputs["backups"] is False
    # Switched in place: only the backups differ, nothing the provider replaces a server for.
    assert {key for key, value in own.one(SERVER).inputs.items() if graph.one(SERVER).inputs.get(key) != value} == {
        "backups"
    }
    assert "backups" not in graph.one(SERVER).ignore_changes


def test_shared_firewall_mode_attaches_the_platform_firewall_at_creation() -> None:
    shared = build_graph(
        settings(platform=PlatformConfig(firewall_mode="shared", shared_firewall_id=4242)),
        cloud=Cloud(firewalls=(baseline_firewall(4242, POLICY),)),
    )
    assert shared.of_type(FIREWALL) == []
    assert shared.one(SERVER).inputs["firewallIds"] == [4242]
    assert shared.outputs["firewall_id"] == "4242"


BAD_STACK_CONFIGS = {
    "clawhosters:customer_id": {"clawhosters:customer_id": "Acme!"},
    "clawhosters:location": {"clawhosters:location": "mars1"},
    "clawhosters:ssh_public_keys": {
        "clawhosters:ssh_enabled": "true",
        "clawhosters:ssh_public_keys": '["ssh-ed25519 bm90IGEga2V5"]',
    },
    "clawhosters:gateway_image": {"clawhosters:gateway_image": "no spaces allowed"},
    "clawhosters:syn_rate_per_second": {"clawhosters:syn_rate_per_second": "1000"},
    "platform:shared_firewall_id": {"platform:firewall_mode": "shared"},
    "platform:backups.mode": {"platform:backups": '{"mode": "weekly"}'},
}


@pytest.mark.parametrize("key", sorted(BAD_STACK_CONFIGS))
def test_the_program_rejects_bad_config_naming_the_key_and_creates_nothing(key: str) -> None:
    config = {"clawhosters:customer_id": "acme", "clawhosters:gateway_image": IMAGE, **BAD_STACK_CONFIGS[key]}
    graph = Graph()
    with pytest.raises(ConfigError, match=re.escape(key)):
        run_program(config, graph)
    assert graph.registrations == []
    assert graph.outputs == {}


def test_the_program_exports_the_instance_outputs() -> None:
    graph = Graph()
    run_program({"clawhosters:customer_id": "acme", "clawhosters:gateway_image": IMAGE}, graph)
    assert graph.one(SERVER).inputs["name"] == "claw-acme"
    assert graph.secret_outputs["gateway_password"]
    assert set(graph.outputs) == {
        "server_id",
        "firewall_id",
        "ipv4_address",
        "ipv6_address",
        "gateway_url",
        "gateway_password",
        "baseline_digest",
    }


def test_a_policy_beyond_hetzners_rule_limits_is_refused_before_anything_is_created() -> None:
    scattered = tuple(range(1000, 1100, 2))  # 50 isolated blocked ports: 51 allowed tcp ranges
    policy = POLICY.model_copy(
        update={
            "egress": POLICY.egress.model_copy(
                update={"blocked": (*POLICY.egress.blocked, BlockedService(name="many", tcp_ports=scattered))}
            )
        }
    )
    with pytest.raises(ValueError, match="Hetzner allows 50"):
        firewall_rules(policy)


def test_a_bare_customer_config_gets_the_platform_defaults(graph: Graph) -> None:
    bare = build_graph(settings().customer)
    assert bare.one(SERVER).wire_inputs == graph.one(SERVER).wire_inputs
    assert len(bare.registrations) == len(graph.registrations)


ZONE = "gateways.example.com"
DNS_TOKEN = "D" * 32 + "ns00" * 8
RRSET = "hcloud:index/zoneRrset:ZoneRrset"


@pytest.fixture(scope="module")
def named() -> Graph:
    return build_graph(settings(platform=PlatformConfig(dns_zone=ZONE)), dns_token=SecretStr(DNS_TOKEN))


def test_the_customer_s_name_follows_the_server_s_addresses_through_the_dns_project_s_provider(named: Graph) -> None:
    provider = named.one("pulumi:providers:hcloud")
    assert provider.name == "customer-acme-dns" and provider.input_is_secret("token")
    assert provider.inputs["token"] == DNS_TOKEN
    server = named.one(SERVER)
    records = {record.inputs["type"]: record for record in named.of_type(RRSET)}
    assert set(records) == {"A", "AAAA"}
    for kind, address in (("A", "203.0.113.10"), ("AAAA", "2001:db8:10::1")):
        record = records[kind]
        assert (record.inputs["zone"], record.inputs["name"], record.inputs["ttl"]) == (ZONE, "acme", 300)
        assert record.inputs["records"] == [{"value": address}]
        assert record.property_dependencies["records"] == [server.urn]
        assert record.inputs["labels"] == {"customer": "acme", "managed-by": "clawhosters"}
        # Written with the DNS project's token only; a decommission's destroy removes them.
        assert record.provider.startswith(provider.urn + "::")
        assert not record.protect and not record.retain_on_delete
    # Everything else stays on the customers' project's provider, and no server sees the DNS token.
    assert all(
        r.provider == "" for r in named.registrations if r.type.startswith(("hcloud:", "command:")) and r.type != RRSET
    )
    assert all(DNS_TOKEN not in json.dumps(r.public_inputs()) for r in named.registrations)
    assert named.outputs["hostname"] == "acme.gateways.example.com" and not named.secret_outputs["hostname"]
    assert DNS_TOKEN not in json.dumps(named.outputs)


def test_without_a_zone_there_are_no_records_and_no_hostname(graph: Graph) -> None:
    assert graph.of_type(RRSET) == [] and graph.of_type("pulumi:providers:hcloud") == []
    assert graph.outputs["hostname"] is None


def test_a_preview_without_the_dns_token_leaves_the_provider_without_one() -> None:
    preview = build_graph(settings(platform=PlatformConfig(dns_zone=ZONE)))
    assert "token" not in preview.one("pulumi:providers:hcloud").inputs
    assert len(preview.of_type(RRSET)) == 2


def test_the_program_needs_the_dns_token_to_write_the_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    config = {"clawhosters:customer_id": "acme", "clawhosters:gateway_image": IMAGE, "platform:dns_zone": ZONE}
    monkeypatch.delenv("HCLOUD_DNS_TOKEN", raising=False)
    graph = Graph()
    with pytest.raises(ConfigError, match="HCLOUD_DNS_TOKEN: required"):
        run_program(config, graph)
    assert graph.registrations == []
    monkeypatch.setenv("HCLOUD_DNS_TOKEN", DNS_TOKEN)
    run_program(config, graph)
    assert graph.outputs["hostname"] == "acme.gateways.example.com"
