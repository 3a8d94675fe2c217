"""The provisioner's own settings, from environment variables (secrets never come from files)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from config.customer import PlatformConfig
from config.loader import hetzner_token_problem
from config.plans import DEFAULT_PLANS, Plans

PREFIX = "CLAW_"
# The DNS project's token (CLAW_PLATFORM's dns_zone): only the workers read it, at start.
DNS_TOKEN_ENV = PREFIX + "HETZNER_DNS_TOKEN"
COMMIT_PATTERN = r"^[0-9a-f]{40}$"
# host:port, the host an IPv4 address, a name or a bracketed IPv6 address.
BIND_PATTERN = r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$"
# Binding these serves on every address, the public ones too.
_WILDCARDS = ("0.0.0.0", "[::]")  # noqa: S104 (the addresses refused)


class SettingsError(ValueError):
    """A bad or missing environment variable; the message names it."""


def _from_json(value: Any, kind: str) -> Any:
    """A setting given as JSON text in its environment variable, parsed for its model."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"must be {kind}: {error}") from None
    return value


class StoreSettings(BaseModel):
    """Where the customers' desired settings are (the job store) and the platform's: what any worker
    needs to write a stack's whole config, whichever operation it runs."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    # sqlite:///path (embedded default) or redis://host:port/db (several workers on several machines).
    queue_url: str = "sqlite:///var/lib/clawhosters/provisioner.sqlite3"
    # The platform settings written into every stack (`platform:*`), as a JSON object; they are
    # validated by the program's own model when the provisioner starts.
    platform: PlatformConfig

    @field_validator("queue_url")
    @classmethod
    def _known_queue(cls, url: str) -> str:
        if not url.startswith(("sqlite:///", "redis://", "rediss://")):
            raise ValueError("must start with sqlite:///, redis:// or rediss://")
        return url

    @field_validator("platform", mode="before")
    @classmethod
    def _platform_json(cls, value: Any) -> Any:
        return _from_json(value, "a JSON object")

    @field_validator("platform")
    @classmethod
    def _provisioner_not_banned(cls, platform: PlatformConfig) -> PlatformConfig:
        # The provisioner logs into every VPS over SSH: fail2ban must never ban it.
        if not platform.provisioner_cidrs:
            raise ValueError("provisioner_cidrs must name where the provisioner connects from")
        return platform

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Self:
        values = {
            name.lower(): environ[PREFIX + name.upper()]
            for name in cls.model_fields
            if PREFIX + name.upper() in environ
        }
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            problems = []
            for problem in error.errors():
                where = PREFIX + str(problem["loc"][0]).upper() if problem["loc"] else "settings"
                nested = ".".join(str(part) for part in problem["loc"][1:])
                message = problem["msg"].removeprefix("Value error, ")
                problems.append(f"{where}{'.' + nested if nested else ''}: {message}")
            raise SettingsError("invalid provisioner settings:\n  " + "\n  ".join(problems)) from None


class HetznerProject(BaseModel):
    """A Hetzner Cloud project the fleet's servers live in: its token and the request budget the
    engine keeps it under (Hetzner allows 3,600 requests an hour per project; leave room for others)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    # The environment variable that holds the project's token: the token itself is never in settings.
    token_env: str = Field(pattern=r"^[A-Z_][A-Z0-9_]*$")
    # The variable of the project's read-only token, which placing a new customer reads Hetzner's
    # availability with; without one, the project's token is used.
    read_token_env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]*$")
    requests_per_hour: int = Field(default=3000, ge=1, le=3600)


