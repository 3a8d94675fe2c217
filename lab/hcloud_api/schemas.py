"""Request bodies as Hetzner's API takes them; fields the emulator ignores are ignored silently."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, Field, ValidationError

from lab.hcloud_api.errors import ApiError, invalid_input

IdOrName = int | str
Labels = dict[str, str]


class _Body(BaseModel):
    pass


class FirewallRef(_Body):
    firewall: int


class PublicNet(_Body):
    enable_ipv4: bool = True
    enable_ipv6: bool = True
    ipv4: int | None = None
    ipv6: int | None = None


class CreateServer(_Body):
    name: Annotated[str, Field(min_length=1)]
    server_type: IdOrName
    image: IdOrName
    location: IdOrName | None = None
    datacenter: IdOrName | None = None
    ssh_keys: list[IdOrName] | None = None
    user_data: str | None = None
    labels: Labels | None = None
    firewalls: list[FirewallRef] | None = None
    public_net: PublicNet | None = None
    start_after_create: bool | None = None
    volumes: list[int] | None = None
    networks: list[int] | None = None
    placement_group: int | None = None


class UpdateNameLabels(_Body):
    name: str | None = None
    labels: Labels | None = None


class ChangeProtection(_Body):
    delete: bool | None = None
    rebuild: bool | None = None


class ChangeType(_Body):
    server_type: IdOrName
    upgrade_disk: bool


class CreateImage(_Body):
    description: str | None = None
    type: Literal["snapshot", "backup"] | None = None
    labels: Labels | None = None


class Rebuild(_Body):
    image: IdOrName
    user_data: str | None = None


class CreateSshKey(_Body):
    name: Annotated[str, Field(min_length=1)]
    public_key: str
    labels: Labels | None = None


class RuleIn(_Body):
    direction: Literal["in", "out"]
    protocol: Literal["tcp", "udp", "icmp", "esp", "gre"]
    port: str | None = None
    source_ips: list[str] | None = None
    destination_ips: list[str] | None = None
    description: str | None = None


class ServerRef(_Body):
    id: int


class SelectorRef(_Body):
    selector: str


class ResourceIn(_Body):
    type: Literal["server", "label_selector"]
    server: ServerRef | None = None
    label_selector: SelectorRef | None = None


class CreateFirewall(_Body):
    name: Annotated[str, Field(min_length=1, max_length=128)]
    labels: Labels | None = None
    rules: list[RuleIn] | None = None
    apply_to: list[ResourceIn] | None = None


class UpdateFirewall(_Body):
    name: Annotated[str | None, Field(min_length=1, max_length=128)] = None
    labels: Labels | None = None


class SetRules(_Body):
    rules: list[RuleIn]


class ApplyTo(_Body):
    apply_to: list[ResourceIn]


class RemoveFrom(_Body):
    remove_from: list[ResourceIn]


class UpdateImage(_Body):
    description: str | None = None
    type: Literal["snapshot"] | None = None
    labels: Labels | None = None


class RecordIn(_Body):
    value: str
    comment: str | None = None


class CreateRRSet(_Body):
    name: str
    type: str
    ttl: int | None = None
    labels: Labels | None = None
    records: list[RecordIn] | None = None


class NameserverIn(_Body):
    address: str
    port: int | None = None
    tsig_algorithm: str | None = None
    tsig_key: str | None = None


class CreateZone(_Body):
    name: str
    mode: Literal["primary", "secondary"]
    ttl: int | None = None
    labels: Labels | None = None
    primary_nameservers: list[NameserverIn] | None = None
    rrsets: list[CreateRRSet] | None = None
    zonefile: str | None = None


class UpdateLabels(_Body):
    labels: Labels | None = None


class ChangeZoneProtection(_Body):
    delete: bool | None = None


class ChangeZoneTtl(_Body):
    ttl: int


class ChangePrimaryNameservers(_Body):
    primary_nameservers: list[NameserverIn]


class ImportZonefile(_Body):
    zonefile: str


class ChangeRRSetProtection(_Body):
    change: bool | None = None


class ChangeRRSetTtl(_Body):
    # Required, and null: the zone's default TTL.
    ttl: int | None


class Records(_Body):
    records: list[RecordIn]


class AddRecords(Records):
    ttl: int | None = None


Body = TypeVar("Body", bound=_Body)


def parse(model: type[Body], payload: Any) -> Body:
    """The body as `model`, or Hetzner's invalid_input naming the first field that is wrong."""
    if not isinstance(payload, dict):
        raise ApiError("json_error", "request body must be a JSON object")
    try:
        return model.model_validate(payload)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "body"
        raise invalid_input(field, first["msg"]) from error
