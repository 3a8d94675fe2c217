"""What Hetzner offers every project alike: locations, datacenters, server types, system images.

Sources, read in 2026 (no package on PyPI or npm ships Hetzner's OpenAPI description):
- hcloud-go v2.47.0 `hcloud/server_test.go`: a real server response of 2025-12-15 with cx22 (id 104,
  category `cost_optimized`, deprecated in fsn1/nbg1/hel1, announced 2025-10-16T06:00:00Z,
  unavailable after 2025-12-31T23:59:59Z, 3.29 EUR net a month, 20 TiB included traffic), location
  hel1 (id 3) and image debian-13 (id 310554929).
- Changelog entries cited by the clients: 2025-09-24 per-location server types, 2025-10-16 server
  types deprecated (cx22-cx52 everywhere, cpx11-cpx51 in the EU locations), 2026-04-01
  `locations[].available`/`recommended` on server types, 2026-06-02 datacenters deprecated
  (`server_types` no longer returned after 2026-10-01), 2026-07-01 `datacenter` removed from servers.
- Errors Hetzner returned in 2025-12 (terraform-provider-hcloud and hcloud-python users' reports):
  `unsupported location for server type` (invalid_input) for cax11 in ash, cpx11 orderable in ash.
- The CLI's end-to-end defaults (image ubuntu-24.04 id 161547269, cpx22 -> cpx32) and the
  packer plugin's fixtures (cpx22 id 109, cpx32 id 110).
The other ids follow Hetzner's numbering as far as known; specs are Hetzner's published ones;
monthly prices are indicative (third-party snapshots of hetzner.com/cloud after the 2026 price
changes), since nothing of the program reads them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict

Architecture = Literal["x86", "arm"]
EU = ("fsn1", "nbg1", "hel1")
US = ("ash", "hil")
EVERYWHERE = (*EU, *US, "sin")
VAT = Decimal("1.19")
HOURS_PER_MONTH = Decimal(730)
TIB = 1024**4


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class Location(_Frozen):
    id: int
    name: str
    description: str
    country: str
    city: str
    latitude: float
    longitude: float
    network_zone: str
    datacenter_id: int
    datacenter_name: str
    datacenter_description: str


def _location(
    id: int,
    name: str,
    description: str,
    country: str,
    city: str,
    lat: float,
    lon: float,
    zone: str,
    dc_id: int,
    dc: str,
    dc_description: str,
) -> Location:
    return Location(
        id=id,
        name=name,
        description=description,
        country=country,
        city=city,
        latitude=lat,
        longitude=lon,
        network_zone=zone,
        datacenter_id=dc_id,
        datacenter_name=dc,
        datacenter_description=dc_description,
    )


LOCATIONS: tuple[Location, ...] = (
    _location(1, "fsn1", "Falkenstein DC Park 1", "DE", "Falkenstein", 50.47612, 12.370071, "eu-central",
              4, "fsn1-dc14", "Falkenstein 1 virtual DC 14"),
    _location(2, "nbg1", "Nuremberg DC Park 1", "DE", "Nuremberg", 49.452102, 11.076665, "eu-central",
              2, "nbg1-dc3", "Nuremberg 1 virtual DC 3"),
    _location(3, "hel1", "Helsinki DC Park 1", "FI", "Helsinki", 60.169855, 24.938379, "eu-central",
              3, "hel1-dc2", "Helsinki 1 virtual DC 2"),
    _location(4, "ash", "Ashburn, VA", "US", "Ashburn, VA", 39.045821, -77.487073, "us-east",
              5, "ash-dc1", "Ashburn virtual DC 1"),
    _location(5, "hil", "Hillsboro, OR", "US", "Hillsboro, OR", 45.54222, -122.951924, "us-west",
              6, "hil-dc1", "Hillsboro virtual DC 1"),
    _location(6, "sin", "Singapore", "SG", "Singapore", 1.283333, 103.833333, "ap-southeast",
              7, "sin-dc1", "Singapore virtual DC 1"),
)  # fmt: skip


class Deprecation(_Frozen):
    announced: datetime
    unavailable_after: datetime

    def passed(self, now: datetime) -> bool:
        return now > self.unavailable_after


DEPRECATED_2025_10_16 = Deprecation(
    announced=datetime(2025, 10, 16, 6, 0, tzinfo=UTC),
    unavailable_after=datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC),
)


class ServerType(_Frozen):
    id: int
    name: str
    category: str
    cores: int
    memory: float
    disk: int
    cpu_type: Literal["shared", "dedicated"]
    architecture: Architecture
    storage_type: Literal["local", "network"] = "local"
    # Net EUR a month in the EU, and in the US and Singapore where offered there.
    eu_monthly: Decimal
    overseas_monthly: Decimal | None = None
    locations: tuple[str, ...]
    deprecated_in: tuple[str, ...] = ()

    def deprecation_in(self, location: str) -> Deprecation | None:
        return DEPRECATED_2025_10_16 if location in self.deprecated_in else None

    def orderable_in(self, location: str, now: datetime) -> bool:
        if location not in self.locations:
            return False
        deprecation = self.deprecation_in(location)
        return deprecation is None or not deprecation.passed(now)

    def orderable_anywhere(self, now: datetime) -> bool:
        return any(self.orderable_in(location, now) for location in self.locations)

    def deprecation(self) -> Deprecation | None:
        """The type-wide deprecation Hetzner still reports, only once every location has one."""
        return DEPRECATED_2025_10_16 if set(self.deprecated_in) >= set(self.locations) else None

    def monthly(self, location: str) -> Decimal:
        if location in EU or self.overseas_monthly is None:
            return self.eu_monthly
        return self.overseas_monthly

    def included_traffic(self, location: str) -> int:
        return {"sin": TIB // 2, "ash": TIB, "hil": TIB}.get(location, 20 * TIB)


COST, REGULAR, GENERAL = "cost_optimized", "regular_purpose", "general_purpose"


def _type(
    id: int,
    name: str,
    category: str,
    cores: int,
    memory: float,
    disk: int,
    eu: str,
    *,
    overseas: str | None = None,
    arch: Architecture = "x86",
    where: tuple[str, ...] = EU,
    deprecated_in: tuple[str, ...] = (),
) -> ServerType:
    return ServerType(
        id=id,
        name=name,
        category=category,
        cores=cores,
        memory=memory,
        disk=disk,
        cpu_type="dedicated" if category == GENERAL else "shared",
        architecture=arch,
        eu_monthly=Decimal(eu),
        overseas_monthly=Decimal(overseas) if overseas else None,
        locations=where,
        deprecated_in=deprecated_in,
    )


SERVER_TYPES: tuple[ServerType, ...] = (
    # Cost-optimised x86, gen 3 (EU only), and their predecessors, unorderable since 2025-12-31.
    _type(114, "cx23", COST, 2, 4, 40, "5.99"),
    _type(115, "cx33", COST, 4, 8, 80, "8.99"),
    _type(116, "cx43", COST, 8, 16, 160, "16.49"),
    _type(117, "cx53", COST, 16, 32, 320, "29.99"),
    _type(104, "cx22", COST, 2, 4, 40, "3.29", deprecated_in=EU),
    _type(105, "cx32", COST, 4, 8, 80, "6.30", deprecated_in=EU),
    _type(106, "cx42", COST, 8, 16, 160, "16.40", deprecated_in=EU),
    _type(107, "cx52", COST, 16, 32, 320, "32.40", deprecated_in=EU),
    # Cost-optimised Arm (Ampere), EU only.
    _type(45, "cax11", COST, 2, 4, 40, "6.49", arch="arm"),
    _type(93, "cax21", COST, 4, 8, 80, "10.99", arch="arm"),
    _type(94, "cax31", COST, 8, 16, 160, "21.49", arch="arm"),
    _type(95, "cax41", COST, 16, 32, 320, "41.49", arch="arm"),
    # Regular performance (shared AMD): gen 2 in the EU; gen 1 deprecated there, still sold overseas.
    _type(108, "cpx12", REGULAR, 1, 2, 40, "11.99"),
    _type(109, "cpx22", REGULAR, 2, 4, 80, "19.99"),
    _type(110, "cpx32", REGULAR, 4, 8, 160, "35.99"),
    _type(111, "cpx42", REGULAR, 8, 16, 320, "69.99"),
    _type(112, "cpx52", REGULAR, 12, 24, 480, "100.99"),
    _type(113, "cpx62", REGULAR, 16, 32, 640, "130.49"),
    _type(22, "cpx11", REGULAR, 2, 2, 40, "4.99", overseas="17.99", where=EVERYWHERE, deprecated_in=EU),
    _type(23, "cpx21", REGULAR, 3, 4, 80, "9.49", overseas="32.49", where=EVERYWHERE, deprecated_in=EU),
    _type(24, "cpx31", REGULAR, 4, 8, 160, "16.49", overseas="62.99", where=EVERYWHERE, deprecated_in=EU),
    _type(25, "cpx41", REGULAR, 8, 16, 240, "30.49", overseas="120.99", where=EVERYWHERE, deprecated_in=EU),
    _type(26, "cpx51", REGULAR, 16, 32, 360, "60.49", overseas="238.49", where=EVERYWHERE, deprecated_in=EU),
    # Dedicated vCPU (AMD), everywhere.
    _type(96, "ccx13", GENERAL, 2, 8, 80, "43.49", overseas="54.49", where=EVERYWHERE),
    _type(97, "ccx23", GENERAL, 4, 16, 160, "86.49", overseas="108.49", where=EVERYWHERE),
    _type(98, "ccx33", GENERAL, 8, 32, 240, "138.99", overseas="173.99", where=EVERYWHERE),
    _type(99, "ccx43", GENERAL, 16, 64, 360, "276.49", overseas="345.99", where=EVERYWHERE),
    _type(100, "ccx53", GENERAL, 32, 128, 600, "533.99", overseas="667.49", where=EVERYWHERE),
    _type(101, "ccx63", GENERAL, 48, 192, 960, "853.99", overseas="1067.49", where=EVERYWHERE),
)


class SystemImage(_Frozen):
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
        for id, arch in ((x86_id, "x86"), (arm_id, "arm"))
    ]


# One image per name and architecture, as Hetzner lists them: a name alone matches both.
SYSTEM_IMAGES: tuple[SystemImage, ...] = (
    *_images("debian-12", "debian", "12", 114690387, 114690389, datetime(2023, 6, 13, 6, 0, tzinfo=UTC)),
    *_images("debian-13", "debian", "13", 310554929, 310554930, datetime(2025, 8, 18, 6, 15, tzinfo=UTC)),
    *_images("ubuntu-22.04", "ubuntu", "22.04", 67794396, 103908130, datetime(2022, 4, 21, 13, 32, tzinfo=UTC)),
    *_images("ubuntu-24.04", "ubuntu", "24.04", 161547269, 161547270, datetime(2024, 4, 25, 13, 26, tzinfo=UTC)),
)


def location_by_ref(ref: str | int) -> Location | None:
    text = str(ref)
    return next((loc for loc in LOCATIONS if text in (loc.name, str(loc.id))), None)


def server_type_by_ref(ref: str | int) -> ServerType | None:
    text = str(ref)
    return next((st for st in SERVER_TYPES if text in (st.name, str(st.id))), None)


def server_type_by_id(type_id: int) -> ServerType:
    found = server_type_by_ref(type_id)
    assert found is not None, f"server type {type_id} is not in the catalogue"
    return found


def system_image_by_id(image_id: int) -> SystemImage | None:
    return next((image for image in SYSTEM_IMAGES if image.id == image_id), None)


def money(value: Decimal, places: int) -> str:
    return f"{value:.{places}f}"


def server_type_view(server_type: ServerType, now: datetime) -> dict[str, object]:
    """A server type as GET /server_types shows it."""
    deprecation = server_type.deprecation()
    cheapest = {location: _recommended(location, now) for location in server_type.locations}
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
                "id": _location_named(location).id,
                "name": location,
                "deprecation": deprecation_view(server_type.deprecation_in(location)),
                "available": server_type.orderable_in(location, now),
                "recommended": cheapest[location] == server_type.id,
            }
            for location in server_type.locations
        ],
    }


def _recommended(location: str, now: datetime) -> int | None:
    """The cheapest type on sale in a location: the one Hetzner's console suggests first there."""
    on_sale = [st for st in SERVER_TYPES if st.orderable_in(location, now)]
    return min(on_sale, key=lambda st: st.monthly(location)).id if on_sale else None


