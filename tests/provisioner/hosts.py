"""The stand-in CLI's hosts for the health gate after a deploy: each answers as a healthy host does
(the gateway refuses without credentials, the installed baseline is the one `up` reported, here an
empty one). The rest of the deploy, preview, plan and `up`, is the real AutomationRunner's."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Mapping
from typing import Any

from fleet.health import GATEWAY_UNAUTHENTICATED, Probe
from provisioner.runner import AutomationRunner


class HealthyHosts:
    def gateway_status(self, url: str) -> int | None:
        return GATEWAY_UNAUTHENTICATED

    def host_bundle(self, stack: str, outputs: Mapping[str, Any]) -> bytes:
        stream = io.BytesIO()
        with tarfile.open(fileobj=stream, mode="w"):
            pass
        return stream.getvalue()


class RunnerWithStandInHosts(AutomationRunner):
    def probe(self, project: str) -> Probe:
        return HealthyHosts()
