"""Server types, images and locations as Hetzner serves them since the 2025-10-16 deprecations; its
datacenters gone (2026-10-01)."""

from __future__ import annotations

import warnings

import pytest
from hcloud import APIException, Client
from hcloud.images import Image
from hcloud.locations import Location
from hcloud.server_types import ServerType

from config.hetzner import HETZNER
from tests.hcloud_api.conftest import Emulator, create_server

ORDERABLE_EU = ("cx23", "cx33", "cx43", "cx53", "cpx12", "cpx22", "cpx32", "cpx42", "cpx52", "cax11", "cax41", "ccx13")
UNORDERABLE = ("cx22", "cx32", "cx42", "cx52")


def test_listing_has_the_current_types_and_drops_the_unavailable_ones(client: Client) -> None:
    names = {st.name for st in client.server_types.get_all()}
    assert set(ORDERABLE_EU) <= names
    assert names.isdisjoint(UNORDERABLE)
    assert client.server_types.get_by_name("cx22") is None


def test_a_deprecated_type_keeps_its_deprecation_data(client: Client) -> None:
    cx22 = client.server_types.get_by_id(104)
    assert cx22.name == "cx22" and cx22.category == "cost_optimized"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert cx22.deprecated is True
        assert cx22.deprecation.announced.isoformat() == "2025-10-16T06:00:00+00:00"
        assert cx22.deprecation.unavailable_after.isoformat() == "2025-12-31T23:59:59+00:00"
    for entry in cx22.locations:
        assert entry.deprecation is not None and entry.available is False


def test_per_location_availability_and_prices(client: Client) -> None:
    cpx11 = client.server_types.get_by_name("cpx11")
    by_location = {entry.location.name: entry for entry in cpx11.locations}
    assert {name: e.available for name, e in by_location.items()} == {
        "fsn1": False, "nbg1": False, "hel1": False, "ash": True, "hil": True, "sin": True,
    }  # fmt: skip
    assert by_location["fsn1"].deprecation is not None and by_location["ash"].deprecation is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert cpx11.deprecation is None  # not deprecated everywhere
    prices = {p["location"]: p for p in cpx11.prices}
    assert set(prices) == set(by_location)
    assert float(prices["ash"]["price_monthly"]["net"]) > float(prices["fsn1"]["price_monthly"]["net"])
    for name in ("cx23", "cax11", "cpx22"):
        offered = {entry.location.name for entry in client.server_types.get_by_name(name).locations}
        assert offered == {"fsn1", "nbg1", "hel1"}, name
    ccx13 = client.server_types.get_by_name("ccx13")
    assert {e.location.name for e in ccx13.locations if e.available} == {"fsn1", "nbg1", "hel1", "ash", "hil", "sin"}
    assert ccx13.cpu_type == "dedicated" and client.server_types.get_by_name("cax11").architecture == "arm"


@pytest.mark.parametrize("name", (*UNORDERABLE, "cpx21"))
def test_deprecated_types_are_refused_on_create(client: Client, name: str) -> None:
    with pytest.raises(APIException) as caught:
        client.servers.create(
            name="old", server_type=ServerType(name=name), image=Image(name="debian-12"), location=Location(name="fsn1")
        )
    assert caught.value.code == "invalid_server_type" and "deprecated" in caught.value.message


@pytest.mark.parametrize(("name", "location"), [("cax11", "ash"), ("cx23", "hil"), ("cpx22", "sin"), ("cx33", "sin")])
def test_types_a_location_does_not_offer_are_refused(client: Client, name: str, location: str) -> None:
    with pytest.raises(APIException) as caught:
        client.servers.create(
            name="far",
            server_type=ServerType(name=name),
            image=Image(name="debian-12"),
            location=Location(name=location),
        )
    assert (caught.value.code, caught.value.message) == (
        "invalid_input",
        "invalid input in field 'location': unsupported location for server type",
    )


def test_old_cpx_still_sells_overseas(client: Client) -> None:
    server = create_server(client, "us-box", server_type="cpx11", location=Location(name="hil"))
    assert (server.server_type.name, server.location.name, server.status) == ("cpx11", "hil", "running")


def test_system_images_per_architecture_and_image_filters(client: Client) -> None:
    debian = client.images.get_all(name="debian-12")
    assert sorted(i.architecture for i in debian) == ["arm", "x86"]
    x86 = client.images.get_by_name_and_architecture("debian-12", "x86")
    assert (x86.type, x86.os_flavor, x86.os_version, x86.status) == ("system", "debian", "12", "available")
    assert all(i.type == "system" for i in client.images.get_all(type=["system"]))
    assert client.images.get_all(type=["snapshot"]) == []
    assert {i.architecture for i in client.images.get_all(architecture=["arm"])} == {"arm"}
    with pytest.raises(APIException) as caught:
        client.images.update(x86, description="mine")
    assert caught.value.code == "forbidden"


def test_image_labels_description_and_delete(client: Client) -> None:
    server = create_server(client, "snap")
    response = client.servers.create_image(server)
    response.action.wait_until_finished()
    image = client.images.update(response.image, description="kept", labels={"expires-on": "2027-01-31"})
    assert (image.description, image.labels) == ("kept", {"expires-on": "2027-01-31"})
    assert [i.id for i in client.images.get_all(label_selector="expires-on")] == [image.id]
    client.images.delete(image)
    with pytest.raises(APIException) as caught:
        client.images.get_by_id(image.id)
    assert caught.value.code == "not_found"


def test_locations_and_no_datacenters(emulator: Emulator, client: Client) -> None:
    locations = client.locations.get_all()
    assert [loc.name for loc in locations] == [location.name for location in HETZNER.locations]
    assert [loc.name for loc in locations] == ["fsn1", "nbg1", "hel1", "ash", "hil", "sin"]
    assert client.locations.get_by_name("sin").network_zone == "ap-southeast"
    # Deprecated 2026-06-02, 410 Gone since 2026-10-01.
    for path in ("/v1/datacenters", "/v1/datacenters/4"):
        response = emulator.get(path)
        assert response.status_code == 410
        assert response.json()["error"] == {
            "code": "deprecated_api_endpoint",
            "message": "API functionality was removed",
            "details": {"announcement": "https://docs.hetzner.cloud/changelog#2026-06-02-datacenters-deprecated"},
        }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(APIException) as caught:
            client.datacenters.get_all()
    assert caught.value.code == "deprecated_api_endpoint"


def test_a_server_has_a_location_and_no_datacenter(emulator: Emulator, client: Client) -> None:
    server = create_server(client, "placed", location=Location(name="hel1"))
    body = emulator.get(f"/v1/servers/{server.id}").json()["server"]
    assert body["location"]["name"] == "hel1" and "datacenter" not in body
    assert server.location.name == "hel1" and "datacenter" not in server.__api_properties__
