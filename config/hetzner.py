"""Hetzner Cloud's catalogue (config/hetzner.yaml): locations and server types, validated at load.

The one source of what Hetzner offers: the program's settings and the policy pack check names
against it, the provisioner's plans are checked against it, and the lab's emulation of Hetzner's API
serves it. Live stock (`server_types[].locations[].available`) is not in it: that is Hetzner's answer.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal, Self

import yaml
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

CATALOG_FILE = Path(__file__).with_name("hetzner.yaml")
Architecture = Literal["x86", "arm"]
Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{1,30}$")]


class CatalogError(ValueError):
    """The catalogue file is invalid; the message names the file and every offending field."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Location(_Frozen):
    id: int = Field(ge=1)
    name: Name
    description: str
    country: str = Field(pattern=r"^[A-Z]{2}$")
    city: str
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    network_zone: str

    @property
    def in_eu(self) -> bool:
        return self.network_zone == "eu-central"


class Deprecation(_Frozen):
    announced: AwareDatetime
    unavailable_after: AwareDatetime

    def passed(self, now: datetime) -> bool:
        return now > self.unavailable_after


class ServerType(_Frozen):
    id: int = Field(ge=1)
    name: Name
    category: Literal["cost_optimized", "regular_purpose", "general_purpose"]
    cores: int = Field(ge=1)
    memory: float = Field(gt=0)
    disk: int = Field(ge=1)
    cpu_type: Literal["shared", "dedicated"] = "shared"
    architecture: Architecture = "x86"
    storage_type: Literal["local", "network"] = "local"
    # Net EUR a month in the EU locations, and in ash, hil and sin where it is sold there.
    price_eu: Decimal = Field(gt=0)
    price_overseas: Decimal | None = Field(default=None, gt=0)
    # Where Hetzner sells it, and where `deprecation` applies.
    locations: tuple[Name, ...] = Field(min_length=1)
    deprecation: Deprecation | None = None
    deprecated_in: tuple[Name, ...] = ()

    @model_validator(mode="after")
    def _deprecated_where_sold(self) -> Self:
        if not set(self.deprecated_in) <= set(self.locations):
            raise ValueError(f"deprecated_in names a location {self.name} is not sold in")
        if (self.deprecation is None) != (not self.deprecated_in):
            raise ValueError("deprecation and deprecated_in go together")
        return self

    def deprecation_in(self, location: str) -> Deprecation | None:
        return self.deprecation if location in self.deprecated_in else None

    def orderable_in(self, location: str, now: datetime) -> bool:
        """Sold there and not past a deprecation there (whether Hetzner has stock is its live answer)."""
        if location not in self.locations:
            return False
        deprecation = self.deprecation_in(location)
        return deprecation is None or not deprecation.passed(now)

    def orderable_anywhere(self, now: datetime) -> bool:
        return any(self.orderable_in(location, now) for location in self.locations)

    def deprecated_everywhere(self) -> Deprecation | None:
        """The type-wide deprecation Hetzner still reports, only once every location has one."""
        return self.deprecation if set(self.deprecated_in) >= set(self.locations) else None

    def monthly_price(self, location: Location) -> Decimal:
        if location.in_eu or self.price_overseas is None:
            return self.price_eu
        return self.price_overseas


class Pricing(_Frozen):
    """What keeping copies of a server's disk costs (net EUR)."""

    # Hetzner's automatic backups: this share of the server's monthly price, for seven daily slots.
    backup_percentage: Decimal = Field(gt=0, le=100)
    # A snapshot, per GB of its image size a month.
    snapshot_per_gb_month: Decimal = Field(gt=0)

    def backups(self, monthly_price: Decimal) -> Decimal:
        return monthly_price * self.backup_percentage / 100


class HetznerCatalog(_Frozen):
    locations: tuple[Location, ...] = Field(min_length=1)
    pricing: Pricing
    # Named deprecations, which the server types refer to (in the file, by YAML anchor).
    deprecations: dict[Name, Deprecation] = Field(default_factory=dict)
    server_types: tuple[ServerType, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        for kind, items in (("location", self.locations), ("server type", self.server_types)):
            for key in ("id", "name"):
                values = [getattr(item, key) for item in items]
                if repeated := sorted({value for value in values if values.count(value) > 1}, key=str):
                    raise ValueError(f"{kind} {key} used twice: {', '.join(map(str, repeated))}")
        known = {location.name for location in self.locations}
        named = set(self.deprecations.values())
        for server_type in self.server_types:
            if unknown := sorted(set(server_type.locations) - known):
                raise ValueError(f"server type {server_type.name}: unknown location {', '.join(unknown)}")
            if server_type.deprecation is not None and server_type.deprecation not in named:
                raise ValueError(f"server type {server_type.name}: its deprecation is not one of `deprecations`")
        return self

    @property
    def location_names(self) -> tuple[str, ...]:
        return tuple(location.name for location in self.locations)

    def location(self, ref: str | int) -> Location | None:
        """A location by name or id."""
        text = str(ref)
        return next((location for location in self.locations if text in (location.name, str(location.id))), None)

    def server_type(self, ref: str | int) -> ServerType | None:
        """A server type by name or id."""
        text = str(ref)
        return next((found for found in self.server_types if text in (found.name, str(found.id))), None)


def load_catalog(path: Path = CATALOG_FILE) -> HetznerCatalog:
    try:
        return HetznerCatalog.model_validate(yaml.safe_load(path.read_text()))
    except ValidationError as error:
        problems = [
            f"{'.'.join(str(part) for part in problem['loc']) or '(catalogue)'}: "
            + problem["msg"].removeprefix("Value error, ")
            for problem in error.errors()
        ]
        raise CatalogError(f"{path.name}: invalid Hetzner catalogue:\n  " + "\n  ".join(problems)) from None


HETZNER = load_catalog()
