"""DNS zones and RRsets, driven by Hetzner's own client (`client.zones`), and their publication as
the hosts files the lab's resolver reads."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hcloud import APIException, Client
from hcloud.zones.domain import (
    Zone,
    ZoneAuthoritativeNameservers,
    ZonePrimaryNameserver,
    ZoneRecord,
    ZoneRRSet,
)

from tests.hcloud_api.conftest import OTHER, Emulator

ZONE = "clawhosters.example"


def _code(call: Callable[[], Any]) -> str:
    with pytest.raises(APIException) as caught:
        call()
    return str(caught.value.code)


def _new_zone(client: Client, name: str = ZONE, **options: Any) -> Zone:
    response = client.zones.create(name=name, mode="primary", **options)
    response.action.wait_until_finished()
    return client.zones.get(name)


def test_a_zone_is_created_with_hetzner_s_records_and_found_by_id_name_mode_and_labels(
    emulator: Emulator, client: Client
) -> None:
    zone = _new_zone(client, ttl=600, labels={"managed-by": "clawhosters"})
    assert (zone.mode, zone.ttl, zone.status, zone.protection) == ("primary", 600, "ok", {"delete": False})
    assert zone.authoritative_nameservers.assigned == [
        "hydrogen.ns.hetzner.com.",
        "oxygen.ns.hetzner.com.",
        "helium.ns.hetzner.de.",
    ]
    apex = {rrset.type: rrset for rrset in client.zones.get_rrset_all(zone)}
    assert set(apex) == {"SOA", "NS"} and zone.record_count == 4
    assert apex["SOA"].records[0].value.startswith("hydrogen.ns.hetzner.com. dns.hetzner.com. ")
    assert client.zones.get(str(zone.id)).name == ZONE
    assert [z.id for z in client.zones.get_all(name=ZONE, mode="primary")] == [zone.id]
    assert client.zones.get_all(label_selector="managed-by=clawhosters")[0].id == zone.id
    assert client.zones.get_all(mode="secondary") == []
    # A domain is in one project only, and another project does not see this one.
    assert _code(lambda: emulator.client(OTHER).zones.create(name=ZONE, mode="primary")) == "uniqueness_error"
    assert _code(lambda: emulator.client(OTHER).zones.get(ZONE)) == "not_found"
    for bad in ("Upper.example", "trailing.example.", "nodot"):
        assert _code(lambda bad=bad: client.zones.create(name=bad, mode="primary")) == "invalid_input"
    assert _code(lambda: client.zones.create(name="with.example", mode="primary", zonefile="x")) == "unsupported_error"


def test_zone_actions_protection_ttl_labels_and_delete(emulator: Emulator, client: Client) -> None:
    zone = _new_zone(client)
    client.zones.change_ttl(zone, 300).wait_until_finished()
    client.zones.change_protection(zone, delete=True).wait_until_finished()
    client.zones.update(zone, labels={"a": "b"})
    zone = client.zones.get(zone.id)
    assert (zone.ttl, zone.protection, zone.labels) == (300, {"delete": True}, {"a": "b"})
    assert _code(lambda: client.zones.delete(zone)) == "protected"
    assert _code(lambda: client.zones.change_ttl(zone, 30)) == "invalid_input"
    assert _code(lambda: client.zones.change_primary_nameservers(zone, [])) == "incorrect_zone_mode"
    commands = [action.command for action in client.zones.get_actions(zone)]
    assert commands == ["create_zone", "change_ttl", "change_protection"]
    action = client.zones.actions.get_by_id(client.zones.get_actions(zone)[0].id)
    assert action.resources == [{"id": zone.id, "type": "zone"}] and action.status == "success"
    client.zones.change_protection(zone, delete=False).wait_until_finished()
    client.zones.delete(zone).action.wait_until_finished()
    assert _code(lambda: client.zones.get(ZONE)) == "not_found"


def test_a_secondary_zone_has_primary_nameservers_and_no_rrsets(client: Client) -> None:
    assert _code(lambda: client.zones.create(name=ZONE, mode="secondary")) == "invalid_input"
    zone = client.zones.create(
        name=ZONE, mode="secondary", primary_nameservers=[ZonePrimaryNameserver(address="198.51.100.1")]
    ).zone
    assert [(ns.address, ns.port) for ns in zone.primary_nameservers] == [("198.51.100.1", 53)]
    client.zones.change_primary_nameservers(
        zone, [ZonePrimaryNameserver(address="2001:db8::53", port=5353)]
    ).wait_until_finished()
    assert client.zones.get(zone.id).primary_nameservers[0].port == 5353
    assert _code(lambda: client.zones.get_rrset_all(zone)) == "incorrect_zone_mode"
    assert _code(lambda: client.zones.export_zonefile(zone)) == "incorrect_zone_mode"


def test_rrsets_records_ttl_protection_and_delete(client: Client) -> None:
    zone = _new_zone(client)
    created = client.zones.create_rrset(
        zone, name="acme", type="A", ttl=300, labels={"customer": "acme"}, records=[ZoneRecord("198.51.100.7")]
    )
    created.action.wait_until_finished()
    assert (created.rrset.id, created.rrset.zone.id) == ("acme/A", zone.id)
    client.zones.create_rrset(zone, name="acme", type="AAAA", records=[ZoneRecord("2001:db8:1000::1")])
    rrset = client.zones.get_rrset(zone, "acme", "A")
    assert (rrset.ttl, rrset.labels, [r.value for r in rrset.records]) == (300, {"customer": "acme"}, ["198.51.100.7"])
    assert {r.id for r in client.zones.get_rrset_all(zone, name="acme")} == {"acme/A", "acme/AAAA"}
    assert [r.id for r in client.zones.get_rrset_all(zone, type=["AAAA"])] == ["acme/AAAA"]
    assert [r.id for r in client.zones.get_rrset_all(zone, label_selector="customer=acme")] == ["acme/A"]
    refused = {
        "a taken name": lambda: client.zones.create_rrset(zone, name="acme", type="A", records=[ZoneRecord("1.2.3.4")]),
        "not an address": lambda: client.zones.create_rrset(zone, name="b", type="A", records=[ZoneRecord("::1")]),
        "an unquoted TXT": lambda: client.zones.create_rrset(zone, name="t", type="TXT", records=[ZoneRecord("x")]),
        "no records": lambda: client.zones.create_rrset(zone, name="e", type="A", records=[]),
        "the zone's name": lambda: client.zones.create_rrset(
            zone, name=f"x.{ZONE}", type="A", records=[ZoneRecord("1.2.3.4")]
        ),
        "twice a value": lambda: client.zones.set_rrset_records(rrset, [ZoneRecord("1.2.3.4"), ZoneRecord("1.2.3.4")]),
        "a ttl too short": lambda: client.zones.change_rrset_ttl(rrset, 10),
        "the SOA": lambda: client.zones.delete_rrset(client.zones.get_rrset(zone, "@", "SOA")),
    }
    assert {what: _code(call) for what, call in refused.items()} == {
        what: "uniqueness_error" if what == "a taken name" else "invalid_input" for what in refused
    }
    assert client.zones.create_rrset(zone, name="t", type="TXT", records=[ZoneRecord('"v=1" "two"')]).rrset
    client.zones.set_rrset_records(rrset, [ZoneRecord("198.51.100.8")]).wait_until_finished()
    client.zones.add_rrset_records(rrset, [ZoneRecord("198.51.100.9", comment="second")]).wait_until_finished()
    client.zones.update_rrset_records(rrset, [ZoneRecord("198.51.100.8", comment="first")]).wait_until_finished()
    client.zones.change_rrset_ttl(rrset, None).wait_until_finished()
    client.zones.update_rrset(rrset, labels={})
    rrset = client.zones.get_rrset(zone, "acme", "A")
    assert rrset.ttl is None and rrset.labels == {}
    assert {(r.value, r.comment) for r in rrset.records} == {("198.51.100.8", "first"), ("198.51.100.9", "second")}
    # add_records makes an RRset that does not exist; remove_records deletes one left empty.
    client.zones.add_rrset_records(ZoneRRSet(name="www", type="A", zone=zone), [ZoneRecord("198.51.100.2")], ttl=60)
    www = client.zones.get_rrset(zone, "www", "A")
    assert www.ttl == 60
    client.zones.remove_rrset_records(www, [ZoneRecord("198.51.100.2")]).wait_until_finished()
    assert _code(lambda: client.zones.get_rrset(zone, "www", "A")) == "not_found"
    client.zones.change_rrset_protection(rrset, change=True).wait_until_finished()
    assert _code(lambda: client.zones.delete_rrset(rrset)) == "protected"
    assert _code(lambda: client.zones.set_rrset_records(rrset, [ZoneRecord("198.51.100.1")])) == "protected"
    client.zones.change_rrset_protection(rrset, change=False).wait_until_finished()
    client.zones.delete_rrset(rrset).action.wait_until_finished()
    assert _code(lambda: client.zones.get_rrset(zone, "acme", "A")) == "not_found"
    soa = client.zones.get_rrset(zone, "@", "SOA").records[0].value.split()
    assert int(soa[2]) > int(client.zones.get(zone.id).created.strftime("%Y%m%d")) * 100 + 5  # one serial per change
    assert "acme IN AAAA 2001:db8:1000::1" in client.zones.export_zonefile(zone).zonefile


def test_shapes_cover_what_hcloud_python_reads(emulator: Emulator, client: Client) -> None:
    zone = _new_zone(client)
    client.zones.create_rrset(zone, name="acme", type="A", records=[ZoneRecord("198.51.100.7", comment="c")])
    body = emulator.get(f"/v1/zones/{zone.id}").json()["zone"]
    assert set(Zone.__api_properties__) <= set(body)
    assert set(ZoneAuthoritativeNameservers.__api_properties__) <= set(body["authoritative_nameservers"])
    rrset = emulator.get(f"/v1/zones/{ZONE}/rrsets/acme/A").json()["rrset"]
    assert set(ZoneRRSet.__api_properties__) <= set(rrset)
    assert set(ZoneRecord.__api_properties__) <= set(rrset["records"][0])
    listing = emulator.get(f"/v1/zones/{ZONE}/rrsets", per_page=500).json()
    assert listing["meta"]["pagination"]["per_page"] == 100


def test_primary_zones_are_published_as_hosts_files(start_emulator: Callable[..., Emulator], tmp_path: Path) -> None:
    published = tmp_path / "hosts"
    emulator = start_emulator(dns_hosts_dir=published)
    client = emulator.client()
    zone = _new_zone(client)
    assert (published / ZONE).read_text() == ""
    client.zones.create_rrset(zone, name="acme", type="A", records=[ZoneRecord("198.51.100.7")])
    client.zones.create_rrset(zone, name="@", type="AAAA", records=[ZoneRecord("2001:db8::7")])
    client.zones.create_rrset(zone, name="t", type="TXT", records=[ZoneRecord('"only A and AAAA"')])
    assert sorted((published / ZONE).read_text().splitlines()) == [
        f"198.51.100.7 acme.{ZONE}",
        f"2001:db8::7 {ZONE}",
    ]
    client.zones.delete_rrset(client.zones.get_rrset(zone, "acme", "A"))
    assert (published / ZONE).read_text() == f"2001:db8::7 {ZONE}\n"
    # A restart publishes what the state holds and drops files of zones that are gone.
    (published / "gone.example").write_text("198.51.100.1 gone.example\n")
    emulator.restart()
    assert sorted(path.name for path in published.iterdir()) == [ZONE]
    client.zones.delete(zone)
    assert list(published.iterdir()) == []
