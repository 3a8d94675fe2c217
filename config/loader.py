"""Turn stack configuration (`pulumi config`) into validated settings, or one clear error."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any

import pulumi
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError, model_validator

from config.customer import CustomerConfig, PlatformConfig

CUSTOMER_NAMESPACE = "clawhosters"
PLATFORM_NAMESPACE = "platform"
# The DNS project's token reaches the program from its environment, as HCLOUD_TOKEN does, never from
# stack config: stack settings are read by the pull-request preview, and a confined program gets no
# environment at all (fleet/sandbox.py).
DNS_TOKEN_VARIABLE = "HCLOUD_DNS_TOKEN"  # noqa: S105 (a variable's name)
CUSTOMER_TOKEN_VARIABLE = "HCLOUD_TOKEN"  # noqa: S105
# What the hcloud provider accepts (it refuses any other length); Hetzner's tokens are alphanumeric.
_HETZNER_TOKEN = re.compile(r"[A-Za-z0-9]{64}")


class ConfigError(ValueError, pulumi.RunError):
    """Invalid stack configuration; the message names every offending key. A RunError: the CLI shows
    the program's refusal as its own `error:` line, not as a Python traceback."""


class StackSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    customer: CustomerConfig
    platform: PlatformConfig = PlatformConfig()

    @model_validator(mode="after")
    def _server_type_offered(self) -> StackSettings:
        offered = self.platform.server_types
        if self.customer.server_type not in offered:
            raise ValueError(
                f"{CUSTOMER_NAMESPACE}:server_type: {self.customer.server_type!r} is not offered; "
                f"{PLATFORM_NAMESPACE}:server_types allows {', '.join(offered)}"
            )
        return self


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


def settings_from_mapping(raw: Mapping[str, str], stack: str | None = None) -> StackSettings:
    """Validate raw `namespace:key` → text config, as Pulumi hands it to a program.

    With `stack`, the stack must be the customer's own (`customer-<customer_id>`): every resource
    name derives from the id, so an id edited in an existing stack would replace the server."""
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
    if customer is not None and stack is not None and stack != customer.stack_name:
        problems.append(
            f"{CUSTOMER_NAMESPACE}:customer_id: {customer.customer_id!r} belongs to stack "
            f"{customer.stack_name!r}, but this is stack {stack!r}; a customer's id never changes"
        )
    if problems or customer is None or platform is None:
        raise ConfigError("invalid stack configuration:\n  " + "\n  ".join(problems))
    try:
        return StackSettings(customer=customer, platform=platform)
    except ValidationError as error:
        messages = [problem["msg"].removeprefix("Value error, ") for problem in error.errors()]
        raise ConfigError("invalid stack configuration:\n  " + "\n  ".join(messages)) from error


def load_stack_settings() -> StackSettings:
    """Read this stack's configuration from the running Pulumi program."""
    # The language host hands the stack config to the runtime (set_all_config); the
    # PULUMI_CONFIG environment bag is the older route. The SDK has no public way to list keys,
    # and listing them is what lets an unknown (misspelt) key be an error.
    raw = {**pulumi.runtime.get_config_env(), **pulumi.runtime.config.CONFIG.get()}
    return settings_from_mapping(raw, stack=pulumi.get_stack())


def _config_text(value: Any) -> str:
    """A value in the text form `pulumi config` keeps it in (the inverse of `_decode`)."""
    if isinstance(value, list | dict):
        return json.dumps(value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def namespace_config(model: BaseModel, namespace: str) -> dict[str, str]:
    """One settings model as `namespace:key` stack config, every set field spelled out."""
    values = model.model_dump(mode="json", exclude_none=True)
    return {f"{namespace}:{key}": _config_text(value) for key, value in values.items()}


def stack_config(settings: StackSettings) -> dict[str, str]:
    """A stack's complete config for these settings: `settings_from_mapping` reads it back."""
    return namespace_config(settings.customer, CUSTOMER_NAMESPACE) | namespace_config(
        settings.platform, PLATFORM_NAMESPACE
    )


def hetzner_token_problem(token: str) -> str | None:
    """What is wrong with a Hetzner API token, never showing it; None when the provider would take it."""
    return None if _HETZNER_TOKEN.fullmatch(token) else "is not a Hetzner API token (64 letters and digits)"


def dns_token(platform: PlatformConfig, environ: Mapping[str, str], *, preview: bool) -> SecretStr | None:
    """The DNS project's token for the stack's records: None without `platform:dns_zone`, or in a
    preview given none (a pull request's, confined: nothing is written then); an `up` needs it."""
    if platform.dns_zone is None:
        return None
    token = environ.get(DNS_TOKEN_VARIABLE, "")
    problem = None
    if not token:
        if preview:
            return None
        problem = f"required: {PLATFORM_NAMESPACE}:dns_zone's records are written with the DNS project's token"
    elif problem := hetzner_token_problem(token):
        pass
    elif token == environ.get(CUSTOMER_TOKEN_VARIABLE):
        problem = (
            f"is the customers' project token ({CUSTOMER_TOKEN_VARIABLE}); the zone belongs in a project of its "
            "own, since a token that can write DNS controls every server of its project"
        )
    if problem is not None:
        raise ConfigError(f"invalid DNS settings:\n  {DNS_TOKEN_VARIABLE}: {problem}")
    return SecretStr(token)


def load_dns_token(platform: PlatformConfig) -> SecretStr | None:
    """`dns_token` for the running Pulumi program."""
    return dns_token(platform, os.environ, preview=pulumi.runtime.is_dry_run())
