"""Stock-outs per server type and location, as Hetzner reports them (`locations[].available`) and as it
refuses a server it cannot place (`resource_unavailable`, 412); set by the lab at /_lab/stock."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests
from hcloud import APIException, Client
from hcloud.images import Image
from hcloud.locations import Location
from hcloud.server_types import ServerType

from tests.hcloud_api.conftest import Emulator, create_server

UNPLACEABLE = "we are unable to provision servers for this location, try with a different location or try later"


def set_stock(emulator: Emulator, *sold_out: tuple[str, str]) -> requests.Response:
    entries = [{"server_type": server_type, "location": location} for server_type, location in sold_out]
    return requests.put(f"{emulator.url}/_lab/stock", json={"sold_out": entries}, timeout=10)


def _availability(client: Client, name: str) -> dict[str, tuple[bool, bool]]:
    """(available, recommended) per location of a server type, as Hetzner's client reads them."""
    return {
        entry.location.name: (entry.available, entry.recommended)
        for entry in client.server_types.get_by_name(name).locations
    }


def test_a_sold_out_type_stays_listed_unavailable_where_it_is_out(emulator: Emulator, client: Client) -> None:
    # In stock, the cheapest type on sale in an EU location is the one Hetzner recommends there.
    assert _availability(client, "cx23") == {"fsn1": (True, True), "nbg1": (True, True), "hel1": (True, True)}
    assert set_stock(emulator, ("cx23", "fsn1")).json() == {"sold_out": [{"server_type": "cx23", "location": "fsn1"}]}
    assert _availability(client, "cx23") == {"fsn1": (False, False), "nbg1": (True, True), "hel1": (True, True)}
    assert _availability(client, "cax11")["fsn1"] == (True, True), "the next cheapest is recommended in fsn1"
    assert "cx23" in {st.name for st in client.server_types.get_all()}
    assert requests.get(f"{emulator.url}/_lab/stock", timeout=10).json()["sold_out"] == [
        {"server_type": "cx23", "location": "fsn1"}
    ]


def test_a_server_hetzner_cannot_place_is_refused_as_hetzner_refuses_it(emulator: Emulator, client: Client) -> None:
    set_stock(emulator, ("cpx22", "fsn1"), ("cpx22", "nbg1"))
    response = emulator.post(
        "/v1/servers", {"name": "out", "server_type": "cpx22", "image": "debian-12", "location": "fsn1"}
    )
    assert response.status_code == 412
    assert response.json()["error"] == {"code": "resource_unavailable", "message": UNPLACEABLE, "details": {}}
    assert client.servers.get_all() == [], "nothing was created"
    # Without a location, Hetzner places it where it has stock.
    assert create_server(client, "anywhere", server_type="cpx22").location.name == "hel1"
    set_stock(emulator, ("cpx22", "fsn1"), ("cpx22", "nbg1"), ("cpx22", "hel1"))
    with pytest.raises(APIException) as caught:
        client.servers.create(name="nowhere", server_type=ServerType(name="cpx22"), image=Image(name="debian-12"))
    assert caught.value.code == "resource_unavailable"
    set_stock(emulator)
    assert create_server(client, "back", server_type="cpx22", location=Location(name="fsn1")).status == "running"


def test_a_resize_into_a_sold_out_type_is_refused(emulator: Emulator, client: Client) -> None:
    server = create_server(client, "grows", server_type="cx23", location=Location(name="nbg1"))
    client.servers.power_off(server).wait_until_finished()
    set_stock(emulator, ("cx33", "nbg1"))
    with pytest.raises(APIException) as caught:
        client.servers.change_type(server, ServerType(name="cx33"), upgrade_disk=False)
    assert caught.value.code == "resource_unavailable"
    set_stock(emulator)
    client.servers.change_type(server, ServerType(name="cx33"), upgrade_disk=False).wait_until_finished()
    assert client.servers.get_by_id(server.id).server_type.name == "cx33"


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"sold_out": [{"server_type": "cx23", "location": "ash"}]}, "cx23 is not sold in 'ash'"),
        ({"sold_out": [{"server_type": "cx99", "location": "fsn1"}]}, "'cx99' is not a server type"),
        ({"sold_out": [{"server_type": "cx23"}]}, "location"),
        ({"sold_out": "cx23"}, "sold_out"),
        ({}, "sold_out"),
    ],
)
def test_the_stock_knob_refuses_what_hetzner_does_not_sell(emulator: Emulator, body: Any, problem: str) -> None:
    set_stock(emulator, ("cx33", "hel1"))
    response = requests.put(f"{emulator.url}/_lab/stock", json=body, timeout=10)
    assert response.status_code == 400 and problem in response.json()["error"]
    assert requests.get(f"{emulator.url}/_lab/stock", timeout=10).json()["sold_out"] == [
        {"server_type": "cx33", "location": "hel1"}
    ], "unchanged"


def test_the_emulator_starts_with_the_stock_it_is_given(start_emulator: Callable[..., Emulator]) -> None:
    emulator = start_emulator(sold_out=[{"server_type": "cpx22", "location": "fsn1"}])
    assert _availability(emulator.client(), "cpx22")["fsn1"] == (False, False)
