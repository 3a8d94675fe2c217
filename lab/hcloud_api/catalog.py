"""What Hetzner serves every project alike, as its API shows it: the platform's catalogue of locations
and server types (config/hetzner.yaml, the one source of it), the stock the lab sets, system images.

Stock is what Hetzner reports per type and location as `available` (the API's description: "whether
the Server Type is temporarily unavailable in this Location"): a type sold in a location, not past a
deprecation there, and not sold out there. Out of stock, a type stays listed, with `available` false,
and a create there answers `resource_unavailable` (412), as Hetzner does when it cannot place a server.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict

from config.hetzner import HETZNER, Architecture, Deprecation, Location, ServerType

VAT = Decimal("1.19")
HOURS_PER_MONTH = Decimal(730)
TIB = 1024**4
# Hetzner's metadata service still names a server's datacenter as its `availability-zone`; the API
# stopped naming datacenters (2026-07-01), so only the metadata service (lab/servers.py) needs these.
AVAILABILITY_ZONES = {
    "fsn1": "fsn1-dc14",
    "nbg1": "nbg1-dc3",
    "hel1": "hel1-dc2",
    "ash": "ash-dc1",
    "hil": "hil-dc1",
    "sin": "sin-dc1",
}
# GET /datacenters and /datacenters/{id} answer 410 since 2026-10-01.
DATACENTERS_GONE = "https://docs.hetzner.cloud/changelog#2026-06-02-datacenters-deprecated"


class Stock:
    """Which server types Hetzner has run out of where: set by the lab (PUT /_lab/stock)."""

    def __init__(self, sold_out: Iterable[tuple[str, str]] = ()) -> None:
        self.sold_out: frozenset[tuple[str, str]] = frozenset(sold_out)

    def available(self, server_type: ServerType, location: str, now: datetime) -> bool:
        return server_type.orderable_in(location, now) and (server_type.name, location) not in self.sold_out

    def recommended(self, location: str, now: datetime) -> int | None:
        """The cheapest type available in a location: the one Hetzner's console suggests first there."""
        where = location_named(location)
        on_sale = [st for st in HETZNER.server_types if self.available(st, location, now)]
        return min(on_sale, key=lambda st: st.monthly_price(where)).id if on_sale else None


class SystemImage(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    name: str
    description: str
    os_flavor: str
    os_version: str
    architecture: Architecture
    disk_size: float
    created: datetime


def _images(name: str, flavor: str, version: str, x86_id: int, arm_id: int, created: datetime) -> list[SystemImage]:
    description = f"{flavor.capitalize()} {version}"
    arches: tuple[tuple[int, Architecture], ...] = ((x86_id, "x86"), (arm_id, "arm"))
    return [
        SystemImage(
            id=id,
            name=name,
            description=description,
            os_flavor=flavor,
            os_version=version,
            architecture=arch,
            disk_size=5,
            created=created,
        )
        for id, arch in arches
    ]


# One image per name and architecture, as Hetzner lists them: a name alone matches both. Ids of
# hcloud-go's fixtures (debian-13 310554929) and the CLI's end-to-end defaults (ubuntu-24.04 161547269).
SYSTEM_IMAGES: tuple[SystemImage, ...] = (
    *_images("debian-12", "debian", "12", 114690387, 114690389, datetime(2023, 6, 13, 6, 0, tzinfo=UTC)),
    *_images("debian-13", "debian", "13", 310554929, 310554930, datetime(2025, 8, 18, 6, 15, tzinfo=UTC)),
    *_images("ubuntu-22.04", "ubuntu", "22.04", 67794396, 103908130, datetime(2022, 4, 21, 13, 32, tzinfo=UTC)),
    *_images("ubuntu-24.04", "ubuntu", "24.04", 161547269, 161547270, datetime(2024, 4, 25, 13, 26, tzinfo=UTC)),
)


def server_type_by_id(type_id: int) -> ServerType:
    found = HETZNER.server_type(type_id)
    assert found is not None, f"server type {type_id} is not in the catalogue"
    return found


def location_named(name: str) -> Location:
    found = HETZNER.location(name)
    assert found is not None, f"location {name} is not in the catalogue"
    return found


def system_image_by_id(image_id: int) -> SystemImage | None:
    return next((image for image in SYSTEM_IMAGES if image.id == image_id), None)


def money(value: Decimal, places: int) -> str:
    return f"{value:.{places}f}"


def included_traffic(location: str) -> int:
    return {"sin": TIB // 2, "ash": TIB, "hil": TIB}.get(location, 20 * TIB)


def server_type_view(server_type: ServerType, now: datetime, stock: Stock) -> dict[str, object]:
    """A server type as GET /server_types shows it."""
    deprecation = server_type.deprecated_everywhere()
    return {
        "id": server_type.id,
        "name": server_type.name,
        "description": server_type.name.upper(),
        "category": server_type.category,
        "cores": server_type.cores,
        "memory": server_type.memory,
        "disk": server_type.disk,
        "storage_type": server_type.storage_type,
        "cpu_type": server_type.cpu_type,
        "architecture": server_type.architecture,
        "deprecated": deprecation is not None,
        "deprecation": deprecation_view(deprecation),
        "included_traffic": 0,
        "prices": [_price(server_type, location) for location in server_type.locations],
        "locations": [
            {
                "id": location_named(location).id,
                "name": location,
                "deprecation": deprecation_view(server_type.deprecation_in(location)),
                "available": stock.available(server_type, location, now),
                "recommended": stock.recommended(location, now) == server_type.id,
            }
            for location in server_type.locations
        ],
    }


def _price(server_type: ServerType, location: str) -> dict[str, object]:
    monthly = server_type.monthly_price(location_named(location))
    hourly = monthly / HOURS_PER_MONTH
    per_tb = Decimal("7.40") if location == "sin" else Decimal(1)
    return {
        "location": location,
        "price_hourly": {"net": money(hourly, 10), "gross": money(hourly * VAT, 16)},
        "price_monthly": {"net": money(monthly, 10), "gross": money(monthly * VAT, 16)},
        "included_traffic": included_traffic(location),
        "price_per_tb_traffic": {"net": money(per_tb, 10), "gross": money(per_tb * VAT, 16)},
    }


def deprecation_view(deprecation: Deprecation | None) -> dict[str, str] | None:
    if deprecation is None:
        return None
    return {
        "announced": timestamp(deprecation.announced),
        "unavailable_after": timestamp(deprecation.unavailable_after),
    }


def location_view(location: Location) -> dict[str, object]:
    return location.model_dump()


def timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")
