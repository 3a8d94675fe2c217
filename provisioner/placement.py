"""Where a customer's server goes: placed once for its plan, its type changed only by a change of plan.

A signup's job places the customer before its first `up` (provisioner/jobs.py): it reads Hetzner's
live offer (`server_types[].locations[].available`) with the project's read-only token, takes the
first of the plan's (server type, location) choices that is available, and records it in the store.
From then on the recorded placement is the customer's: retries, later billing events and deploys run
it, whatever Hetzner's stock or the plans say later, until a cancellation has removed the server.

A change of plan of a running server (the subscription's price selects another plan) keeps the
server's location, which cannot change without a new server: the new plan's first choice in that
location that Hetzner has available and that a resize can reach (the refusals the program applies at
preview, components/safety.py: the same architecture, a disk no smaller than the server's) becomes
the server's type through the gated deploy, and is recorded once deployed. With none, the change is
refused, naming the plan and why, and the server keeps running as it is. A customer provisioned
before placements were recorded keeps what its last provision ran, recorded under its plan.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from hcloud import APIException, Client

from components.safety import OfferedType, server_type_refusal
from config.customer import CustomerConfig
from config.hetzner import HETZNER
from config.loader import CUSTOMER_NAMESPACE
from config.plans import DEFAULT_PLAN, Choice, Plan
from provisioner.store import Job, Placement

# Hetzner's server types now, by name: architecture, disk and where each is available.
Offer = Mapping[str, OfferedType]
SERVER_TYPE_KEY = f"{CUSTOMER_NAMESPACE}:server_type"
LOCATION_KEY = f"{CUSTOMER_NAMESPACE}:location"


class NoPlacement(RuntimeError):
    """No choice of the plan fits: nothing is available for a signup (nothing is created), or nothing a
    running server can be resized to in its location (the server stays as it is); or an unknown plan."""


@dataclass(frozen=True)
class _Server:
    """A running server as its placement records it: what a resize depends on."""

    name: str
    server_type: str
    disk_gb: int


def plan_name(job: Job) -> str:
    return job.plan or DEFAULT_PLAN


def _choices(plans: Mapping[str, Plan], name: str) -> tuple[Choice, ...]:
    plan = plans.get(name)
    if plan is None:
        raise NoPlacement(f"plan {name!r} is not one of the platform's plans ({', '.join(sorted(plans))})")
    return plan.choices


def _listed(choices: tuple[Choice, ...]) -> str:
    return ", ".join(str(choice) for choice in choices)


def place(plans: Mapping[str, Plan], name: str, offer: Offer) -> tuple[Placement, str]:
    """A new customer's placement on plan `name`: its first choice Hetzner has available, and how it
    was chosen."""
    choices = _choices(plans, name)
    for choice in choices:
        listed = offer.get(choice.server_type)
        if listed is not None and choice.location in listed.orderable_in:
            placed = Placement(
                server_type=choice.server_type,
                location=choice.location,
                plan=name,
                disk_gb=listed.disk_gb,
                at=time.time(),
            )
            return placed, f"plan {name}: the first of {_listed(choices)} Hetzner has available"
    raise NoPlacement(
        f"plan {name!r}: Hetzner has none of its server types available now ({_listed(choices)}); nothing was created"
    )


def change_plan(plans: Mapping[str, Plan], name: str, placed: Placement, offer: Offer, server: str) -> Placement:
    """Where the running server `server` (`placed`) goes on plan `name`: the same location, the type of
    the plan's first choice there that it runs already, or that Hetzner has available and a resize can
    reach."""
    choices = _choices(plans, name)
    running = _Server(name=server, server_type=placed.server_type, disk_gb=placed.disk_gb)
    refusals = []
    for choice in choices:
        if choice.location != placed.location:
            continue
        refusal = (
            None
            if choice.server_type == placed.server_type
            else server_type_refusal(choice.server_type, placed.location, running, offer)
        )
        if refusal is None:
            return placed.model_copy(update={"server_type": choice.server_type, "plan": name, "at": time.time()})
        refusals.append(f"{choice}: {refusal}")
    why = "; ".join(refusals) or f"none of its choices ({_listed(choices)}) is in {placed.location}"
    raise NoPlacement(
        f"plan {name!r} cannot run {server} ({placed.server_type} in {placed.location}, which a change of plan "
        f"never moves): {why}. The server keeps running unchanged on plan {placed.plan!r}"
    )


def read_offer(client: Client, *, patience_seconds: float = 300, stopped: Callable[[], bool] = lambda: False) -> Offer:
    """Hetzner's answer now. A rate limit (another client spending the project's budget) is waited out,
    as the hcloud provider does, until `patience_seconds` have passed or `stopped()`."""
    deadline = time.monotonic() + patience_seconds
    while True:
        try:
            return {
                server_type.name: OfferedType(
                    name=server_type.name,
                    architecture=server_type.architecture,
                    disk_gb=server_type.disk,
                    orderable_in=frozenset(
                        entry.location.name
                        for entry in server_type.locations or []
                        if entry.available and entry.location.name is not None
                    ),
                )
                for server_type in client.server_types.get_all()
                if server_type.name is not None and server_type.architecture is not None and server_type.disk
            }
        except APIException as error:
            # hcloud's client has retried a few times already, with back-off.
            if error.code != "rate_limit_exceeded" or time.monotonic() > deadline or stopped():
                raise
        time.sleep(1)


def adopted(provisioned: Job, plan: str) -> Placement:
    """What a customer provisioned before placements were recorded runs: its last provision's settings
    (the program's defaults where they name none), recorded under `plan`."""
    defaults = CustomerConfig.model_fields
    server_type = provisioned.config.get(SERVER_TYPE_KEY, defaults["server_type"].default)
    listed = HETZNER.server_type(server_type)
    if listed is None:
        raise NoPlacement(f"{server_type}, which the server runs, is not in Hetzner's catalogue (config/hetzner.yaml)")
    return Placement(
        server_type=server_type,
        location=provisioned.config.get(LOCATION_KEY, defaults["location"].default),
        plan=plan,
        # A resize keeps the disk and never shrinks it: at most the disk of the type it runs.
        disk_gb=listed.disk,
        at=time.time(),
    )


def placed_config(config: Mapping[str, str], placement: Placement) -> dict[str, str]:
    """The customer's stack settings on their placement."""
    return {**config, SERVER_TYPE_KEY: placement.server_type, LOCATION_KEY: placement.location}


def customer_settings(config: Mapping[str, str]) -> dict[str, str]:
    """A stack's settings without its placement: what the customer's subscription says."""
    return {key: value for key, value in config.items() if key not in (SERVER_TYPE_KEY, LOCATION_KEY)}
