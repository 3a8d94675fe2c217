"""Where a new customer's server goes: the first choice of their plan Hetzner has available now.

A signup's job places the customer before its first `up` (provisioner/jobs.py): it reads Hetzner's
live availability (`server_types[].locations[].available`) with the project's read-only token, takes
the first of the plan's (server type, location) choices that is available, and records it in the
store. From then on the recorded placement is the customer's: retries, later billing events and
deploys run it, whatever Hetzner's stock or the plans say later, until a cancellation has removed
the server. A customer provisioned before placements were recorded keeps what its last provision ran.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from hcloud import APIException, Client

from config.customer import CustomerConfig
from config.loader import CUSTOMER_NAMESPACE
from config.placement import DEFAULT_PLAN, Choice, Preferences
from provisioner.store import Job, Placement

# (server type, location) pairs Hetzner has available now.
Availability = frozenset[tuple[str, str]]
SERVER_TYPE_KEY = f"{CUSTOMER_NAMESPACE}:server_type"
LOCATION_KEY = f"{CUSTOMER_NAMESPACE}:location"


class NoPlacement(RuntimeError):
    """The plan is unknown, or Hetzner has none of its choices available: the signup fails."""


def place(plans: Mapping[str, Preferences], plan: str | None, available: Availability) -> tuple[Placement, str]:
    """A new customer's placement for their plan (none: the default plan), and how it was chosen."""
    name = plan or DEFAULT_PLAN
    choice = choose(plans, name, available)
    placed = Placement(server_type=choice.server_type, location=choice.location, plan=name, at=time.time())
    choices = ", ".join(str(each) for each in plans[name])
    return placed, f"plan {name}: the first of {choices} Hetzner has available"


def choose(plans: Mapping[str, Preferences], name: str, available: Availability) -> Choice:
    """The plan's first choice that is available."""
    preferences = plans.get(name)
    if preferences is None:
        raise NoPlacement(f"plan {name!r} is not one of the platform's plans ({', '.join(sorted(plans))})")
    for choice in preferences:
        if (choice.server_type, choice.location) in available:
            return choice
    raise NoPlacement(
        f"plan {name!r}: Hetzner has none of its server types available now "
        f"({', '.join(str(choice) for choice in preferences)}); nothing was created"
    )


def read_availability(
    client: Client, *, patience_seconds: float = 300, stopped: Callable[[], bool] = lambda: False
) -> Availability:
    """Hetzner's answer now. A rate limit (another client spending the project's budget) is waited out,
    as the hcloud provider does, until `patience_seconds` have passed or `stopped()`."""
    deadline = time.monotonic() + patience_seconds
    while True:
        try:
            return frozenset(
                (server_type.name, entry.location.name)
                for server_type in client.server_types.get_all()
                for entry in server_type.locations or []
                if entry.available and server_type.name is not None and entry.location.name is not None
            )
        except APIException as error:
            # hcloud's client has retried a few times already, with back-off.
            if error.code != "rate_limit_exceeded" or time.monotonic() > deadline or stopped():
                raise
        time.sleep(1)


def adopted(provisioned: Job) -> Placement:
    """What a customer provisioned before placements were recorded runs: its last provision's settings
    (the program's defaults where they name none)."""
    defaults = CustomerConfig.model_fields
    return Placement(
        server_type=provisioned.config.get(SERVER_TYPE_KEY, defaults["server_type"].default),
        location=provisioned.config.get(LOCATION_KEY, defaults["location"].default),
        plan=None,
        at=time.time(),
    )


def placed_config(config: Mapping[str, str], placement: Placement) -> dict[str, str]:
    """The customer's stack settings on their placement."""
    return {**config, SERVER_TYPE_KEY: placement.server_type, LOCATION_KEY: placement.location}
