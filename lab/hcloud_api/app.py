"""The HTTP side: Hetzner's routes under /v1 (Bearer token, rate limit, pagination, error format)
and, outside it, the lab's own: GET /_lab/requests (how many requests each token made), GET and
PUT /_lab/stock (which server types Hetzner has run out of where), and POST /_lab/backup_window (the
daily backups of every server that has them on, taken now)."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from config.hetzner import HETZNER
from lab.hcloud_api import catalog, schemas
from lab.hcloud_api.backend import MachineBackend, RecordingBackend
from lab.hcloud_api.catalog import Stock
from lab.hcloud_api.cloud import Emulator, now
from lab.hcloud_api.config import EmulatorConfig, StockChange, Token
from lab.hcloud_api.errors import ApiError, invalid_input, not_found
from lab.hcloud_api.ratelimit import Bucket
from lab.hcloud_api.views import Json, ssh_key_view
from lab.hcloud_api.zones import rrset_view, zone_view

DEFAULT_PER_PAGE = 25
MAX_PER_PAGE = 50
# A zone's RRsets list takes up to 100 per page (Hetzner's reference).
MAX_RRSETS_PER_PAGE = 100
# Server commands behind POST /servers/{id}/actions/<name> that only switch power.
POWER_ACTIONS = {
    "poweron": "start_server",
    "poweroff": "stop_server",
    "shutdown": "shutdown_server",
    "reboot": "reboot_server",
    "reset": "reset_server",
}


@dataclass
class Call:
    """One authenticated API request, as a handler sees it."""

    request: Request
    project: str
    body: Any

    def id(self, name: str = "id") -> int:
        value: int = self.request.path_params[name]
        return value

    @property
    def query(self) -> dict[str, list[str]]:
        params = self.request.query_params
        return {key: params.getlist(key) for key in params}

    def one(self, key: str) -> str | None:
        return self.request.query_params.get(key)


@dataclass
class Reply:
    status: int
    body: Json | None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class TokenUse:
    project: str
    requests: int = 0
    rate_limited: int = 0
    refused_writes: int = 0
    by_route: Counter[str] = field(default_factory=Counter)


Handler = Callable[[Emulator, Call], Reply]


def _sort(items: list[Json], sorts: list[str], allowed: tuple[str, ...]) -> list[Json]:
    for spec in reversed(sorts):
        key, _, direction = spec.partition(":")
        if key not in allowed or direction not in ("", "asc", "desc"):
            raise invalid_input("sort", f"cannot sort by {spec!r}")
        items = sorted(items, key=lambda item: (item[key] is None, item[key]), reverse=direction == "desc")
    return items


def _int_param(call: Call, key: str, default: int) -> int:
    text = call.one(key)
    if text is None:
        return default
    if not text.isdigit() or int(text) < 1:
        raise invalid_input(key, f"{key} must be a positive integer")
    return int(text)


def page(
    call: Call,
    key: str,
    items: list[Json],
    sortable: tuple[str, ...] = ("id", "name", "created"),
    max_per_page: int = MAX_PER_PAGE,
) -> Reply:
    """One page of `items` with Hetzner's meta.pagination and Link header."""
    items = _sort(items, call.query.get("sort", []), sortable)
    number = _int_param(call, "page", 1)
    per_page = min(_int_param(call, "per_page", DEFAULT_PER_PAGE), max_per_page)
    last = max(1, -(-len(items) // per_page))
    start = (number - 1) * per_page
    pagination = {
        "page": number,
        "per_page": per_page,
        "previous_page": number - 1 if 1 < number <= last + 1 else None,
        "next_page": number + 1 if number < last else None,
        "last_page": last,
        "total_entries": len(items),
    }
    links = []
    for rel in ("prev", "next", "last"):
        target = pagination["last_page" if rel == "last" else f"{'previous' if rel == 'prev' else 'next'}_page"]
        if target is not None:
            query = [(k, v) for k, v in call.request.query_params.multi_items() if k != "page"] + [
                ("page", str(target))
            ]
            links.append(f'<{call.request.url.replace(query=urlencode(query))}>; rel="{rel}"')
    headers = {"Link": ", ".join(links)} if links else {}
    return Reply(200, {key: items[start : start + per_page], "meta": {"pagination": pagination}}, headers)


def _ids(call: Call) -> list[int] | None:
    values = call.query.get("id")
    if values is None:
        return None
    if not all(v.isdigit() for v in values):
        raise invalid_input("id", "id must be an integer")
    return [int(v) for v in values]


# --- handlers --------------------------------------------------------------------------------


def list_actions(emulator: Emulator, call: Call) -> Reply:
    ids = _ids(call)
    if ids is None:
        # Listing every action of a project was removed on 2025-01-30; ids are required.
        raise invalid_input("id", "id is required")
    return page(call, "actions", _filter_status(call, emulator.actions(call.project, ids, None, None)), _ACTION_SORT)


_ACTION_SORT = ("id", "command", "status", "started", "finished")


def _filter_status(call: Call, actions: list[Json]) -> list[Json]:
    statuses = call.query.get("status")
    return [a for a in actions if not statuses or a["status"] in statuses]


def get_action(emulator: Emulator, call: Call) -> Reply:
    return Reply(200, {"action": emulator.action(call.project, call.id(), None, None)})


def resource_actions(resource: str) -> tuple[Handler, Handler, Handler, Handler]:
    """GET /<resources>/actions[/{id}] and /<resources>/{id}/actions[/{action_id}]."""

    def exists(emulator: Emulator, call: Call) -> int:
        resource_id = call.id()
        {"server": emulator.server, "firewall": emulator.firewall, "image": emulator.image}[resource](
            call.project, resource_id
        )
        return resource_id

    def all_of_kind(emulator: Emulator, call: Call) -> Reply:
        found = emulator.actions(call.project, _ids(call), resource, None)
        return page(call, "actions", _filter_status(call, found), _ACTION_SORT)

    def one_of_kind(emulator: Emulator, call: Call) -> Reply:
        return Reply(200, {"action": emulator.action(call.project, call.id(), resource, None)})

    def of_resource(emulator: Emulator, call: Call) -> Reply:
        found = emulator.actions(call.project, None, resource, exists(emulator, call))
        return page(call, "actions", _filter_status(call, found), _ACTION_SORT)

    def one_of_resource(emulator: Emulator, call: Call) -> Reply:
        action = emulator.action(call.project, call.id("action_id"), resource, exists(emulator, call))
        return Reply(200, {"action": action})

    return all_of_kind, one_of_kind, of_resource, one_of_resource


def list_servers(emulator: Emulator, call: Call) -> Reply:
    servers = emulator.list_servers(
        call.project, call.one("name"), call.one("label_selector"), call.query.get("status", [])
    )
    return page(call, "servers", servers)


def create_server(emulator: Emulator, call: Call) -> Reply:
    return Reply(201, emulator.create_server(call.project, schemas.parse(schemas.CreateServer, call.body)))


def get_server(emulator: Emulator, call: Call) -> Reply:
    return Reply(200, {"server": emulator.server_json(call.project, emulator.server(call.project, call.id()))})


def update_server(emulator: Emulator, call: Call) -> Reply:
    body = schemas.parse(schemas.UpdateNameLabels, call.body)
    return Reply(200, emulator.update_server(call.project, call.id(), body))


def delete_server(emulator: Emulator, call: Call) -> Reply:
    return Reply(200, emulator.delete_server(call.project, call.id()))


def server_action(emulator: Emulator, call: Call) -> Reply:
    name: str = call.request.path_params["action"]
    project, server_id = call.project, call.id()
    if name in POWER_ACTIONS:
        return Reply(201, emulator.server_action(project, server_id, POWER_ACTIONS[name]))
    if name == "change_protection":
        return Reply(
            201, emulator.change_protection(project, server_id, schemas.parse(schemas.ChangeProtection, call.body))
        )
    if name == "change_type":
        return Reply(201, emulator.change_type(project, server_id, schemas.parse(schemas.ChangeType, call.body)))
    if name == "create_image":
        return Reply(
            201, emulator.create_image(project, server_id, schemas.parse(schemas.CreateImage, call.body or {}))
        )
    if name == "rebuild":
        return Reply(201, emulator.rebuild(project, server_id, schemas.parse(schemas.Rebuild, call.body)))
    if name == "enable_backup":
        return Reply(201, emulator.enable_backup(project, server_id))
    if name == "disable_backup":
        return Reply(201, emulator.disable_backup(project, server_id))
    emulator.server(project, server_id)
    raise ApiError("unsupported_error", f"server action {name!r} is not emulated")


def list_ssh_keys(emulator: Emulator, call: Call) -> Reply:
    keys = emulator.list_ssh_keys(call.project, call.one("name"), call.one("fingerprint"), call.one("label_selector"))
    return page(call, "ssh_keys", keys)


def create_ssh_key(emulator: Emulator, call: Call) -> Reply:
    return Reply(201, emulator.create_ssh_key(call.project, schemas.parse(schemas.CreateSshKey, call.body)))


def get_ssh_key(emulator: Emulator, call: Call) -> Reply:
    return Reply(200, {"ssh_key": ssh_key_view(emulator.ssh_key(call.project, call.id()))})


def update_ssh_key(emulator: Emulator, call: Call) -> Reply:
    body = schemas.parse(schemas.UpdateNameLabels, call.body)
    return Reply(200, emulator.update_ssh_key(call.project, call.id(), body))


def delete_ssh_key(emulator: Emulator, call: Call) -> Reply:
    emulator.delete_ssh_key(call.project, call.id())
    return Reply(204, None)


def list_images(emulator: Emulator, call: Call) -> Reply:
    return page(call, "images", emulator.list_images(call.project, call.query))


def get_image(emulator: Emulator, call: Call) -> Reply:
    return Reply(200, {"image": emulator.image(call.project, call.id())})


def update_image(emulator: Emulator, call: Call) -> Reply:
    return Reply(200, emulator.update_image(call.project, call.id(), schemas.parse(schemas.UpdateImage, call.body)))


def delete_image(emulator: Emulator, call: Call) -> Reply:
    emulator.delete_image(call.project, call.id())
    return Reply(204, None)


def list_firewalls(emulator: Emulator, call: Call) -> Reply:
    return page(call, "firewalls", emulator.list_firewalls(call.project, call.one("name"), call.one("label_selector")))


def create_firewall(emulator: Emulator, call: Call) -> Reply:
    return Reply(201, emulator.create_firewall(call.project, schemas.parse(schemas.CreateFirewall, call.body)))


def get_firewall(emulator: Emulator, call: Call) -> Reply:
    firewall = emulator.firewall(call.project, call.id())
    return Reply(200, {"firewall": emulator.firewall_json(call.project, firewall)})


def update_firewall(emulator: Emulator, call: Call) -> Reply:
    body = schemas.parse(schemas.UpdateFirewall, call.body)
    return Reply(200, emulator.update_firewall(call.project, call.id(), body))


def delete_firewall(emulator: Emulator, call: Call) -> Reply:
    emulator.delete_firewall(call.project, call.id())
    return Reply(204, None)


def firewall_action(emulator: Emulator, call: Call) -> Reply:
    name: str = call.request.path_params["action"]
    project, firewall_id = call.project, call.id()
    if name == "set_rules":
        return Reply(201, emulator.set_rules(project, firewall_id, schemas.parse(schemas.SetRules, call.body)))
    if name == "apply_to_resources":
        return Reply(201, emulator.apply_to_resources(project, firewall_id, schemas.parse(schemas.ApplyTo, call.body)))
    if name == "remove_from_resources":
        body = schemas.parse(schemas.RemoveFrom, call.body)
        return Reply(201, emulator.remove_from_resources(project, firewall_id, body))
    emulator.firewall(project, firewall_id)
    raise ApiError("unsupported_error", f"firewall action {name!r} is not emulated")


def list_server_types(emulator: Emulator, call: Call) -> Reply:
    moment, name = now(), call.one("name")
    # Past `unavailable_after` everywhere, a type leaves the listing (GET by id still answers); a
    # type out of stock stays listed, unavailable where it is out.
    types = [
        catalog.server_type_view(st, moment, emulator.stock)
        for st in HETZNER.server_types
        if st.orderable_anywhere(moment) and (name is None or st.name == name)
    ]
    return page(call, "server_types", types)


def get_server_type(emulator: Emulator, call: Call) -> Reply:
    found = HETZNER.server_type(call.id())
    if found is None:
        raise not_found("server_type")
    return Reply(200, {"server_type": catalog.server_type_view(found, now(), emulator.stock)})


def list_locations(emulator: Emulator, call: Call) -> Reply:
    name = call.one("name")
    locations = [catalog.location_view(loc) for loc in HETZNER.locations if name is None or loc.name == name]
    return page(call, "locations", locations, ("id", "name"))


def get_location(emulator: Emulator, call: Call) -> Reply:
    found = HETZNER.location(call.id())
    if found is None:
        raise not_found("location")
    return Reply(200, {"location": catalog.location_view(found)})


def _zone_ref(call: Call) -> str:
    value: str = call.request.path_params["zone"]
    return value


def _rrset_ref(call: Call) -> tuple[str, str]:
    return call.request.path_params["name"], call.request.path_params["type"]


def list_zones(emulator: Emulator, call: Call) -> Reply:
    zones = emulator.zones.list_zones(call.project, call.one("name"), call.one("mode"), call.one("label_selector"))
    return page(call, "zones", zones, ("id", "name", "created", "ttl"))


def create_zone(emulator: Emulator, call: Call) -> Reply:
    return Reply(201, emulator.zones.create_zone(call.project, schemas.parse(schemas.CreateZone, call.body)))


def get_zone(emulator: Emulator, call: Call) -> Reply:
    return Reply(200, {"zone": zone_view(emulator.zones.zone(call.project, _zone_ref(call)))})


def update_zone(emulator: Emulator, call: Call) -> Reply:
    body = schemas.parse(schemas.UpdateLabels, call.body)
    return Reply(200, emulator.zones.update_zone(call.project, _zone_ref(call), body))


def delete_zone(emulator: Emulator, call: Call) -> Reply:
    return Reply(200, emulator.zones.delete_zone(call.project, _zone_ref(call)))


def export_zonefile(emulator: Emulator, call: Call) -> Reply:
    return Reply(200, emulator.zones.export_zonefile(call.project, _zone_ref(call)))


def zone_action(emulator: Emulator, call: Call) -> Reply:
    name: str = call.request.path_params["action"]
    return Reply(201, emulator.zones.zone_action(call.project, _zone_ref(call), name, call.body or {}))


def zone_actions(emulator: Emulator, call: Call) -> Reply:
    zone = emulator.zones.zone(call.project, _zone_ref(call))
    found = emulator.actions(call.project, None, "zone", zone.id)
    return page(call, "actions", _filter_status(call, found), _ACTION_SORT)


def zone_action_by_id(emulator: Emulator, call: Call) -> Reply:
    zone = emulator.zones.zone(call.project, _zone_ref(call))
    return Reply(200, {"action": emulator.action(call.project, call.id("action_id"), "zone", zone.id)})


def list_rrsets(emulator: Emulator, call: Call) -> Reply:
    zone = emulator.zones.primary(call.project, _zone_ref(call))
    rrsets = emulator.zones.list_rrsets(zone, call.one("name"), call.query.get("type", []), call.one("label_selector"))
    return page(call, "rrsets", rrsets, ("id", "name", "type", "ttl"), MAX_RRSETS_PER_PAGE)


def create_rrset(emulator: Emulator, call: Call) -> Reply:
    body = schemas.parse(schemas.CreateRRSet, call.body)
    return Reply(201, emulator.zones.create_rrset(call.project, _zone_ref(call), body))


def get_rrset(emulator: Emulator, call: Call) -> Reply:
    zone = emulator.zones.primary(call.project, _zone_ref(call))
    return Reply(200, {"rrset": rrset_view(zone, emulator.zones.rrset(zone, *_rrset_ref(call)))})


def update_rrset(emulator: Emulator, call: Call) -> Reply:
    body = schemas.parse(schemas.UpdateLabels, call.body)
    return Reply(200, emulator.zones.update_rrset(call.project, _zone_ref(call), *_rrset_ref(call), body))


def delete_rrset(emulator: Emulator, call: Call) -> Reply:
    return Reply(200, emulator.zones.delete_rrset(call.project, _zone_ref(call), *_rrset_ref(call)))


def rrset_action(emulator: Emulator, call: Call) -> Reply:
    name: str = call.request.path_params["action"]
    zone, rrset = _zone_ref(call), _rrset_ref(call)
    return Reply(201, emulator.zones.rrset_action(call.project, zone, *rrset, name, call.body or {}))


def datacenters_gone(emulator: Emulator, call: Call) -> Reply:
    raise ApiError(
        "deprecated_api_endpoint", "API functionality was removed", {"announcement": catalog.DATACENTERS_GONE}
    )


# --- the application -------------------------------------------------------------------------


def token_digest(token: str) -> str:
    """How /_lab/requests names a token without showing it."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def create_app(config: EmulatorConfig, backend: MachineBackend | None = None) -> Starlette:
    emulator = Emulator(config, backend if backend is not None else RecordingBackend())
    tokens: dict[str, Token] = {t.token.get_secret_value(): t for t in config.tokens}
    buckets = {project: Bucket(config.rate_limit) for project in {t.project for t in config.tokens}}
    uses = {secret: TokenUse(t.project) for secret, t in tokens.items()}
    unauthenticated = Counter[str]()

    def api(handler: Handler) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            headers = {"X-Correlation-Id": secrets.token_hex(8)}
            route = f"{request.method} {request.scope['route'].path}"
            scheme, _, secret = request.headers.get("authorization", "").partition(" ")
            token = tokens.get(secret) if scheme.lower() == "bearer" else None
            if token is None:
                unauthenticated[route] += 1
                return _error(ApiError("unauthorized", "unable to authenticate"), headers)
            bucket, use = buckets[token.project], uses[secret]
            if token.read_only and request.method != "GET":
                use.refused_writes += 1
                return _error(ApiError("token_readonly", "the token is only allowed to perform GET requests"), headers)
            allowed = bucket.take()
            headers |= bucket.headers()
            use.requests += 1
            use.by_route[route] += 1
            if not allowed:
                use.rate_limited += 1
                limit = config.rate_limit.limit
                return _error(ApiError("rate_limit_exceeded", f"limit of {limit} requests per hour reached"), headers)
            try:
                body = await _body(request)
                reply = handler(emulator, Call(request, token.project, body))
            except ApiError as error:
                return _error(error, headers)
            headers |= reply.headers
            if reply.body is None:
                return Response(status_code=reply.status, headers=headers)
            return JSONResponse(reply.body, status_code=reply.status, headers=headers)

        return endpoint

    async def lab_stock(request: Request) -> Response:
        """PUT {"sold_out": [{"server_type", "location"}, ...]}: what Hetzner has run out of, from now on."""
        if request.method == "PUT":
            try:
                change = StockChange.model_validate_json(await request.body())
            except ValidationError as error:
                return JSONResponse({"error": str(error)}, status_code=400)
            emulator.stock = Stock((entry.server_type, entry.location) for entry in change.sold_out)
        entries = sorted(emulator.stock.sold_out)
        return JSONResponse({"sold_out": [{"server_type": st, "location": loc} for st, loc in entries]})

    async def lab_backup_window(request: Request) -> Response:
        """POST: every server with backups on gets its daily backup now."""
        return JSONResponse({"backups": emulator.backup_window()})

    async def lab_requests(request: Request) -> Response:
        return JSONResponse(
            {
                "tokens": [
                    {
                        "token_sha256": token_digest(secret),
                        "project": use.project,
                        "requests": use.requests,
                        "rate_limited": use.rate_limited,
                        "refused_writes": use.refused_writes,
                        "by_route": dict(use.by_route),
                    }
                    for secret, use in uses.items()
                ],
                "unauthenticated": dict(unauthenticated),
            }
        )

    servers = resource_actions("server")
    firewalls = resource_actions("firewall")
    images = resource_actions("image")
    zones = resource_actions("zone")
    table: list[tuple[str, str, Handler]] = [
        ("GET", "/actions", list_actions),
        ("GET", "/actions/{id:int}", get_action),
        ("GET", "/servers", list_servers),
        ("POST", "/servers", create_server),
        ("GET", "/servers/actions", servers[0]),
        ("GET", "/servers/actions/{id:int}", servers[1]),
        ("GET", "/servers/{id:int}", get_server),
        ("PUT", "/servers/{id:int}", update_server),
        ("DELETE", "/servers/{id:int}", delete_server),
        ("GET", "/servers/{id:int}/actions", servers[2]),
        ("GET", "/servers/{id:int}/actions/{action_id:int}", servers[3]),
        ("POST", "/servers/{id:int}/actions/{action}", server_action),
        ("GET", "/firewalls", list_firewalls),
        ("POST", "/firewalls", create_firewall),
        ("GET", "/firewalls/actions", firewalls[0]),
        ("GET", "/firewalls/actions/{id:int}", firewalls[1]),
        ("GET", "/firewalls/{id:int}", get_firewall),
        ("PUT", "/firewalls/{id:int}", update_firewall),
        ("DELETE", "/firewalls/{id:int}", delete_firewall),
        ("GET", "/firewalls/{id:int}/actions", firewalls[2]),
        ("GET", "/firewalls/{id:int}/actions/{action_id:int}", firewalls[3]),
        ("POST", "/firewalls/{id:int}/actions/{action}", firewall_action),
        ("GET", "/ssh_keys", list_ssh_keys),
        ("POST", "/ssh_keys", create_ssh_key),
        ("GET", "/ssh_keys/{id:int}", get_ssh_key),
        ("PUT", "/ssh_keys/{id:int}", update_ssh_key),
        ("DELETE", "/ssh_keys/{id:int}", delete_ssh_key),
        ("GET", "/images", list_images),
        ("GET", "/images/actions", images[0]),
        ("GET", "/images/actions/{id:int}", images[1]),
        ("GET", "/images/{id:int}", get_image),
        ("PUT", "/images/{id:int}", update_image),
        ("DELETE", "/images/{id:int}", delete_image),
        ("GET", "/images/{id:int}/actions", images[2]),
        ("GET", "/images/{id:int}/actions/{action_id:int}", images[3]),
        ("GET", "/server_types", list_server_types),
        ("GET", "/server_types/{id:int}", get_server_type),
        ("GET", "/locations", list_locations),
        ("GET", "/locations/{id:int}", get_location),
        ("GET", "/zones", list_zones),
        ("POST", "/zones", create_zone),
        ("GET", "/zones/actions", zones[0]),
        ("GET", "/zones/actions/{id:int}", zones[1]),
        ("GET", "/zones/{zone}", get_zone),
        ("PUT", "/zones/{zone}", update_zone),
        ("DELETE", "/zones/{zone}", delete_zone),
        ("GET", "/zones/{zone}/zonefile", export_zonefile),
        ("GET", "/zones/{zone}/actions", zone_actions),
        ("GET", "/zones/{zone}/actions/{action_id:int}", zone_action_by_id),
        ("POST", "/zones/{zone}/actions/{action}", zone_action),
        ("GET", "/zones/{zone}/rrsets", list_rrsets),
        ("POST", "/zones/{zone}/rrsets", create_rrset),
        ("GET", "/zones/{zone}/rrsets/{name}/{type}", get_rrset),
        ("PUT", "/zones/{zone}/rrsets/{name}/{type}", update_rrset),
        ("DELETE", "/zones/{zone}/rrsets/{name}/{type}", delete_rrset),
        ("POST", "/zones/{zone}/rrsets/{name}/{type}/actions/{action}", rrset_action),
        ("GET", "/datacenters", datacenters_gone),
        ("GET", "/datacenters/{id:int}", datacenters_gone),
    ]
    routes: list[BaseRoute] = [Route(f"/v1{path}", api(handler), methods=[method]) for method, path, handler in table]
    routes.append(Route("/_lab/requests", lab_requests, methods=["GET"]))
    routes.append(Route("/_lab/stock", lab_stock, methods=["GET", "PUT"]))
    routes.append(Route("/_lab/backup_window", lab_backup_window, methods=["POST"]))

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await emulator.resume()
        try:
            yield
        finally:
            await emulator.stop()

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: _http_error})
    app.state.emulator = emulator
    return app


async def _body(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError as error:
        raise ApiError("json_error", "request body is not valid JSON") from error


def _error(error: ApiError, headers: dict[str, str]) -> Response:
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


async def _http_error(_request: Request, _exc: Exception) -> Response:
    # Paths and methods that do not exist answer in Hetzner's format too.
    error = not_found("resource")
    return JSONResponse(error.body(), status_code=error.status)