class ProvisionerSettings(StoreSettings):
    webhook_secret: SecretStr = Field(min_length=16)
    operator_token: SecretStr = Field(min_length=16)
    # Grants only reading the fleet and each stack's settings (GET /stacks, /stacks/<stack>/settings):
    # the token of the pull-request preview, which runs a pull request's program and may change nothing.
    review_token: SecretStr | None = Field(default=None, min_length=16)
    # Per-stack workspaces (project and stack settings files) live here, never in the checkout.
    state_dir: Path = Path("/var/lib/clawhosters")
    # The internet-facing listener: the billing webhook and a health check, nothing else.
    public_bind: str = Field(default="127.0.0.1:8787", pattern=BIND_PATTERN)
    # The operator and review API, readiness and metrics: an address of the platform's private network.
    private_bind: str = Field(default="127.0.0.1:8788", pattern=BIND_PATTERN)
    signature_tolerance_seconds: int = Field(default=300, ge=1)
    cancellation_grace_seconds: int = Field(default=7 * 24 * 3600, ge=0)
    max_attempts: int = Field(default=5, ge=1)
    retry_base_seconds: float = Field(default=30, gt=0)
    # A job runs only while its worker holds this lease; a worker that cannot renew it for half of
    # it cancels its operation, so the operation has stopped before anyone else can take the stack.
    lease_seconds: float = Field(default=120, gt=0)
    # After asking the CLI to cancel (SIGINT), how long to wait before ending its processes.
    cancel_seconds: float = Field(default=20, gt=0)
    # Ending an operation's processes: SIGTERM to each, this long, then SIGKILL.
    kill_grace_seconds: float = Field(default=5, gt=0)
    # An attempt that runs longer is stopped and fails: no retry gives a stack that never ends (a
    # host whose root makes the provisioning session stall) another worker's time.
    operation_seconds: float = Field(default=1800, gt=0)
    # RLIMIT_DATA of a worker process and of every process of its operations (CLI, language host,
    # program, policy pack, each provider): a process that needs more fails, its operation with it.
    process_memory_mib: int = Field(default=1024, ge=256)
    # On SIGTERM: how long running operations may go on before they are cancelled.
    stop_grace_seconds: float = Field(default=60, ge=0)
    max_body_bytes: int = Field(default=65536, ge=1024)
    # HTTP front: threads that touch the store, how long a client may take to send its body.
    http_threads: int = Field(default=16, ge=1, le=256)
    http_body_timeout_seconds: float = Field(default=10, gt=0)
    http_max_connections: int = Field(default=2000, ge=16)
    # Finished job records older than this are deleted (never a customer's newest event, newest deploy,
    # newest completed provision or billing job). Longer than Stripe's three days of redelivery.
    job_retention_days: float = Field(default=30, ge=4)
    # Where customer stacks keep their state, and how their secrets are encrypted.
    pulumi_backend_url: str = "file:///var/lib/clawhosters/pulumi-state"
    pulumi_secrets_provider: str = "passphrase"
    # New customers go to the project with the fewest customers; a customer stays in its project.
    hetzner_projects: list[HetznerProject] = Field(
        default_factory=lambda: [HetznerProject(name="default", token_env="HCLOUD_TOKEN")],  # noqa: S106 (a name)
        min_length=1,
    )
    # What one stack operation may spend of its project's budget, taken before its CLI starts: an
    # operation waits in the queue for it, never inside the CLI (no preview times out on a token).
    hetzner_requests_per_operation: int = Field(default=25, ge=1)
    # The commit of the program this worker runs (its deployment sets it); a deploy that names another
    # commit fails instead of rolling out a program that was not the one merged.
    program_commit: str | None = Field(default=None, pattern=COMMIT_PATTERN)
    # module:attribute of the StackRunner factory; the Automation API by default.
    runner: str = "provisioner.runner:AutomationRunner"
    # The plans billing sells (config/plans.py): the Stripe prices that select each, and where its
    # servers go, first choice first.
    plans: Plans = Field(default_factory=lambda: dict(DEFAULT_PLANS))

    @field_validator("hetzner_projects", mode="before")
    @classmethod
    def _projects_json(cls, value: Any) -> Any:
        return _from_json(value, "a JSON list")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Self:
        if PREFIX + "BIND" in environ:
            # Silently ignoring it would leave the webhook on loopback, or an operator's API address unserved.
            raise SettingsError(
                "invalid provisioner settings:\n  CLAW_BIND: replaced by two listeners, CLAW_PUBLIC_BIND (the "
                "billing webhook) and CLAW_PRIVATE_BIND (the operator and review API, metrics)"
            )
        return super().from_env(environ)

    @field_validator("plans", mode="before")
    @classmethod
    def _plans_json(cls, value: Any) -> Any:
        return _from_json(value, "a JSON object")

    @model_validator(mode="after")
    def _plans_runnable(self) -> ProvisionerSettings:
        offered = self.platform.server_types
        for name, plan in self.plans.items():
            if refused := [str(choice) for choice in plan.choices if choice.server_type not in offered]:
                raise ValueError(
                    f"CLAW_PLANS: plan {name!r} places on {', '.join(refused)}, which CLAW_PLATFORM's "
                    "server_types does not allow (the program would refuse the stack)"
                )
        return self

    @field_validator("public_bind", "private_bind")
    @classmethod
    def _port_in_range(cls, bind: str) -> str:
        if not 0 < int(bind.rpartition(":")[2]) < 65536:
            raise ValueError("the port must be 1 to 65535")
        return bind

    @field_validator("private_bind")
    @classmethod
    def _private_address(cls, bind: str) -> str:
        if bind.rpartition(":")[0] in _WILDCARDS:
            raise ValueError("must name an address of the private network, not every address (the public ones too)")
        return bind

    @model_validator(mode="after")
    def _two_listeners(self) -> ProvisionerSettings:
        if self.public_bind == self.private_bind:
            raise ValueError("CLAW_PUBLIC_BIND and CLAW_PRIVATE_BIND must differ")
        return self

    @model_validator(mode="after")
    def _cancel_within_lease(self) -> ProvisionerSettings:
        # The watchdog acts at half the lease; the operation's processes must be gone before it lapses.
        if self.cancel_seconds + self.kill_grace_seconds >= self.lease_seconds / 2:
            raise ValueError(
                "CLAW_CANCEL_SECONDS plus CLAW_KILL_GRACE_SECONDS must be under half of CLAW_LEASE_SECONDS"
            )
        return self

    @field_validator("pulumi_backend_url")
    @classmethod
    def _readable_locks(cls, url: str) -> str:
        # A worker clearing a stack reads the backend's lock files itself (provisioner.stack_locks).
        if not url.startswith(("file://", "s3://")):
            raise ValueError("must be a file:// or s3:// backend")
        return url

    @model_validator(mode="after")
    def _projects_usable(self) -> ProvisionerSettings:
        names = [project.name for project in self.hetzner_projects]
        if len(set(names)) != len(names):
            raise ValueError("CLAW_HETZNER_PROJECTS: project names must be unique")
        for project in self.hetzner_projects:
            if self.hetzner_requests_per_operation > project.requests_per_hour:
                raise ValueError(
                    f"CLAW_HETZNER_REQUESTS_PER_OPERATION is more than project {project.name}'s requests_per_hour"
                )
        return self

    def hetzner_tokens(self, environ: Mapping[str, str]) -> dict[str, SecretStr]:
        """Each project's token from the environment; a worker checks them when it starts."""
        missing = [project.token_env for project in self.hetzner_projects if not environ.get(project.token_env)]
        if missing:
            raise SettingsError(f"CLAW_HETZNER_PROJECTS: token variable not set: {', '.join(missing)}")
        return {project.name: SecretStr(environ[project.token_env]) for project in self.hetzner_projects}

    def hetzner_read_tokens(self, environ: Mapping[str, str]) -> dict[str, SecretStr]:
        """Each project's read-only token, or its token where it has none configured."""
        missing = [
            project.read_token_env
            for project in self.hetzner_projects
            if project.read_token_env is not None and not environ.get(project.read_token_env)
        ]
        if missing:
            raise SettingsError(f"CLAW_HETZNER_PROJECTS: read token variable not set: {', '.join(missing)}")
        tokens = self.hetzner_tokens(environ)
        return {
            project.name: SecretStr(environ[project.read_token_env]) if project.read_token_env else tokens[project.name]
            for project in self.hetzner_projects
        }

    def hetzner_dns_token(self, environ: Mapping[str, str]) -> SecretStr | None:
        """The token of the DNS project that holds CLAW_PLATFORM's dns_zone (None without one): it
        writes every customer's records, so it is never a customer project's; a worker checks it when
        it starts, and hands it only to the CLI."""
        if self.platform.dns_zone is None:
            return None
        token = environ.get(DNS_TOKEN_ENV, "")
        problem = (
            "not set; CLAW_PLATFORM's dns_zone is written with the DNS project's token" if not token else None
        ) or hetzner_token_problem(token)
        if problem is None:
            shared = [p.name for p in self.hetzner_projects if environ.get(p.token_env) == token]
            if shared:
                problem = (
                    f"is the token of Hetzner project {shared[0]}; the zone belongs in a project of its own, since "
                    "a token that can write DNS controls every server of its project"
                )
        if problem is not None:
            raise SettingsError(f"{DNS_TOKEN_ENV}: {problem}")
        return SecretStr(token)
