"""Hetzner's metadata service for the lab's servers, at http://169.254.169.254/hetzner/v1/.

What cloud-init's Hetzner datasource reads (cloudinit/sources/DataSourceHetzner.py): the YAML
document at `/hetzner/v1/metadata` (`instance-id`, `hostname`, `public-keys`, `network-config`,
optionally `vendor_data`) and the raw user data at `/hetzner/v1/userdata`; it also probes
`/hetzner/v1/metadata/instance-id` to see whether the network is up already. The single values
are served too, as Hetzner documents them: `hostname`, `instance-id`, `public-ipv4`,
`availability-zone`, `region` as text, `public-keys` as a JSON list, `private-networks` as YAML.

`lab.servers` runs it in the router namespace, where every server's traffic to 169.254.169.254
arrives. A request is answered with the data of the server whose public address it comes from (its
IPv4 address, or any address of its IPv6 /64): the `ServerMetadata` the server's machine keeps in
`<servers>/<id>/metadata.json`, written from what the API emulator hands the machine backend.

`python -m lab.metadata --servers DIR --listen 169.254.169.254:80` serves it.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from pathlib import Path
from typing import Any

import uvicorn
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

ADDRESS = "169.254.169.254"
RECORD = "metadata.json"
# Hetzner's IPv6 configuration: the first address of the server's /64, behind the link-local gateway.
IPV6_GATEWAY = "fe80::1"


class ServerMetadata(BaseModel):
    """What the metadata service knows about one server."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    instance_id: int
    hostname: str
    mac_address: str
    public_ipv4: str | None
    ipv6_network: str | None
    public_keys: tuple[str, ...]
    user_data: str | None
    availability_zone: str
    region: str
    nameservers: tuple[str, ...]

    @property
    def ipv6_address(self) -> str | None:
        return None if self.ipv6_network is None else str(ipaddress.IPv6Network(self.ipv6_network)[1])

    def network_config(self) -> dict[str, Any]:
        """Hetzner's network-config (cloud-init's version 1): IPv4 by DHCP, the IPv6 address static."""
        subnets: list[dict[str, Any]] = []
        if self.public_ipv4 is not None:
            subnets.append({"ipv4": True, "type": "dhcp", "dns_nameservers": list(self.nameservers)})
        if self.ipv6_network is not None:
            prefix = ipaddress.IPv6Network(self.ipv6_network).prefixlen
            subnets.append(
                {"address": f"{self.ipv6_address}/{prefix}", "gateway": IPV6_GATEWAY, "ipv6": True, "type": "static"}
            )
        interface = {"mac_address": self.mac_address, "name": "eth0", "subnets": subnets, "type": "physical"}
        return {"config": [interface], "version": 1}

    def document(self) -> dict[str, Any]:
        return {
            "availability-zone": self.availability_zone,
            "hostname": self.hostname,
            "instance-id": self.instance_id,
            "local-ipv4": "",
            "network-config": self.network_config(),
            "public-ipv4": self.public_ipv4 or "",
            "public-keys": list(self.public_keys),
            "region": self.region,
        }

    def answers(self, source: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        if isinstance(source, ipaddress.IPv4Address):
            return self.public_ipv4 is not None and source == ipaddress.IPv4Address(self.public_ipv4)
        return self.ipv6_network is not None and source in ipaddress.IPv6Network(self.ipv6_network)


def write_record(directory: Path, record: ServerMetadata) -> None:
    """Replace the record atomically: the service may read it at any moment."""
    staged = directory / f".{RECORD}.new"
    staged.write_text(record.model_dump_json(indent=2) + "\n")
    staged.replace(directory / RECORD)


def find(servers: Path, source: str) -> ServerMetadata | None:
    """The server a request comes from, by its source address."""
    address = ipaddress.ip_address(source)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for path in sorted(servers.glob(f"*/{RECORD}")):
        try:
            record = ServerMetadata.model_validate_json(path.read_text())
        except (OSError, ValidationError):
            continue  # a server being removed
        if record.answers(address):
            return record
    return None


def _yaml(value: Any) -> PlainTextResponse:
    return PlainTextResponse(yaml.safe_dump(value, default_flow_style=False, sort_keys=True))


def create_app(servers: Path) -> Starlette:
    def caller(request: Request) -> ServerMetadata | None:
        return find(servers, request.client.host) if request.client is not None else None

    async def metadata(request: Request) -> Response:
        record = caller(request)
        if record is None:
            return PlainTextResponse("not found\n", status_code=404)
        return _yaml(record.document())

    async def field(request: Request) -> Response:
        record = caller(request)
        name = request.path_params["name"]
        if record is None:
            return PlainTextResponse("not found\n", status_code=404)
        if name == "public-keys":
            return Response(json.dumps(list(record.public_keys)), media_type="application/json")
        if name == "private-networks":
            return _yaml([])
        value = record.document().get(name)
        if value is None or isinstance(value, dict | list):
            return PlainTextResponse("not found\n", status_code=404)
        return PlainTextResponse(str(value))

    async def userdata(request: Request) -> Response:
        record = caller(request)
        if record is None:
            return PlainTextResponse("not found\n", status_code=404)
        return PlainTextResponse(record.user_data or "")

    return Starlette(
        routes=[
            Route("/hetzner/v1/metadata", metadata, methods=["GET"]),
            Route("/hetzner/v1/metadata/{name}", field, methods=["GET"]),
            Route("/hetzner/v1/userdata", userdata, methods=["GET"]),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.metadata", description=__doc__)
    parser.add_argument("--servers", type=Path, required=True, help="directory of the servers' records")
    parser.add_argument("--listen", default=f"{ADDRESS}:80", help="HOST:PORT")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    # Each request is logged with its source: what the servers asked for, and when.
    uvicorn.run(create_app(args.servers), host=host, port=int(port), log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
