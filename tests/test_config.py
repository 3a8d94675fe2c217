"""The policy model is the contract; customer and platform settings are validated at load time."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from config import (
    BaselinePolicy,
    ConfigError,
    CustomerConfig,
    PlatformConfig,
    StackSettings,
    settings_from_mapping,
)
from config.customer import Backups
from config.hetzner import CATALOG_FILE, HETZNER, CatalogError, load_catalog
from config.loader import DNS_TOKEN_VARIABLE, dns_token, stack_config
from config.plans import DEFAULT_PLAN, DEFAULT_PLANS, Choice
from tests.keys import public_key

IMAGE = "ghcr.io/openclaw/gateway:1.4.2@sha256:" + "ab" * 32


def test_policy_defaults_are_the_contract() -> None:
    policy = BaselinePolicy()
    assert policy.inbound.open_tcp_ports == (22, 8080)
    assert policy.inbound.metrics_port == 9090
    assert set(policy.egress.blocked_tcp_ports) == {25, 465, 587, 2525, 6667, 6697, 194}
    assert (policy.syn_guard.rate_per_second, policy.syn_guard.burst) == (30, 60)
    assert policy.syn_guard.log_prefix == "PORTSCAN_BLOCKED: "
    assert policy.egress.log_prefix == "EGRESS_BLOCKED: "
    assert policy.fail2ban.jail == "sshd"
    assert (policy.fail2ban.maxretry, policy.fail2ban.bantime_seconds) == (3, 3600)
    assert policy.fail2ban.backend == "systemd"


def test_policy_is_frozen() -> None:
    policy = BaselinePolicy()
    with pytest.raises(ValidationError):
        policy.inbound.ssh_port = 2222  # type: ignore[misc]
    with pytest.raises(ValidationError):
        BaselinePolicy(unknown=1)  # type: ignore[call-arg]


def test_allowed_ranges_are_exactly_the_complement_of_blocked_ports() -> None:
    egress = BaselinePolicy().egress
    allowed = {port for first, last in egress.allowed_tcp_ranges for port in range(first, last + 1)}
    assert allowed == set(range(1, 65536)) - set(egress.blocked_tcp_ports)


def test_policy_rejects_an_open_port_that_is_also_blocked() -> None:
    with pytest.raises(ValidationError, match="both open inbound and blocked outbound"):
        BaselinePolicy.model_validate({"inbound": {"gateway_port": 25}})


def valid_customer(**changes: object) -> dict[str, object]:
    return {"customer_id": "acme-42", "gateway_image": IMAGE, **changes}


@pytest.mark.parametrize("key_type,bits", [("ed25519", None), ("rsa", 3072), ("ecdsa", 256)])
def test_real_openssh_keys_are_accepted(key_type: str, bits: int | None) -> None:
    key = public_key(key_type, bits)
    config = CustomerConfig.model_validate(valid_customer(ssh_enabled=True, ssh_public_keys=[key]))
    assert config.ssh_public_keys == (key,)


def test_defaults_keep_ssh_closed_and_name_the_stack() -> None:
    config = CustomerConfig.model_validate(valid_customer())
    assert config.ssh_enabled is False
    assert config.ssh_public_keys == ()
    assert config.stack_name == "customer-acme-42"
    assert config.gateway_image_pinned


def _bad_key_cases() -> list[tuple[str, object, str]]:
    ed25519 = public_key("ed25519")
    key_type, data, _comment = ed25519.split(" ", 2)
    return [
        ("ssh_public_keys", ["not a key"], "key type"),
        ("ssh_public_keys", [f"{key_type} !!!notbase64"], "base64"),
        ("ssh_public_keys", [f"ssh-rsa {data}"], "does not match its declared type"),
        ("ssh_public_keys", [f"{key_type} {data[:20]}"], "base64|truncated|wrong length"),
        ("ssh_public_keys", [public_key("rsa", 1024)], "at least 2048"),
        ("ssh_public_keys", [ed25519 + "\nssh-ed25519 AAAA"], "single OpenSSH public key line"),
        ("ssh_public_keys", [f"{key_type} {data} laptop\u2028CLAWHOSTERS_EOF"], "printable characters"),
        ("ssh_public_keys", [f"{key_type} {data} a\u2029b"], "printable characters"),
        ("ssh_public_keys", [f"{key_type} {data} a\x85b"], "printable characters"),
        ("ssh_public_keys", [ed25519, f"{key_type} {data} same key, other comment"], "key 1 repeats key 0"),
    ]


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("customer_id", "Acme", "DNS-safe slug"),
        ("customer_id", "a", "DNS-safe slug"),
        ("customer_id", "acme-", "DNS-safe slug"),
        ("customer_id", "acme;rm -rf /", "DNS-safe slug"),
        ("customer_id", "x" * 41, "DNS-safe slug"),
        ("customer_id", "acme\n", "DNS-safe slug"),
        ("location", "mars1", "fsn1"),
        ("gateway_image", "Not An Image", "image reference"),
        ("gateway_image", IMAGE + "\n", "image reference"),
        ("gateway_image", "ghcr.io/openclaw/gateway:1.4\n", "image reference"),
        ("gateway_image", "ghcr.io/openclaw/gateway@sha256:123", "image reference"),
        ("unexpected", "x", "Extra inputs"),
    ],
)
def test_invalid_customer_fields_are_named(field: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        CustomerConfig.model_validate(valid_customer(**{field: value}))
    assert [error["loc"][0] for error in caught.value.errors()] == [field]


def test_invalid_keys_are_named() -> None:
    for field, value, message in _bad_key_cases():
        with pytest.raises(ValidationError, match=message) as caught:
            CustomerConfig.model_validate(valid_customer(ssh_enabled=True, **{field: value}))
        assert caught.value.errors()[0]["loc"][0] == field


def test_keys_and_ssh_enabled_must_agree() -> None:
    with pytest.raises(ValidationError, match="ssh_enabled is false"):
        CustomerConfig.model_validate(valid_customer(ssh_public_keys=[public_key()]))
    with pytest.raises(ValidationError, match="no key is given"):
        CustomerConfig.model_validate(valid_customer(ssh_enabled=True))


def test_platform_shared_firewall_needs_an_id() -> None:
    with pytest.raises(ValidationError, match="required when firewall_mode is 'shared'"):
        PlatformConfig(firewall_mode="shared")
    with pytest.raises(ValidationError, match="required when firewall_mode is 'both'"):
        PlatformConfig(firewall_mode="both")
    assert PlatformConfig(firewall_mode="shared", shared_firewall_id=7).shared_firewall_id == 7
    with pytest.raises(ValidationError, match="not a network address"):
        PlatformConfig(provisioner_cidrs=("203.0.113.7/24",))


def test_stack_config_is_parsed_from_pulumi_text_values() -> None:
    key = public_key()
    settings = settings_from_mapping(
        {
            "clawhosters:customer_id": "acme",
            "clawhosters:gateway_image": IMAGE,
            "clawhosters:ssh_enabled": "true",
            "clawhosters:ssh_public_keys": json.dumps([key]),
            "platform:provisioner_cidrs": json.dumps(["203.0.113.0/28"]),
            "hcloud:token": "belongs to the provider, not to us",
        }
    )
    assert settings.customer.ssh_enabled is True
    assert settings.customer.ssh_public_keys == (key,)
    assert settings.platform.provisioner_cidrs == ("203.0.113.0/28",)


def test_settings_written_as_stack_config_read_back_the_same() -> None:
    settings = StackSettings(
        customer=CustomerConfig(
            customer_id="acme",
            gateway_image=IMAGE,
            ssh_enabled=True,
            ssh_public_keys=(public_key(),),
            decommission=True,
        ),
        platform=PlatformConfig(firewall_mode="both", shared_firewall_id=7, provisioner_cidrs=("203.0.113.0/28",)),
    )
    config = stack_config(settings)
    assert config["clawhosters:ssh_enabled"] == "true"
    assert json.loads(config["platform:provisioner_cidrs"]) == ["203.0.113.0/28"]
    assert settings_from_mapping(config, stack="customer-acme") == settings


def test_every_bad_stack_key_is_named_in_one_error() -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping(
            {
                "clawhosters:customer_id": "ACME",
                "clawhosters:location": "mars1",
                "clawhosters:syn_rate": "1000",
                "platform:firewall_mode": "shared",
            }
        )
    message = str(caught.value)
    for key in (
        "clawhosters:customer_id",
        "clawhosters:location",
        "clawhosters:gateway_image",
        "clawhosters:syn_rate: unknown setting",
        "platform:shared_firewall_id",
    ):
        assert key in message


def test_a_key_comment_with_a_line_separator_is_a_config_error_naming_the_key() -> None:
    key_type, data, _comment = public_key("ed25519").split(" ", 2)
    with pytest.raises(ConfigError, match=r"clawhosters:ssh_public_keys\.0: .*printable"):
        settings_from_mapping(
            {
                "clawhosters:customer_id": "acme",
                "clawhosters:gateway_image": IMAGE,
                "clawhosters:ssh_enabled": "true",
                "clawhosters:ssh_public_keys": json.dumps([f"{key_type} {data} a\u2028CLAWHOSTERS_EOF"]),
            }
        )


CUSTOMER = {"clawhosters:customer_id": "acme", "clawhosters:gateway_image": IMAGE}


def test_the_stack_must_be_the_customers_own() -> None:
    assert settings_from_mapping(CUSTOMER, stack="customer-acme").customer.customer_id == "acme"
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping(CUSTOMER, stack="customer-globex")
    message = str(caught.value)
    assert "clawhosters:customer_id" in message
    assert "'customer-globex'" in message and "'customer-acme'" in message


def test_server_types_come_from_the_platform_allow_list() -> None:
    assert settings_from_mapping({**CUSTOMER, "clawhosters:server_type": "cx33"}).customer.server_type == "cx33"
    with pytest.raises(ConfigError, match=r"clawhosters:server_type: 'cx99' is not offered; platform:server_types"):
        settings_from_mapping({**CUSTOMER, "clawhosters:server_type": "cx99"})
    narrowed = {**CUSTOMER, "platform:server_types": json.dumps(["cx23"])}
    with pytest.raises(ConfigError, match="clawhosters:server_type: 'cx33' is not offered"):
        settings_from_mapping({**narrowed, "clawhosters:server_type": "cx33"})
    with pytest.raises(ConfigError, match=r"platform:server_types\.0: must be a Hetzner server type"):
        settings_from_mapping({**CUSTOMER, "platform:server_types": json.dumps(["cx23\n"])})
    with pytest.raises(ValidationError, match="is not offered"):
        StackSettings(customer=CustomerConfig.model_validate(valid_customer(server_type="ccx63")))


def test_the_default_and_every_offered_type_are_orderable_today() -> None:
    now = datetime.now(UTC)
    sold = {server_type.name for server_type in HETZNER.server_types if server_type.orderable_anywhere(now)}
    assert CustomerConfig.model_fields["server_type"].default == "cx23"
    assert set(PlatformConfig().server_types) <= sold
    assert not {f"cx{n}2" for n in "2345"} & sold, "cx22-cx52 are unorderable since 2025-12-31"


def _catalogue_with(tmp_path: Path, section: str, index: int, changes: dict[str, Any]) -> Path:
    document = yaml.safe_load(CATALOG_FILE.read_text())
    document[section][index].update(changes)
    path = tmp_path / "hetzner.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.mark.parametrize(
    ("section", "index", "changes", "problem"),
    [
        ("server_types", 0, {"locations": ["fsn1", "mars1"]}, "server type cx23: unknown location mars1"),
        ("server_types", 4, {"deprecated_in": ["ash"]}, "server_types.4: deprecated_in names a location"),
        ("server_types", 0, {"deprecated_in": ["fsn1"]}, "server_types.0: deprecation and deprecated_in go"),
        ("server_types", 1, {"name": "cx23"}, "server type name used twice: cx23"),
        ("server_types", 0, {"architecture": "sparc"}, "server_types.0.architecture: Input should be"),
        ("locations", 0, {"country": "Germany"}, "locations.0.country: String should match"),
    ],
)
def test_the_catalogue_is_validated_at_load_naming_the_field(
    tmp_path: Path, section: str, index: int, changes: dict[str, Any], problem: str
) -> None:
    assert load_catalog() == HETZNER
    with pytest.raises(CatalogError, match=re.escape(problem)) as caught:
        load_catalog(_catalogue_with(tmp_path, section, index, changes))
    assert str(caught.value).startswith("hetzner.yaml: invalid Hetzner catalogue:")


def test_settings_name_only_what_the_catalogue_holds() -> None:
    with pytest.raises(
        ConfigError, match=r"platform:server_types\.1: 'cx99' is not a server type of Hetzner's catalogue"
    ):
        settings_from_mapping({**CUSTOMER, "platform:server_types": json.dumps(["cx23", "cx99"])})
    with pytest.raises(ConfigError, match="clawhosters:location: must be one of fsn1, nbg1, hel1, ash, hil, sin"):
        settings_from_mapping({**CUSTOMER, "clawhosters:location": "1"})
    with pytest.raises(ValidationError, match="Hetzner does not sell cpx22 in 'ash'"):
        Choice(server_type="cpx22", location="ash")
    with pytest.raises(ValidationError, match="'109' is not a server type"):
        Choice(server_type="109", location="fsn1")
    assert all(choice.server_type in PlatformConfig().server_types for choice in DEFAULT_PLANS[DEFAULT_PLAN].choices)


def test_platform_snapshot_retention_is_bounded_and_defaults_to_30_days() -> None:
    assert PlatformConfig().snapshot_retention_days == 30
    with pytest.raises(ConfigError, match="platform:snapshot_retention_days"):
        settings_from_mapping({**CUSTOMER, "platform:snapshot_retention_days": "0"})
    assert settings_from_mapping({**CUSTOMER, "clawhosters:decommission": "true"}).customer.decommission is True


DNS_TOKEN = "D" * 32 + "ns00" * 8


def test_the_platform_zone_is_a_domain_named_in_the_error() -> None:
    assert PlatformConfig().dns_zone is None
    zone = settings_from_mapping({**CUSTOMER, "platform:dns_zone": "gateways.example.com"}).platform.dns_zone
    assert zone == "gateways.example.com"
    assert CustomerConfig(customer_id="acme", gateway_image=IMAGE).hostname(zone) == "acme.gateways.example.com"
    for bad in ("Gateways.example.com", "example.com.", "localhost", "a..example", "-a.example", "a b.example"):
        with pytest.raises(ConfigError, match="platform:dns_zone: must be a DNS zone's name"):
            settings_from_mapping({**CUSTOMER, "platform:dns_zone": bad})


def test_the_dns_token_comes_from_the_environment_checked_and_named() -> None:
    without = PlatformConfig()
    zoned = PlatformConfig(dns_zone="gateways.example.com")
    assert dns_token(without, {DNS_TOKEN_VARIABLE: DNS_TOKEN}, preview=False) is None
    token = dns_token(zoned, {DNS_TOKEN_VARIABLE: DNS_TOKEN, "HCLOUD_TOKEN": "C" * 64}, preview=False)
    assert token is not None and token.get_secret_value() == DNS_TOKEN
    # A preview writes nothing: the confined pull-request preview has no environment at all.
    assert dns_token(zoned, {}, preview=True) is None
    refusals = {
        "required: platform:dns_zone's records": {},
        "is not a Hetzner API token": {DNS_TOKEN_VARIABLE: "short"},
        "is the customers' project token": {DNS_TOKEN_VARIABLE: DNS_TOKEN, "HCLOUD_TOKEN": DNS_TOKEN},
    }
    for message, environ in refusals.items():
        with pytest.raises(ConfigError, match=f"HCLOUD_DNS_TOKEN: {re.escape(message)}") as caught:
            dns_token(zoned, environ, preview=False)
        assert DNS_TOKEN not in str(caught.value)


def test_backups_are_hetzner_s_by_default_and_the_platform_s_own_snapshots_name_what_is_wrong() -> None:
    assert PlatformConfig().backups == Backups(mode="hetzner", retention=7, labels={})
    chosen = settings_from_mapping(
        {**CUSTOMER, "platform:backups": json.dumps({"mode": "snapshots", "retention": 14, "labels": {"tier": "b"}})}
    )
    assert chosen.platform.backups == Backups(mode="snapshots", retention=14, labels={"tier": "b"})
    # Written back as one object, read back the same.
    assert settings_from_mapping(stack_config(chosen)) == chosen
    for value, message in (
        ({"mode": "weekly"}, "platform:backups.mode: Input should be 'hetzner' or 'snapshots'"),
        ({"retention": 0}, "platform:backups.retention: Input should be greater than or equal to 1"),
        ({"labels": {"managed-by": "me"}}, "platform:backups.labels: label 'managed-by' is the platform's own"),
        ({"labels": {"tier": "a b"}}, "platform:backups.labels: label value 'a b' of 'tier' is invalid"),
        ({"labels": {"hetzner.cloud/x": "1"}}, "platform:backups.labels: the hetzner.cloud/ prefix is reserved"),
        ({"interval": 1}, "platform:backups.interval: unknown setting"),
    ):
        with pytest.raises(ConfigError, match=re.escape(message)):
            settings_from_mapping({**CUSTOMER, "platform:backups": json.dumps(value)})
