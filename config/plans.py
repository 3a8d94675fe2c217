"""The plans the platform sells (`CLAW_PLANS`): per plan, the Stripe prices that select it and where its
servers go, an ordered preference of (server type, location).

A subscription's price selects its plan (provisioner/webhook.py); with no prices configured at all,
every subscription is on the default plan. A new customer is placed on their plan's first choice
Hetzner has available when they sign up; a change of plan changes a running server's type, never its
location (provisioner/placement.py). Each choice must be one Hetzner's catalogue (config/hetzner.yaml)
sells there; whether it is in stock is Hetzner's answer at the time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Self, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from config.hetzner import HETZNER

# Every subscription's plan when no plan names a Stripe price.
DEFAULT_PLAN = "standard"
PlanName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,38}[a-z0-9]$")]
# A Stripe price's id (`price_...`) or its lookup key.
PriceKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$")]


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


Item = TypeVar("Item")


def _distinct(items: tuple[Item, ...]) -> tuple[Item, ...]:
    if repeated := sorted({str(item) for item in items if items.count(item) > 1}):
        raise ValueError(f"{', '.join(repeated)} listed twice")
    return items


class Plan(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # The Stripe prices (ids or lookup keys) whose subscriptions are on this plan.
    prices: Annotated[tuple[PriceKey, ...], AfterValidator(_distinct)] = ()
    # Where its servers go, first choice first.
    choices: Annotated[tuple[Choice, ...], Field(min_length=1), AfterValidator(_distinct)]


def _selectable(plans: dict[str, Plan]) -> dict[str, Plan]:
    """Every plan is one a subscription can be on, and a price selects one plan only."""
    if not any(plan.prices for plan in plans.values()):
        if DEFAULT_PLAN not in plans:
            raise ValueError(f"plan {DEFAULT_PLAN!r} is missing: with no Stripe prices, every subscription is on it")
        if others := sorted(set(plans) - {DEFAULT_PLAN}):
            raise ValueError(
                f"no Stripe price selects plan {others[0]!r}: with no prices, every subscription is on {DEFAULT_PLAN!r}"
            )
        return plans
    selects: dict[str, str] = {}
    for name, plan in plans.items():
        if not plan.prices:
            raise ValueError(f"plan {name!r} has no prices, so no subscription can be on it")
        for price in plan.prices:
            if (other := selects.setdefault(price, name)) != name:
                raise ValueError(f"price {price!r} selects both plan {other!r} and plan {name!r}")
    return plans


Plans = Annotated[dict[PlanName, Plan], AfterValidator(_selectable)]


def plan_selected_by(plans: Mapping[str, Plan], price: str) -> str | None:
    """The plan a Stripe price (id or lookup key) selects."""
    return next((name for name, plan in plans.items() if price in plan.prices), None)


def _eu(server_type: str) -> tuple[Choice, ...]:
    return tuple(Choice(server_type=server_type, location=location) for location in ("fsn1", "nbg1", "hel1"))


# The default plan: 2 vCPU, 4 GB, x86 (a resize cannot change the architecture), in the EU. Not the
# cost-optimised cx23: Hetzner's plan pages showed every cost-optimised type unavailable after its
# June 2026 price change, and a default must not rest on stock that is not there.
DEFAULT_PLANS: Mapping[str, Plan] = {DEFAULT_PLAN: Plan(choices=_eu("cpx22"))}
