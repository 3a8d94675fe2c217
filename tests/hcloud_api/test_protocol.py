"""Tokens, the rate limit, the error format, action endpoints and the shapes the clients parse."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests
from hcloud import APIException, Client
from hcloud.actions.domain import Action
from hcloud.core.domain import Pagination
from hcloud.firewalls.domain import Firewall, FirewallResource, FirewallRule
from hcloud.images.domain import Image
from hcloud.locations.domain import Location
from hcloud.server_types.domain import ServerType, ServerTypeLocation
from hcloud.servers.domain import IPv4Address, IPv6Network, PublicNetwork, Server
from hcloud.ssh_keys.domain import SSHKey

from tests.hcloud_api.conftest import ACME, OTHER, Emulator, create_server
from tests.keys import public_key


def test_tokens(emulator: Emulator) -> None:
    # No header, an unknown token, a known token without the Bearer scheme.
    for headers in ({}, {"Authorization": f"Bearer {'X' * 64}"}, {"Authorization": ACME}):
        response = requests.get(f"{emulator.url}/v1/servers", headers=headers, timeout=10)
        assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
    with pytest.raises(APIException) as caught:
        emulator.client("X" * 64).servers.get_all()
    assert caught.value.code == "unauthorized"


def test_a_read_only_token_reads_the_project_and_changes_nothing(start_emulator: Callable[..., Emulator]) -> None:
    reader = "R" * 32 + "ead0" * 8
    emulator = start_emulator(
        tokens=[{"project": "acme", "token": ACME}, {"project": "acme", "token": reader, "read_only": True}]
    )
    server = create_server(emulator.client(), "kept")
    readonly = emulator.client(reader)
    assert [found.id for found in readonly.servers.get_all()] == [server.id]
    with pytest.raises(APIException) as caught:
        readonly.servers.delete(server)
    assert caught.value.code == "token_readonly"
    refused = emulator.post("/v1/ssh_keys", {"name": "k", "public_key": public_key()}, token=reader)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "token_readonly"
    assert emulator.client().servers.get_by_id(server.id).status == "running"
    usage = {t["token_sha256"]: t for t in emulator.get("/_lab/requests", token=None).json()["tokens"]}
    read = usage[hashlib.sha256(reader.encode()).hexdigest()[:12]]
    assert read["refused_writes"] == 2 and set(read["by_route"]) == {"GET /v1/servers"}


def test_rate_limit_headers_429_and_refill(start_emulator: Callable[..., Emulator]) -> None:
    emulator = start_emulator(rate_limit={"limit": 3, "refill_per_second": 10})
    before = time.time()
    remaining = []
    for _ in range(3):
        response = emulator.get("/v1/locations")
        assert response.status_code == 200 and response.headers["RateLimit-Limit"] == "3"
        remaining.append(int(response.headers["RateLimit-Remaining"]))
        assert int(response.headers["RateLimit-Reset"]) >= int(before)
    assert remaining == [2, 1, 0]
    refused = emulator.get("/v1/locations")
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert refused.headers["RateLimit-Remaining"] == "0"
    # The other project has a bucket of its own.
    assert emulator.get("/v1/locations", token=OTHER).status_code == 200
    deadline = time.monotonic() + 2
    while emulator.get("/v1/locations").status_code == 429:
        assert time.monotonic() < deadline, "the bucket did not refill"
        time.sleep(0.05)
    counts = {t["project"]: t for t in emulator.get("/_lab/requests", token=None).json()["tokens"]}
    assert counts["acme"]["rate_limited"] >= 1
    assert counts["acme"]["requests"] == counts["acme"]["rate_limited"] + 4
    assert counts["other"] == {
        "token_sha256": hashlib.sha256(OTHER.encode()).hexdigest()[:12],
        "project": "other",
        "requests": 1,
        "rate_limited": 0,
        "refused_writes": 0,
        "by_route": {"GET /v1/locations": 1},
    }


def test_request_counts_per_token_and_route(emulator: Emulator, client: Client) -> None:
    server = create_server(client, "counted")
    client.servers.get_by_id(server.id)
    emulator.get("/v1/servers", token="bad")
    counts = emulator.get("/_lab/requests", token=None).json()
    [acme] = [t for t in counts["tokens"] if t["project"] == "acme"]
    assert acme["by_route"]["POST /v1/servers"] == 1
    assert acme["by_route"]["GET /v1/servers/{id:int}"] == 2
    assert acme["by_route"]["GET /v1/actions/{id:int}"] >= 2  # wait_until_finished polls
    assert acme["requests"] == sum(acme["by_route"].values())
    assert counts["unauthenticated"] == {"GET /v1/servers": 1}


def test_error_format(emulator: Emulator) -> None:
    for response, status, code in (
        (emulator.get("/v1/servers/424242"), 404, "not_found"),
        (emulator.get("/v1/no_such_thing"), 404, "not_found"),
        (emulator.post("/v1/servers", raw=b"{not json"), 400, "json_error"),
        (emulator.post("/v1/servers", {"name": "x"}), 400, "invalid_input"),
        (emulator.get("/v1/servers", per_page="zero"), 400, "invalid_input"),
        (emulator.get("/v1/servers", sort="color"), 400, "invalid_input"),
    ):
        assert response.status_code == status
        error = response.json()["error"]
        assert set(error) == {"code", "message", "details"} and error["code"] == code
    fields = emulator.post("/v1/servers", {"name": "x"}).json()["error"]["details"]["fields"]
    assert fields[0]["name"] in ("server_type", "image") and fields[0]["messages"]


def test_action_endpoints(emulator: Emulator, client: Client) -> None:
    response = client.servers.create(name="acted", server_type=ServerType(name="cx23"), image=Image(name="debian-12"))
    ids = [response.action.id, response.next_actions[0].id]
    listed = emulator.get("/v1/actions", id=ids, sort=["status", "id"]).json()["actions"]
    assert sorted(a["id"] for a in listed) == ids and {a["status"] for a in listed} == {"running"}
    assert emulator.get("/v1/actions").json()["error"]["code"] == "invalid_input"
    for action in (response.action, *response.next_actions):
        action.wait_until_finished()
    assert client.actions.get_by_id(ids[0]).status == "success"
    server = response.server
    assert client.servers.actions.get_by_id(ids[1]).command == "start_server"
    assert [a.id for a in client.servers.get_actions(server, status=["success"], sort=["id"])] == ids
    assert emulator.get(f"/v1/servers/{server.id}/actions/{ids[0]}").json()["action"]["command"] == "create_server"
    assert emulator.get(f"/v1/firewalls/actions/{ids[0]}").status_code == 404
    assert [a["id"] for a in emulator.get("/v1/servers/actions", id=ids).json()["actions"]] == ids
    assert emulator.get("/v1/actions", id=ids, token=OTHER).json()["actions"] == []


def _covers(payload: dict[str, Any], domain: type, derived: tuple[str, ...] = ()) -> None:
    """Every field the hcloud-python domain class reads is in the payload (save those it derives)."""
    missing = set(domain.__api_properties__) - set(payload) - set(derived)  # type: ignore[attr-defined]
    assert not missing, f"{domain.__name__} reads {sorted(missing)}, absent from {sorted(payload)}"


def test_shapes_cover_what_hcloud_python_reads(emulator: Emulator, client: Client) -> None:
    client.ssh_keys.create(name="k", public_key=public_key(comment="shape"))
    server = create_server(client, "shape", ssh_keys=[client.ssh_keys.get_by_name("k")])
    firewall = client.firewalls.create(
        name="shape", rules=[FirewallRule(direction="out", protocol="tcp", port="443", destination_ips=["::/0"])]
    ).firewall
    client.firewalls.apply_to_resources(firewall, [FirewallResource(type="server", server=Server(id=server.id))])
    snapshot = client.servers.create_image(server).image

    body = emulator.get(f"/v1/servers/{server.id}").json()["server"]
    _covers(body, Server)
    # The client builds primary_ipv4/primary_ipv6 from the addresses' ids.
    _covers(body["public_net"], PublicNetwork, ("primary_ipv4", "primary_ipv6"))
    _covers(body["public_net"]["ipv4"], IPv4Address)
    _covers(body["public_net"]["ipv6"], IPv6Network, ("network", "network_mask"))  # split from "ip"
    assert set(body["public_net"]["firewalls"][0]) == {"id", "status"}
    _covers(body["location"], Location)
    _covers(body["image"], Image)
    for server_type in [body["server_type"], *emulator.get("/v1/server_types", per_page=50).json()["server_types"]]:
        _covers(server_type, ServerType)
        for entry in server_type["locations"]:
            _covers(entry, ServerTypeLocation, ("location",))
        for price in server_type["prices"]:
            assert set(price) == {
                "location",
                "price_hourly",
                "price_monthly",
                "included_traffic",
                "price_per_tb_traffic",
            }
    _covers(emulator.get(f"/v1/images/{snapshot.id}").json()["image"], Image)
    fw = emulator.get(f"/v1/firewalls/{firewall.id}").json()["firewall"]
    _covers(fw, Firewall)
    _covers(fw["rules"][0], FirewallRule)
    assert set(fw["applied_to"][0]) == {"type", "server"}
    assert set(FirewallResource.__api_properties__) >= {"type", "server"}
    _covers(emulator.get("/v1/ssh_keys").json()["ssh_keys"][0], SSHKey)
    listing = emulator.get("/v1/servers").json()
    _covers(listing["meta"]["pagination"], Pagination)
    _covers(emulator.get("/v1/servers/actions").json()["actions"][0], Action)
    assert emulator.get("/v1/servers").headers["Content-Type"] == "application/json"
