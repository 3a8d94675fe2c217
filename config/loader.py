"""Turn stack configuration (`pulumi config`) into validated settings, or one clear error."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pulumi
from pydantic import BaseModel, ConfigDict, ValidationError

from config.customer import CustomerConfig, PlatformConfig

CUSTOMER_NAMESPACE = "clawhosters"
PLATFORM_NAMESPACE = "platform"


class ConfigError(ValueError):
    """Invalid stack configuration; the message names every offending key."""


class StackSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    customer: CustomerConfig
    platform: PlatformConfig = PlatformConfig()


def _decode(raw: str) -> Any:
    # `pulumi config set --path` and structured values arrive as JSON text.
    if raw[:1] in "[{":
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw
    return raw


def _section(raw: Mapping[str, str], namespace: str) -> dict[str, Any]:
    prefix = f"{namespace}:"
    return {key[len(prefix) :]: _decode(value) for key, value in raw.items() if key.startswith(prefix)}


def _describe(error: ValidationError, namespace: str) -> list[str]:
    lines = []
    for problem in error.errors():
        field = ".".join(str(part) for part in problem["loc"]) or "(settings)"
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = "unknown setting"
        elif problem["type"] == "missing":
            message = "required setting is missing"
        lines.append(f"{namespace}:{field}: {message}")
    return lines


def settings_from_mapping(raw: Mapping[str, str]) -> StackSettings:
    """Validate raw `namespace:key` → text config, as Pulumi hands it to a program."""
    problems: list[str] = []
    customer: CustomerConfig | None = None
    platform: PlatformConfig | None = None
    try:
        customer = CustomerConfig.model_validate(_section(raw, CUSTOMER_NAMESPACE))
    except ValidationError as error:
        problems += _describe(error, CUSTOMER_NAMESPACE)
    try:
        platform = PlatformConfig.model_validate(_section(raw, PLATFORM_NAMESPACE))
    except ValidationError as error:
        problems += _describe(error, PLATFORM_NAMESPACE)
    if problems or customer is None or platform is None:
        raise ConfigError("invalid stack configuration:\n  " + "\n  ".join(problems))
    return StackSettings(customer=customer, platform=platform)


def load_stack_settings() -> StackSettings:
    """Read this stack's configuration from the running Pulumi program."""
    # The language host hands the stack config to the runtime (set_all_config); the
    # PULUMI_CONFIG environment bag is the older route. The SDK has no public way to list keys,
    # and listing them is what lets an unknown (misspelt) key be an error.
    raw = {**pulumi.runtime.get_config_env(), **pulumi.runtime.config.CONFIG.get()}
    return settings_from_mapping(raw)
