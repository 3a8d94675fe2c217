"""The provisioner's API as the fleet tooling uses it: list the fleet, read a stack's settings, submit a
stack's deploy and follow it.

With `python -m fleet rollout --provisioner`, every stack's deploy runs on the provisioner's
workers, under its fencing (one operation per stack, platform-wide, billing's changes first) and
its Hetzner budgets; the rollout only decides the waves and the verdict. It needs the provisioner's
URL and operator token (CLAW_PROVISIONER_URL, CLAW_OPERATOR_TOKEN), never a Hetzner token, the
state backend or its passphrase.

A pull request's preview runs the pull request's program where it was checked out, with a read-only
Hetzner token: never on the workers, which hold the write tokens. A preview takes no stack lock on a
self-managed backend (pkg/backend/diy: only update, refresh, destroy and import lock), so it needs
no fencing; it reads the fleet and each stack's settings from the provisioner with the review token
(CLAW_REVIEW_TOKEN, `--settings-from-provisioner`).

The URL is the provisioner's private listener (CLAW_PRIVATE_BIND, behind TLS); its public one serves
only the billing webhook. A token never crosses a network in clear: `http://` is refused except to a
loopback address (a client on the provisioner's own host).
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from pydantic import BaseModel, ConfigDict, Field, SecretStr, TypeAdapter, ValidationError, field_validator

from fleet.desired import MissingSettings
from fleet.rollout import DeployFailed
from fleet.stacks import CUSTOMER_PREFIX

# A deploy job's statuses once it will not change any more (provisioner.store).
FINISHED = ("deployed", "failed", "superseded", "stale")
URL_VARIABLE, TOKEN_VARIABLE = "CLAW_PROVISIONER_URL", "CLAW_OPERATOR_TOKEN"
# The preview's token: it reads the fleet and its settings, and can change nothing.
REVIEW_TOKEN_VARIABLE = "CLAW_REVIEW_TOKEN"  # noqa: S105 (a variable name)
# {"<Hetzner project>": "<variable holding its read-only token>"}, for a fleet over several projects.
READ_TOKENS_VARIABLE = "CLAW_HETZNER_READ_TOKENS"


class ProvisionerError(RuntimeError):
    """The provisioner refused a call (`status`), or did not answer within the retry window."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Provisioner(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field(pattern=r"^https?://[^/\s]+(/\S*)?$")
    token: SecretStr = Field(min_length=16)
    # How often a deploy's job is looked at, and how long an unavailable provisioner (a restart, its
    # store briefly down: connection errors and 503s) is waited out before the call fails.
    poll_seconds: float = Field(default=2.0, gt=0)
    unavailable_seconds: float = Field(default=120.0, gt=0)

    @field_validator("url")
    @classmethod
    def _encrypted_unless_local(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme == "http" and not _loopback(parts.hostname or ""):
            raise ValueError(
                f"{URL_VARIABLE} must be https:// (http:// only to a loopback address): the token would cross "
                f"the network in clear ({parts.hostname})"
            )
        return url

    @classmethod
    def from_env(cls, environ: Mapping[str, str], token_variable: str = TOKEN_VARIABLE) -> Provisioner:
        missing = [name for name in (URL_VARIABLE, token_variable) if not environ.get(name)]
        if missing:
            raise ProvisionerError(f"not set: {', '.join(missing)}")
        try:
            return cls(url=environ[URL_VARIABLE].rstrip("/"), token=SecretStr(environ[token_variable]))
        except ValidationError as error:
            problem = error.errors()[0]
            field = str(problem["loc"][0]) if problem["loc"] else ""
            name = {"url": URL_VARIABLE, "token": token_variable}.get(field, field)
            message = problem["msg"].removeprefix("Value error, ")
            raise ProvisionerError(message if message.startswith(name) else f"{name}: {message}") from None

    def _call(self, method: str, path: str, body: Mapping[str, str | bool] | None = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.token.get_secret_value()}"}
        deadline = time.monotonic() + self.unavailable_seconds
        while True:
            try:
                response = requests.request(method, self.url + path, json=body, headers=headers, timeout=30)
            except requests.RequestException as error:
                problem = f"{type(error).__name__}"
            else:
                if response.status_code != 503:
                    answer: dict[str, Any] = response.json()
                    if response.status_code != 200:
                        raise ProvisionerError(
                            f"{method} {path}: {response.status_code} {answer.get('error')}", response.status_code
                        )
                    return answer
                problem = "503 " + str(response.json().get("error"))
            if time.monotonic() > deadline:
                raise ProvisionerError(f"{method} {path}: unavailable for {self.unavailable_seconds:g} s ({problem})")
            time.sleep(self.poll_seconds)

    def stacks(self) -> list[str]:
        """The fleet: every provisioned customer's stack that has not cancelled, sorted."""
        return list(self._call("GET", "/stacks")["stacks"])

    def settings(self, stack: str) -> dict[str, str]:
        """The stack's whole config as the provisioner's store has it; MissingSettings when it has none."""
        return dict(self._stack_settings(stack)["config"])

    def project(self, stack: str) -> str | None:
        """The Hetzner project the stack's servers live in."""
        project = self._stack_settings(stack)["project"]
        return None if project is None else str(project)

    def state(self, stack: str) -> dict[str, Any]:
        """The stack's state (`pulumi stack export`) with every secret replaced (fleet.redact): what a
        pull request's preview runs against, with no passphrase and no access to the backend."""
        return self._stack_read(f"/stacks/{stack}/state")

    def _stack_settings(self, stack: str) -> dict[str, Any]:
        return self._stack_read(f"/stacks/{stack}/settings")

    def _stack_read(self, path: str) -> dict[str, Any]:
        try:
            return self._call("GET", path)
        except ProvisionerError as error:
            if error.status == 404:
                raise MissingSettings(str(error).split(" 404 ", 1)[-1]) from error
            raise

    def submit_deploy(
        self, customer_id: str, request_id: str, commit: str | None = None, *, refresh: bool = False
    ) -> str:
        """The deploy job's id; the same request again is the same job. With `commit`, only a worker
        running that commit of the program deploys it; with `refresh`, the deploy repairs drift."""
        order: dict[str, str | bool] = {"customer_id": customer_id, "request_id": request_id}
        if commit is not None:
            order["commit"] = commit
        if refresh:
            order["refresh"] = True
        answer = self._call("POST", "/deploys", order)
        return str(answer.get("accepted") or answer["duplicate"])

    def job(self, event_id: str) -> dict[str, Any]:
        return self._call("GET", f"/jobs/{event_id}")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def reading_provisioner(environ: Mapping[str, str]) -> Provisioner:
    """The provisioner to read the fleet and its settings from: with the review token when there is one
    (it can change nothing), else the operator token."""
    token = REVIEW_TOKEN_VARIABLE if environ.get(REVIEW_TOKEN_VARIABLE) else TOKEN_VARIABLE
    return Provisioner.from_env(environ, token)


@dataclass(frozen=True)
class ProjectReadTokens:
    """The read-only Hetzner token a stack is previewed with: its own project's, as the provisioner
    assigned it. Another project's token sees none of the stack's servers and firewalls."""

    provisioner: Provisioner
    tokens: Mapping[str, SecretStr]

    @classmethod
    def from_env(cls, provisioner: Provisioner, environ: Mapping[str, str]) -> ProjectReadTokens:
        names = TypeAdapter(dict[str, str]).validate_json(environ[READ_TOKENS_VARIABLE])
        unset = sorted(name for name in names.values() if not environ.get(name))
        if unset:
            raise ProvisionerError(f"{READ_TOKENS_VARIABLE} names variables that are not set: {', '.join(unset)}")
        return cls(provisioner, {project: SecretStr(environ[name]) for project, name in names.items()})

    def __call__(self, stack: str) -> SecretStr:
        project = self.provisioner.project(stack)
        if project not in self.tokens:
            raise MissingSettings(
                f"{stack}: no read token for its Hetzner project {project!r} in {READ_TOKENS_VARIABLE}"
            )
        return self.tokens[project]


@dataclass(frozen=True)
class SubmittedDeploy:
    """The rollout's per-stack operation on the provisioner: submit the deploy and wait for its end."""

    provisioner: Provisioner
    # One per rollout run: a resubmission in the same run is the same job, a resumed run deploys anew.
    request_id: str
    # The program commit being rolled out, which the workers must run.
    commit: str | None = None
    # Drift repair: each deploy refreshes the stack's state from the cloud before its preview.
    refresh: bool = False

    def __call__(self, stack: str) -> dict[str, Any]:
        customer = stack.removeprefix(CUSTOMER_PREFIX)
        event_id = self.provisioner.submit_deploy(customer, self.request_id, self.commit, refresh=self.refresh)
        while True:
            view = self.provisioner.job(event_id)
            if view["status"] in FINISHED:
                break
            time.sleep(self.provisioner.poll_seconds)
        if view["status"] == "deployed":
            return dict(view["outputs"])
        last = view["history"][-1] if view["history"] else {}
        reason = view["last_error"] or last.get("detail") or "no reason recorded"
        # One line: the rollout's state and summary keep the last line of an error.
        raise DeployFailed(f"{event_id} {view['status']}: {' '.join(str(reason).split())}")
