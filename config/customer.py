"""Per-customer and per-platform settings of one stack, validated before any resource exists."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import struct
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from config.hetzner import HETZNER
from config.labels import label_problem

# Hetzner Cloud locations (Falkenstein, Nuremberg, Helsinki, Ashburn, Hillsboro, Singapore).
HETZNER_LOCATIONS: tuple[str, ...] = HETZNER.location_names

# Matched with fullmatch: `$` would let a trailing newline through.
_SLUG = re.compile(r"[a-z][a-z0-9-]{0,38}[a-z0-9]")
_DNS_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
# A domain as Hetzner names a zone: lower case, at least two labels, no trailing dot; IDNs in Punycode.
_ZONE = re.compile(rf"(?=.{{1,200}}$)(?:{_DNS_LABEL}\.)+{_DNS_LABEL}")
_SERVER_TYPE = re.compile(r"[a-z][a-z0-9-]{1,30}")
# Docker image reference: [registry[:port]/]path[:tag][@sha256:digest], lower-case path parts.
_IMAGE = re.compile(
    r"(?:(?P<registry>[a-zA-Z0-9](?:[a-zA-Z0-9.-]*[a-zA-Z0-9])?(?::[0-9]+)?)/)?"
    r"(?P<path>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[a-f0-9]{64}))?"
)
_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)
MIN_RSA_BITS = 2048
# The server types a stack may run, unless `platform:server_types` says otherwise: types Hetzner still
# sells somewhere (cx22-cx52 are unorderable since 2025-12-31, cpx11-cpx51 in the EU; they remain the
# shared types of ash, hil and sin), the cost-optimised ones included, which customers already run.
# Which of them a location offers and has in stock is Hetzner's answer, read at preview
# (components/safety.py); which one a new customer gets is the provisioner's placement (config/plans.py).
DEFAULT_SERVER_TYPES = (
    "cx23", "cx33", "cx43", "cx53", "cpx12", "cpx22", "cpx32", "cpx42",
    "cpx11", "cpx21", "cpx31", "cax11", "cax21", "cax31", "cax41",
)  # fmt: skip


# Every resource of a customer at Hetzner carries these labels: fleet tooling finds customers by them.
MANAGED_BY = "clawhosters"


def customer_labels(customer_id: str) -> dict[str, str]:
    return {"customer": customer_id, "managed-by": MANAGED_BY}


# What marks the platform's scheduled snapshots of a customer (`Backups.retention` counts those), besides
# the customer's labels.
SCHEDULED_SNAPSHOT = {"backup": "scheduled"}


def _slug(value: str) -> str:
    if not _SLUG.fullmatch(value):
        raise ValueError(
            "must be a DNS-safe slug: 2-40 characters of a-z, 0-9 and '-', "
            "starting with a letter and not ending with '-'"
        )
    return value


def _image_reference(value: str) -> str:
    if not _IMAGE.fullmatch(value) or len(value) > 255:
        raise ValueError("must be a Docker image reference such as 'registry/name:tag@sha256:<64 hex>'")
    return value


def _read_ssh_string(blob: bytes, offset: int) -> tuple[bytes, int]:
    if offset + 4 > len(blob):
        raise ValueError("truncated key data")
    (length,) = struct.unpack(">I", blob[offset : offset + 4])
    end = offset + 4 + length
    if end > len(blob):
        raise ValueError("truncated key data")
    return blob[offset + 4 : end], end


def parse_openssh_public_key(value: str) -> str:
    """Accept one OpenSSH public key line; return it normalised as 'type base64 [comment]'."""
    value = value.strip()
    # Only printable characters: a line or paragraph separator (U+2028, U+2029, ...) in a comment
    # would split the line wherever the key is written into a file.
    if not value.isprintable():
        raise ValueError("must be a single OpenSSH public key line of printable characters")
    parts = value.split(None, 2)
    if len(parts) < 2:
        raise ValueError("must be an OpenSSH public key: '<type> <base64> [comment]'")
    key_type, encoded = parts[0], parts[1]
    if key_type not in _KEY_TYPES:
        raise ValueError(f"key type {key_type!r} is not one of {', '.join(_KEY_TYPES)}")
    try:
        blob = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError("key data is not valid base64") from error
    embedded_type, offset = _read_ssh_string(blob, 0)
    if embedded_type.decode(errors="replace") != key_type:
        raise ValueError("key data does not match its declared type")
    if key_type == "ssh-rsa":
        _exponent, offset = _read_ssh_string(blob, offset)
        modulus, offset = _read_ssh_string(blob, offset)
        bits = int.from_bytes(modulus, "big").bit_length()
        if bits < MIN_RSA_BITS:
            raise ValueError(f"RSA key has {bits} bits; at least {MIN_RSA_BITS} are required")
    elif key_type == "ssh-ed25519":
        public, offset = _read_ssh_string(blob, offset)
        if len(public) != 32:
            raise ValueError("ed25519 key data has the wrong length")
    else:
        _curve, offset = _read_ssh_string(blob, offset)
        _point, offset = _read_ssh_string(blob, offset)
    return " ".join(parts)


def keys_match_ssh(keys: tuple[str, ...], ssh_enabled: bool) -> tuple[str, ...]:
    """Customer keys exist exactly when the customer enabled SSH, each key once."""
    _distinct_keys(keys)
    if keys and not ssh_enabled:
        raise ValueError("keys are given but ssh_enabled is false")
    if ssh_enabled and not keys:
        raise ValueError("ssh_enabled is true but no key is given")
    return keys


def _distinct_keys(keys: tuple[str, ...]) -> None:
    """The same key twice (whatever its comment) is a mistake, not a second key."""
    seen: dict[str, int] = {}
    for index, key in enumerate(keys):
        key_data = " ".join(key.split()[:2])
        if key_data in seen:
            raise ValueError(f"key {index} repeats key {seen[key_data]}")
        seen[key_data] = index


def _server_type(value: str) -> str:
    if not _SERVER_TYPE.fullmatch(value):
        raise ValueError("must be a Hetzner server type name such as 'cx23'")
    if HETZNER.server_type(value) is None:
        raise ValueError(f"{value!r} is not a server type of Hetzner's catalogue (config/hetzner.yaml)")
    return value


def _location(value: str) -> str:
    if value not in HETZNER_LOCATIONS:
        raise ValueError(f"must be one of {', '.join(HETZNER_LOCATIONS)}")
    return value


def _zone(value: str) -> str:
    if not _ZONE.fullmatch(value):
        raise ValueError(
            "must be a DNS zone's name such as 'gateways.example.com': lower case, no trailing dot, "
            "internationalised names in Punycode (xn--...)"
        )
    return value


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError as error:
        raise ValueError(f"{value!r} is not a network address in CIDR notation") from error


CustomerId = Annotated[str, AfterValidator(_slug)]
ImageReference = Annotated[str, AfterValidator(_image_reference)]
OpenSshPublicKey = Annotated[str, AfterValidator(parse_openssh_public_key)]
Cidr = Annotated[str, AfterValidator(_cidr)]
ServerType = Annotated[str, AfterValidator(_server_type)]
Location = Annotated[str, AfterValidator(_location)]
DnsZone = Annotated[str, AfterValidator(_zone)]


class CustomerConfig(BaseModel):
    """What a customer chose at signup. None of it can change the network baseline."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    customer_id: CustomerId
    # Checked against the platform's allow-list (`platform:server_types`) by StackSettings.
    server_type: str = "cx23"
    # Changing it on an existing server is refused: moving a customer is a migration.
    location: Location = "fsn1"
    ssh_enabled: bool = False
    ssh_public_keys: tuple[OpenSshPublicKey, ...] = Field(default=(), validate_default=True)
    gateway_image: ImageReference
    # Set by the platform after a cancellation's grace period: snapshot the server and lift its
    # protection, so that a following `pulumi destroy` can remove it.
    decommission: bool = False

    @field_validator("ssh_public_keys")
    @classmethod
    def _keys_need_ssh(cls, keys: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        return keys_match_ssh(keys, info.data.get("ssh_enabled", False))

    @property
    def stack_name(self) -> str:
        return f"customer-{self.customer_id}"

    @property
    def server_name(self) -> str:
        return f"claw-{self.customer_id}"

    def hostname(self, zone: str) -> str:
        """The customer's name in the platform's zone."""
        return f"{self.customer_id}.{zone}"

    @property
    def gateway_image_pinned(self) -> bool:
        match = _IMAGE.fullmatch(self.gateway_image)
        return bool(match and match.group("digest"))


class Backups(BaseModel):
    """How every customer's disk is backed up (`platform:backups`, one object)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # "hetzner": Hetzner's automatic backups, daily in a window Hetzner picks, seven kept, for 20 % on
    # the server's price. "snapshots": none of Hetzner's; the platform's own snapshots on its schedule,
    # billed per GB kept. A switch is an in-place change of every server (enable/disable_backup);
    # switching to "snapshots" deletes the server's Hetzner backups at once.
    mode: Literal["hetzner", "snapshots"] = "hetzner"
    # With "snapshots": how many of a customer's scheduled snapshots are kept (the oldest go first),
    # and the labels each one carries besides the customer's own.
    retention: int = Field(default=7, ge=1, le=90)
    labels: dict[str, str] = {}

    @field_validator("labels")
    @classmethod
    def _hetzner_labels(cls, labels: dict[str, str]) -> dict[str, str]:
        for key, value in labels.items():
            if (problem := label_problem(key, value)) is not None:
                raise ValueError(problem)
            if key in customer_labels("") | SCHEDULED_SNAPSHOT:
                raise ValueError(f"label {key!r} is the platform's own: every scheduled snapshot carries it")
        return labels


class PlatformConfig(BaseModel):
    """Settings the platform owns for every stack (never exposed to customers)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # "dedicated": one cloud firewall per customer. "shared": attach the platform's firewall
    # (Hetzner caps firewalls per account, so a fleet shares one). "both": attach both, the step
    # between the two (a direct switch would leave the server without a firewall for a moment).
    firewall_mode: Literal["dedicated", "shared", "both"] = "dedicated"
    shared_firewall_id: int | None = Field(default=None, ge=1, validate_default=True)
    # Where provisioning SSH sessions come from: never banned by fail2ban.
    provisioner_cidrs: tuple[Cidr, ...] = ()
    image: str = "debian-12"
    # What a customer may order; a resize keeps the disk, so any of them can be reached again.
    server_types: tuple[ServerType, ...] = Field(default=DEFAULT_SERVER_TYPES, min_length=1)
    # How long a decommissioned customer's snapshot is kept (its `expires-on` label).
    snapshot_retention_days: int = Field(default=30, ge=1, le=3650)
    # The platform's DNS zone at Hetzner, in a project of its own (its token is HCLOUD_DNS_TOKEN, never
    # a customer project's): each customer is `<customer_id>.<dns_zone>`, its A and AAAA records the
    # server's addresses. Without it, a stack has no hostname.
    dns_zone: DnsZone | None = None
    backups: Backups = Backups()

    @field_validator("shared_firewall_id")
    @classmethod
    def _shared_needs_id(cls, firewall_id: int | None, info: ValidationInfo) -> int | None:
        mode = info.data.get("firewall_mode")
        if mode in ("shared", "both") and firewall_id is None:
            raise ValueError(f"required when firewall_mode is '{mode}'")
        if mode == "dedicated" and firewall_id is not None:
            raise ValueError("only used with firewall_mode 'shared' or 'both'")
        return firewall_id