def _price(server_type: ServerType, location: str) -> dict[str, object]:
    monthly = server_type.monthly(location)
    hourly = monthly / HOURS_PER_MONTH
    per_tb = Decimal("7.40") if location == "sin" else Decimal(1)
    return {
        "location": location,
        "price_hourly": {"net": money(hourly, 10), "gross": money(hourly * VAT, 16)},
        "price_monthly": {"net": money(monthly, 10), "gross": money(monthly * VAT, 16)},
        "included_traffic": server_type.included_traffic(location),
        "price_per_tb_traffic": {"net": money(per_tb, 10), "gross": money(per_tb * VAT, 16)},
    }


def _location_named(name: str) -> Location:
    found = location_by_ref(name)
    assert found is not None, f"location {name} is not in the catalogue"
    return found


def deprecation_view(deprecation: Deprecation | None) -> dict[str, str] | None:
    if deprecation is None:
        return None
    return {
        "announced": timestamp(deprecation.announced),
        "unavailable_after": timestamp(deprecation.unavailable_after),
    }


def location_view(location: Location) -> dict[str, object]:
    return location.model_dump(exclude={"datacenter_id", "datacenter_name", "datacenter_description"})


def datacenter_view(location: Location) -> dict[str, object]:
    """Datacenters without `server_types`, which Hetzner stopped returning after 2026-10-01."""
    return {
        "id": location.datacenter_id,
        "name": location.datacenter_name,
        "description": location.datacenter_description,
        "location": location_view(location),
    }


def timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")
