"""Where a new customer's server goes: per plan, an ordered preference of (server type, location).

The provisioner takes the first choice Hetzner has available when the customer signs up
(provisioner/placement.py), records it for the customer and never changes it for a running server.
Each choice must be one Hetzner's catalogue (config/hetzner.yaml) sells; whether it is in stock is
Hetzner's answer at signup.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from config.hetzner import HETZNER

# The plan of a signup that names none.
DEFAULT_PLAN = "standard"
PlanName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,38}[a-z0-9]$")]


class Choice(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    server_type: str
    location: str

    @model_validator(mode="after")
    def _sold_there(self) -> Self:
        server_type = HETZNER.server_type(self.server_type)
        if server_type is None or server_type.name != self.server_type:
            raise ValueError(f"{self.server_type!r} is not a server type of Hetzner's catalogue (config/hetzner.yaml)")
        if self.location not in server_type.locations:
            raise ValueError(
                f"Hetzner does not sell {self.server_type} in {self.location!r}; it sells it in "
                f"{', '.join(server_type.locations)}"
            )
        return self

    def __str__(self) -> str:
        return f"{self.server_type} in {self.location}"


def _distinct(choices: tuple[Choice, ...]) -> tuple[Choice, ...]:
    if repeated := sorted({str(choice) for choice in choices if choices.count(choice) > 1}):
        raise ValueError(f"{', '.join(repeated)} listed twice")
    return choices


# First choice first; at least one.
Preferences = Annotated[tuple[Choice, ...], Field(min_length=1), AfterValidator(_distinct)]


def _eu(server_type: str) -> tuple[Choice, ...]:
    return tuple(Choice(server_type=server_type, location=location) for location in ("fsn1", "nbg1", "hel1"))


# The default plan: 2 vCPU, 4 GB, x86 (a resize cannot change the architecture), in the EU. Not the
# cost-optimised cx23: Hetzner's plan pages showed every cost-optimised type unavailable after its
# June 2026 price change, and a default must not rest on stock that is not there.
DEFAULT_PLANS: Mapping[str, Preferences] = {DEFAULT_PLAN: _eu("cpx22")}
