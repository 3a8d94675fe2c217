"""DNS zones and their RRsets, as Hetzner's Cloud API serves them since 2025-10-07
(https://docs.hetzner.cloud/reference/cloud#zones), for terraform-provider-hcloud's `hcloud_zone` and
`hcloud_zone_rrset` and hcloud-python's `client.zones`.

A zone's name is unique across projects (a domain is in one project only). A new primary zone gets
Hetzner's SOA and three NS records at its apex; every change of its records counts the SOA serial up.
Each change returns an action on the zone, as Hetzner's do; the change itself shows at once.

Publication: where Hetzner pushes a zone to its authoritative nameservers, the emulator writes each
primary zone's A and AAAA records into a hosts file of its own in `dns_hosts_dir` (replaced whole,
atomically), which the lab's resolver (dnsmasq `--hostsdir`) reads as it changes.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tempfile
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from lab.hcloud_api import schemas
from lab.hcloud_api.catalog import timestamp
from lab.hcloud_api.errors import ApiError, invalid_input, not_found
from lab.hcloud_api.labels import parse_selector, validate_labels
from lab.hcloud_api.records import ActionRecord, Nameserver, RecordValue, ResourceRef, RRSetRecord, ZoneRecord
from lab.hcloud_api.views import Json, action_view

if TYPE_CHECKING:
    from lab.hcloud_api.cloud import Emulator

RRSET_TYPES = (
    "A", "AAAA", "CAA", "CNAME", "DS", "HINFO", "HTTPS", "MX", "NS", "PTR", "RP", "SOA", "SRV", "SVCB", "TLSA", "TXT",
)  # fmt: skip
# Hetzner's nameservers, assigned to every zone (hcloud-python's and hcloud-go's examples).
NAMESERVERS = ("hydrogen.ns.hetzner.com.", "oxygen.ns.hetzner.com.", "helium.ns.hetzner.de.")
SOA_TIMERS = "86400 10800 3600000 3600"
TTL_RANGE = (60, 2_147_483_647)
DEFAULT_TTL = 3600
APEX = "@"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
# Lower case, no trailing dot, a domain of at least two labels (Hetzner takes no subdomains of a
# public suffix; the emulator does not know the suffix list).
_ZONE_NAME = re.compile(rf"(?=.{{1,253}}$)(?:{_LABEL}\.)+{_LABEL}")
_RRSET_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_RRSET_NAME = re.compile(rf"(?=.{{1,253}}$)(?:\*|{_RRSET_LABEL})(?:\.{_RRSET_LABEL})*")
# One or more quoted strings of at most 255 characters each (the provider's own helper writes them so).
_TXT = re.compile(r'"(?:[^"\\]|\\.){0,255}"(?:\s+"(?:[^"\\]|\\.){0,255}")*')


def zone_view(zone: ZoneRecord) -> Json:
    return {
        "id": zone.id,
        "name": zone.name,
        "created": timestamp(zone.created),
        "mode": zone.mode,
        "ttl": zone.ttl,
        "labels": zone.labels,
        "protection": {"delete": zone.delete_protection},
        "primary_nameservers": [ns.model_dump() for ns in zone.primary_nameservers],
        "record_count": sum(len(rrset.records) for rrset in zone.rrsets.values()),
        "status": "ok",
        "registrar": "unknown",
        "authoritative_nameservers": {
            "assigned": list(NAMESERVERS),
            "delegated": [],
            "delegation_last_check": None,
            "delegation_status": "unknown",
        },
    }


def rrset_view(zone: ZoneRecord, rrset: RRSetRecord) -> Json:
    return {
        "id": f"{rrset.name}/{rrset.type}",
        "name": rrset.name,
        "type": rrset.type,
        "ttl": rrset.ttl,
        "labels": rrset.labels,
        "protection": {"change": rrset.change_protection},
        "records": [{"value": record.value, "comment": record.comment} for record in rrset.records],
        "zone": zone.id,
    }


def _key(name: str, kind: str) -> str:
    return f"{name}/{kind}"


def _ttl(ttl: int | None, field: str = "ttl") -> int | None:
    if ttl is not None and not TTL_RANGE[0] <= ttl <= TTL_RANGE[1]:
        raise invalid_input(field, f"ttl must be between {TTL_RANGE[0]} and {TTL_RANGE[1]}")
    return ttl


def _value(kind: str, value: str) -> str:
    problem = None
    if not value or "\n" in value:
        problem = "must be a single line"
    elif kind in ("A", "AAAA"):
        family = ipaddress.IPv4Address if kind == "A" else ipaddress.IPv6Address
        try:
            family(value)
        except ValueError:
            problem = f"must be an IPv{4 if kind == 'A' else 6} address"
    elif kind == "TXT" and _TXT.fullmatch(value) is None:
        problem = "must be one or more quoted strings of at most 255 characters"
    if problem is not None:
        raise invalid_input("records", f"{kind} record {value!r} {problem}")
    return value


def _records(kind: str, records: Iterable[schemas.RecordIn]) -> list[RecordValue]:
    checked = [RecordValue(value=_value(kind, record.value), comment=record.comment) for record in records]
    if not checked:
        raise invalid_input("records", "records must not be empty")
    values = [record.value for record in checked]
    if len(set(values)) != len(values):
        raise invalid_input("records", "records must only contain distinct values")
    return checked


def _rrset_name(zone: ZoneRecord, name: str) -> str:
    if name != APEX and (_RRSET_NAME.fullmatch(name) is None or name == zone.name or name.endswith(f".{zone.name}")):
        raise invalid_input(
            "name", "name must be in lower case, not end with a dot or the zone's name; '@' for the apex"
        )
    return name


def _rrset_type(kind: str) -> str:
    if kind not in RRSET_TYPES:
        raise invalid_input("type", f"type must be one of {', '.join(RRSET_TYPES)}")
    return kind


def _soa(zone: ZoneRecord) -> RRSetRecord:
    value = f"{NAMESERVERS[0]} dns.hetzner.com. {zone.serial} {SOA_TIMERS}"
    return RRSetRecord(name=APEX, type="SOA", records=[RecordValue(value=value)])


def _nameservers(servers: list[schemas.NameserverIn]) -> list[Nameserver]:
    checked = []
    for server in servers:
        try:
            ipaddress.ip_address(server.address)
        except ValueError as error:
            raise invalid_input("primary_nameservers.address", f"{server.address!r} is not an IP address") from error
        checked.append(
            Nameserver(
                address=server.address,
                port=server.port or 53,
                tsig_algorithm=server.tsig_algorithm,
                tsig_key=server.tsig_key,
            )
        )
    if not checked:
        raise invalid_input("primary_nameservers", "primary_nameservers must not be empty")
    return checked


class Zones:
    """The zones endpoints' effects on the emulator's projects."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator

    # --- lookups ---------------------------------------------------------------------------

    def zone(self, project: str, id_or_name: str) -> ZoneRecord:
        zones = self.emulator.project(project).zones
        found = zones.get(int(id_or_name)) if id_or_name.isdigit() else None
        found = found or next((zone for zone in zones.values() if zone.name == id_or_name), None)
        if found is None:
            raise not_found("zone")
        return found

    def primary(self, project: str, id_or_name: str) -> ZoneRecord:
        zone = self.zone(project, id_or_name)
        if zone.mode != "primary":
            raise ApiError("incorrect_zone_mode", "the zone is not in primary mode")
        return zone

    def rrset(self, zone: ZoneRecord, name: str, kind: str) -> RRSetRecord:
        found = zone.rrsets.get(_key(name, kind))
        if found is None:
            raise not_found("rrset")
        return found

    def list_zones(self, project: str, name: str | None, mode: str | None, selector: str | None) -> list[Json]:
        matches = parse_selector(selector) if selector else None
        return [
            zone_view(zone)
            for zone in self.emulator.project(project).zones.values()
            if (name is None or zone.name == name)
            and (mode is None or zone.mode == mode)
            and (matches is None or matches(zone.labels))
        ]

    def list_rrsets(self, zone: ZoneRecord, name: str | None, kinds: list[str], selector: str | None) -> list[Json]:
        matches = parse_selector(selector) if selector else None
        return [
            rrset_view(zone, rrset)
            for rrset in zone.rrsets.values()
            if (name is None or rrset.name == name)
            and (not kinds or rrset.type in kinds)
            and (matches is None or matches(rrset.labels))
        ]

    # --- zones -----------------------------------------------------------------------------

    def create_zone(self, project_name: str, body: schemas.CreateZone) -> Json:
        emulator = self.emulator
        if _ZONE_NAME.fullmatch(body.name) is None:
            raise invalid_input("name", "name must be a domain in lower case, without a trailing dot")
        if any(zone.name == body.name for p in emulator.cloud.projects.values() for zone in p.zones.values()):
            raise ApiError("uniqueness_error", "zone name is already used", {"fields": [{"name": "name"}]})
        if body.zonefile is not None:
            if body.rrsets:
                raise invalid_input("zonefile", "zonefile and rrsets are mutually exclusive")
            raise ApiError("unsupported_error", "zone file import is not emulated")
        moment = datetime.now(UTC)
        zone = ZoneRecord(
            id=emulator.cloud.new_id(),
            name=body.name,
            created=moment,
            mode=body.mode,
            ttl=_ttl(body.ttl) or DEFAULT_TTL,
            labels=validate_labels(body.labels or {}),
            serial=int(moment.strftime("%Y%m%d")) * 100 + 1,
        )
        if body.mode == "secondary":
            zone.primary_nameservers = _nameservers(body.primary_nameservers or [])
        else:
            ns = RRSetRecord(name=APEX, type="NS", records=[RecordValue(value=server) for server in NAMESERVERS])
            zone.rrsets = {_key(APEX, "SOA"): _soa(zone), _key(APEX, "NS"): ns}
            for rrset in body.rrsets or []:
                self._add_rrset(zone, rrset)
        emulator.project(project_name).zones[zone.id] = zone
        action = self._action(project_name, "create_zone", zone)
        self._changed(zone)
        return {"zone": zone_view(zone), "action": action_view(action)}

    def update_zone(self, project_name: str, id_or_name: str, body: schemas.UpdateLabels) -> Json:
        zone = self.zone(project_name, id_or_name)
        if body.labels is not None:
            zone.labels = validate_labels(body.labels)
        self.emulator.save()
        return {"zone": zone_view(zone)}

    def delete_zone(self, project_name: str, id_or_name: str) -> Json:
        zone = self.zone(project_name, id_or_name)
        if zone.delete_protection:
            raise ApiError("protected", "zone is delete protected")
        del self.emulator.project(project_name).zones[zone.id]
        action = self._action(project_name, "delete_zone", zone)
        self._unpublish(zone.name)
        self.emulator.save()
        return {"action": action_view(action)}

    def export_zonefile(self, project_name: str, id_or_name: str) -> Json:
        zone = self.primary(project_name, id_or_name)
        lines = [f"$ORIGIN {zone.name}.", f"$TTL {zone.ttl}"]
        for rrset in zone.rrsets.values():
            ttl = f"{rrset.ttl} " if rrset.ttl is not None else ""
            lines += [f"{rrset.name} {ttl}IN {rrset.type} {record.value}" for record in rrset.records]
        return {"zonefile": "\n".join(lines) + "\n"}

    def zone_action(self, project_name: str, id_or_name: str, name: str, body: object) -> Json:
        if name == "change_protection":
            zone = self.zone(project_name, id_or_name)
            change = schemas.parse(schemas.ChangeZoneProtection, body)
            if change.delete is not None:
                zone.delete_protection = change.delete
            return self._done(project_name, "change_protection", zone)
        if name == "change_ttl":
            zone = self.primary(project_name, id_or_name)
            zone.ttl = _ttl(schemas.parse(schemas.ChangeZoneTtl, body).ttl) or zone.ttl
            return self._done(project_name, "change_ttl", zone)
        if name == "change_primary_nameservers":
            zone = self.zone(project_name, id_or_name)
            if zone.mode != "secondary":
                raise ApiError("incorrect_zone_mode", "the zone is not in secondary mode")
            servers = schemas.parse(schemas.ChangePrimaryNameservers, body).primary_nameservers
            zone.primary_nameservers = _nameservers(servers)
            return self._done(project_name, "change_primary_nameservers", zone)
        if name == "import_zonefile":
            self.primary(project_name, id_or_name)
            schemas.parse(schemas.ImportZonefile, body)
            raise ApiError("unsupported_error", "zone file import is not emulated")
        self.zone(project_name, id_or_name)
        raise ApiError("unsupported_error", f"zone action {name!r} is not emulated")

    # --- rrsets ----------------------------------------------------------------------------

    def _add_rrset(self, zone: ZoneRecord, body: schemas.CreateRRSet) -> RRSetRecord:
        name, kind = _rrset_name(zone, body.name), _rrset_type(body.type)
        if _key(name, kind) in zone.rrsets:
            raise ApiError("uniqueness_error", f"RRSet {name}/{kind} already exists", {"fields": [{"name": "name"}]})
        rrset = RRSetRecord(
            name=name,
            type=kind,
            ttl=_ttl(body.ttl),
            labels=validate_labels(body.labels or {}),
            records=_records(kind, body.records or []),
        )
        zone.rrsets[_key(name, kind)] = rrset
        return rrset

    def create_rrset(self, project_name: str, id_or_name: str, body: schemas.CreateRRSet) -> Json:
        zone = self.primary(project_name, id_or_name)
        rrset = self._add_rrset(zone, body)
        action = self._action(project_name, "create_rrset", zone)
        self._changed(zone)
        return {"rrset": rrset_view(zone, rrset), "action": action_view(action)}

    def update_rrset(
        self, project_name: str, id_or_name: str, name: str, kind: str, body: schemas.UpdateLabels
    ) -> Json:
        zone = self.primary(project_name, id_or_name)
        rrset = self.rrset(zone, name, kind)
        if body.labels is not None:
            rrset.labels = validate_labels(body.labels)
        self.emulator.save()
        return {"rrset": rrset_view(zone, rrset)}

    def delete_rrset(self, project_name: str, id_or_name: str, name: str, kind: str) -> Json:
        zone = self.primary(project_name, id_or_name)
        rrset = self._changeable(zone, name, kind)
        if rrset.type == "SOA" or (rrset.name == APEX and rrset.type == "NS"):
            raise invalid_input("type", "the zone's SOA and apex NS records are Hetzner's")
        del zone.rrsets[_key(name, kind)]
        action = self._action(project_name, "delete_rrset", zone)
        self._changed(zone)
        return {"action": action_view(action)}

    def rrset_action(self, project_name: str, id_or_name: str, name: str, kind: str, action: str, body: object) -> Json:
        zone = self.primary(project_name, id_or_name)
        if action == "change_protection":
            rrset = self.rrset(zone, name, kind)
            change = schemas.parse(schemas.ChangeRRSetProtection, body)
            if change.change is not None:
                rrset.change_protection = change.change
            return self._done(project_name, "change_rrset_protection", zone)
        if action == "add_records":
            add = schemas.parse(schemas.AddRecords, body)
            existing = zone.rrsets.get(_key(name, kind))
            if existing is None:
                # Hetzner makes the RRset when it does not exist yet.
                create = schemas.CreateRRSet(name=name, type=kind, ttl=add.ttl, records=add.records)
                self._add_rrset(zone, create)
            else:
                rrset = self._changeable(zone, name, kind)
                if add.ttl is not None and rrset.ttl is not None and add.ttl != rrset.ttl:
                    raise invalid_input("ttl", "ttl must be the RRSet's own")
                rrset.ttl = _ttl(add.ttl) if rrset.ttl is None else rrset.ttl
                rrset.records = _records(kind, [*map(_record_in, rrset.records), *add.records])
            return self._records_changed(project_name, "add_rrset_records", zone)
        rrset = self._changeable(zone, name, kind)
        if action == "change_ttl":
            rrset.ttl = _ttl(schemas.parse(schemas.ChangeRRSetTtl, body).ttl)
            return self._records_changed(project_name, "change_rrset_ttl", zone)
        if action == "set_records":
            rrset.records = _records(kind, schemas.parse(schemas.Records, body).records)
            return self._records_changed(project_name, "set_rrset_records", zone)
        if action in ("update_records", "remove_records"):
            given = {record.value: record for record in schemas.parse(schemas.Records, body).records}
            if unknown := set(given) - {record.value for record in rrset.records}:
                raise invalid_input("records", f"the RRSet has no record {sorted(unknown)[0]!r}")
            if action == "update_records":
                comments = {value: record.comment for value, record in given.items()}
                rrset.records = [
                    record.model_copy(update={"comment": comments.get(record.value, record.comment)})
                    for record in rrset.records
                ]
            else:
                rrset.records = [record for record in rrset.records if record.value not in given]
                if not rrset.records:
                    # Hetzner deletes an RRset left without records.
                    del zone.rrsets[_key(name, kind)]
            return self._records_changed(project_name, f"{action.removesuffix('_records')}_rrset_records", zone)
        raise ApiError("unsupported_error", f"rrset action {action!r} is not emulated")

    def _changeable(self, zone: ZoneRecord, name: str, kind: str) -> RRSetRecord:
        rrset = self.rrset(zone, name, kind)
        if rrset.change_protection:
            raise ApiError("protected", f"RRSet {name}/{kind} is change protected")
        return rrset

    # --- actions and publication -----------------------------------------------------------

    def _action(self, project_name: str, command: str, zone: ZoneRecord) -> ActionRecord:
        return self.emulator.action_on(project_name, command, [ResourceRef(id=zone.id, type="zone")])

    def _done(self, project_name: str, command: str, zone: ZoneRecord) -> Json:
        action = self._action(project_name, command, zone)
        self.emulator.save()
        return {"action": action_view(action)}

    def _records_changed(self, project_name: str, command: str, zone: ZoneRecord) -> Json:
        action = self._action(project_name, command, zone)
        self._changed(zone)
        return {"action": action_view(action)}

    def _changed(self, zone: ZoneRecord) -> None:
        """A change of the zone's records: a new SOA serial, the state saved, the zone published."""
        if zone.mode == "primary":
            zone.serial += 1
            zone.rrsets[_key(APEX, "SOA")] = _soa(zone)
        self.emulator.save()
        self.publish(zone)

    def publish(self, zone: ZoneRecord) -> None:
        directory = self.emulator.config.dns_hosts_dir
        if directory is None or zone.mode != "primary":
            return
        lines = [
            f"{record.value} {zone.name if rrset.name == APEX else f'{rrset.name}.{zone.name}'}\n"
            for rrset in zone.rrsets.values()
            if rrset.type in ("A", "AAAA")
            for record in rrset.records
        ]
        _replace(directory / zone.name, "".join(lines))

    def _unpublish(self, zone_name: str) -> None:
        if self.emulator.config.dns_hosts_dir is not None:
            (self.emulator.config.dns_hosts_dir / zone_name).unlink(missing_ok=True)

    def publish_all(self) -> None:
        """Every primary zone's hosts file, and none of a zone that is gone (at start)."""
        directory = self.emulator.config.dns_hosts_dir
        if directory is None:
            return
        directory.mkdir(parents=True, exist_ok=True)
        zones = [zone for project in self.emulator.cloud.projects.values() for zone in project.zones.values()]
        for stale in {path.name for path in directory.iterdir()} - {zone.name for zone in zones}:
            (directory / stale).unlink()
        for zone in zones:
            self.publish(zone)


def _record_in(record: RecordValue) -> schemas.RecordIn:
    return schemas.RecordIn(value=record.value, comment=record.comment)


def _replace(path: Path, text: str) -> None:
    """Write `path` whole or not at all; the temporary file's leading dot keeps dnsmasq from reading it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
        Path(temporary).chmod(0o644)
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
