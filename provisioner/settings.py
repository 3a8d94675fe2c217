"""The provisioner's own settings, from environment variables (secrets never come from files)."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

PREFIX = "CLAW_"


class SettingsError(ValueError):
    """A bad or missing environment variable; the message names it."""


class ProvisionerSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    webhook_secret: SecretStr = Field(min_length=16)
    operator_token: SecretStr = Field(min_length=16)
    # sqlite:///path (embedded default) or redis://host:port/db (several workers on several machines).
    queue_url: str = "sqlite:///var/lib/clawhosters/provisioner.sqlite3"
    bind: str = "127.0.0.1:8787"
    signature_tolerance_seconds: int = Field(default=300, ge=1)
    cancellation_grace_seconds: int = Field(default=7 * 24 * 3600, ge=0)
    max_attempts: int = Field(default=5, ge=1)
    retry_base_seconds: float = Field(default=30, gt=0)
    # A job whose worker stops renewing this lease is taken over by another worker.
    lease_seconds: float = Field(default=120, gt=0)
    max_body_bytes: int = Field(default=65536, ge=1024)
    # Where customer stacks keep their state, and how their secrets are encrypted.
    pulumi_backend_url: str = "file:///var/lib/clawhosters/pulumi-state"
    pulumi_secrets_provider: str = "passphrase"
    # module:attribute of the StackRunner factory; the Automation API by default.
    runner: str = "provisioner.runner:AutomationRunner"

    @field_validator("queue_url")
    @classmethod
    def _known_queue(cls, url: str) -> str:
        if not url.startswith(("sqlite:///", "redis://", "rediss://")):
            raise ValueError("must start with sqlite:///, redis:// or rediss://")
        return url

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ProvisionerSettings:
        values = {
            name.lower(): environ[PREFIX + name.upper()]
            for name in cls.model_fields
            if PREFIX + name.upper() in environ
        }
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            problems = [
                f"{PREFIX}{str(problem['loc'][0]).upper()}: {problem['msg'].removeprefix('Value error, ')}"
                for problem in error.errors()
            ]
            raise SettingsError("invalid provisioner settings:\n  " + "\n  ".join(problems)) from None
