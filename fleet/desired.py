"""Each customer stack's complete config from the one source of truth: the provisioner's store.

A self-managed backend keeps a stack's config only in the stack's settings file, which exists
where the provisioner ran the stack and nowhere else: not in a CI checkout, not on another worker.
So every operation writes the stack's whole config before it touches the stack: the customer's
settings from the newest provision the store holds as done (what the stack last had), and the
platform's settings, which are the same for every stack.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from config.customer import PlatformConfig
from config.loader import PLATFORM_NAMESPACE, namespace_config
from fleet.stacks import CUSTOMER_PREFIX
from provisioner.store import Job, JobStore

# A stack's whole config by its name; raises MissingSettings when there is none to give.
DesiredConfig = Callable[[str], Mapping[str, str]]


class MissingSettings(RuntimeError):
    """The store holds no settings for a stack: nothing may run on it."""


def stack_config(customer: Mapping[str, str], platform: PlatformConfig) -> dict[str, str]:
    """The stack's whole config: the customer's `clawhosters:*` settings and every `platform:*` one."""
    return {**customer, **namespace_config(platform, PLATFORM_NAMESPACE)}


@dataclass(frozen=True)
class FromStore:
    """What the provisioner's store says a customer stack's config is (served by its API at
    /stacks/<stack>/settings, which the fleet tooling reads through fleet.control.Provisioner.settings)."""

    store: JobStore
    platform: PlatformConfig

    def __call__(self, stack: str) -> dict[str, str]:
        return stack_config(self.last_provisioned(stack).config, self.platform)

    def last_provisioned(self, stack: str) -> Job:
        """The customer's newest completed provision (its settings and its Hetzner project)."""
        customer_id = stack.removeprefix(CUSTOMER_PREFIX)
        job = self.store.last_provisioned(customer_id) if stack.startswith(CUSTOMER_PREFIX) else None
        if job is None:
            raise MissingSettings(
                f"{stack}: the provisioner's store has no completed provision of customer {customer_id!r}, "
                "so the stack's settings are unknown"
            )
        return job
