"""A resize without pulling the plug, and without leaving the server off.

On a `server_type` change the hcloud provider powers a running server off (Hetzner: "equivalent to
pulling the power cord") and calls `change_type`; when Hetzner refuses the type it returns the error
and leaves the server off (terraform-provider-hcloud v1.68, `resourceServerUpdate`). Hetzner itself
starts a server again once a type change has copied its disk. So every `up` of the platform's tooling
whose plan changes a server's type first asks Hetzner for a graceful shutdown (ACPI: the OS stops the
gateway and Docker and unmounts its disks) and waits until the server is off, which makes the provider
skip its poweroff; afterwards, whatever the outcome, a server that is still off is powered on.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hcloud import Client
    from pulumi.automation import Stack

SERVER_TYPE = "hcloud:index/server:Server"
# As the provider defaults them, and as `hcloud:endpoint` overrides the first.
DEFAULT_ENDPOINT = "https://api.hetzner.cloud/v1"
POLL_SECONDS = 1.0
Say = Callable[[str], None]


class ResizeError(RuntimeError):
    """The server could not be brought down gracefully; nothing was changed."""


def resized_servers(plan: Path) -> list[str]:
    """The URNs of the servers whose type the saved plan changes in place."""
    resource_plans = json.loads(plan.read_text()).get("resourcePlans") or {}
    return sorted(
        urn
        for urn, resource in resource_plans.items()
        if resource.get("goal", {}).get("type") == SERVER_TYPE
        and "update" in (resource.get("steps") or [])
        and "serverType" in ((resource["goal"].get("inputDiff") or {}).get("updates") or {})
    )


def hetzner_client(
    environment: Mapping[str, str] | None = None,
    token_variable: str = "HCLOUD_TOKEN",  # noqa: S107 (a variable's name)
) -> Client:
    """Hetzner's own client, on the token and endpoint the hcloud provider reads from its environment
    (this process's, with `environment` over it: the variables the CLI runs with). `token_variable`:
    another project's token, such as the DNS project's."""
    from hcloud import Client

    variables = {**os.environ, **(environment or {})}
    token = variables.get(token_variable)
    if not token:
        raise ResizeError(f"Hetzner's API needs a token: {token_variable} is not set")
    return Client(
        token=token,
        api_endpoint=variables.get("HCLOUD_ENDPOINT") or DEFAULT_ENDPOINT,
        application_name="clawhosters-fleet",
    )


def _server_ids(handle: Stack, urns: list[str]) -> list[int]:
    if not urns:
        return []  # no resize: no `stack export` on every up
    resources = handle.export_stack().deployment.get("resources") or []
    ids = {resource["urn"]: resource.get("id") for resource in resources}
    return [int(ids[urn]) for urn in urns if ids.get(urn)]


@contextlib.contextmanager
def graceful_resize(
    handle: Stack,
    plan: Path,
    *,
    shutdown_seconds: float,
    on_output: Say | None = None,
    environment: Mapping[str, str] | None = None,
) -> Iterator[None]:
    """Around the `up` of `plan`: every server it resizes shut down gracefully before, and running after."""
    server_ids = _server_ids(handle, resized_servers(plan))
    if not server_ids:
        yield
        return
    hetzner = hetzner_client(environment)
    say = on_output or (lambda _line: None)
    try:
        for server_id in server_ids:
            _shut_down(hetzner, server_id, shutdown_seconds, say)
        yield
    finally:
        for server_id in server_ids:
            _ensure_running(hetzner, server_id, say)


def _shut_down(hetzner: Client, server_id: int, timeout: float, say: Say) -> None:
    from hcloud.actions import ActionFailedException

    server = hetzner.servers.get_by_id(server_id)
    if server.status == "off":
        return
    say(f"server {server.name}: shutting down gracefully before its resize\n")
    # A failed action is judged by the server's status below, as a successful one is.
    with contextlib.suppress(ActionFailedException):
        server.shutdown().wait_until_finished()
    # The action only says that the ACPI request was delivered; the OS may take a while, or refuse.
    deadline = time.monotonic() + timeout
    while hetzner.servers.get_by_id(server_id).status != "off":
        if time.monotonic() > deadline:
            raise ResizeError(
                f"server {server.name} did not shut down within {timeout:.0f} s of Hetzner's ACPI request; "
                "it was not resized"
            )
        time.sleep(POLL_SECONDS)


def _ensure_running(hetzner: Client, server_id: int, say: Say) -> None:
    from hcloud import APIException

    try:
        server = hetzner.servers.get_by_id(server_id)
    except APIException as error:
        if error.code == "not_found":
            return
        raise
    if server.status == "off":
        say(f"server {server.name}: off after its resize; powering it on\n")
        server.power_on().wait_until_finished()
