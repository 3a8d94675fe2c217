"""HTTP intake and operator view.

POST /webhooks/billing      billing events (signed); 200 once stored, 4xx with the reason otherwise
GET  /customers/<id>        status of a customer's stack          (Authorization: Bearer <token>)
GET  /jobs                  every job, oldest first                (Authorization: Bearer <token>)
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from provisioner.settings import ProvisionerSettings
from provisioner.store import Job, JobStore
from provisioner.webhook import Delivery, WebhookError, parse, verify

log = logging.getLogger("provisioner")
_CUSTOMER_PATH = re.compile(r"^/customers/([a-z][a-z0-9-]{0,38}[a-z0-9])$")


def job_view(job: Job) -> dict[str, Any]:
    """What the API shows of a job: never its config (it may carry customer keys)."""
    return {
        "event_id": job.event_id,
        "customer_id": job.customer_id,
        "kind": job.kind,
        "status": job.status,
        "attempts": job.attempts,
        "last_error": job.last_error,
        "outputs": job.outputs,
        "created": job.created,
        "updated": job.updated,
    }


def make_server(settings: ProvisionerSettings, store: JobStore, enqueue: Callable[[Job], None]) -> ThreadingHTTPServer:
    token = settings.operator_token.get_secret_value()

    class Handler(BaseHTTPRequestHandler):
        server_version = "clawhosters-provisioner"

        def log_message(self, format: str, *args: Any) -> None:
            log.info(json.dumps({"event": "http", "client": self.client_address[0], "line": format % args}))

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_POST(self) -> None:
            if self.path != "/webhooks/billing":
                return self._answer(HTTPStatus.NOT_FOUND, {"error": "not found"})
            length = self.headers.get("Content-Length", "")
            if not length.isdigit():
                return self._answer(HTTPStatus.LENGTH_REQUIRED, {"error": "Content-Length required"})
            if int(length) > settings.max_body_bytes:
                return self._answer(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "body too large"})
            body = self.rfile.read(int(length))
            try:
                verify(
                    Delivery(body, self.headers.get("Stripe-Signature")),
                    settings.webhook_secret.get_secret_value(),
                    settings.signature_tolerance_seconds,
                )
                job = parse(body, settings.cancellation_grace_seconds)
            except WebhookError as error:
                return self._answer(error.status, {"error": str(error)})
            if store.accept(job):
                log.info(json.dumps({"event": "accepted", "event_id": job.event_id, "customer": job.customer_id}))
                try:
                    enqueue(job)
                except Exception as error:
                    log.error(json.dumps({"event": "enqueue failed", "event_id": job.event_id, "error": repr(error)}))
                return self._answer(HTTPStatus.OK, {"accepted": job.event_id})
            return self._answer(HTTPStatus.OK, {"duplicate": job.event_id})

        def do_GET(self) -> None:
            given = self.headers.get("Authorization", "").removeprefix("Bearer ")
            if not hmac.compare_digest(given.encode(), token.encode()):
                return self._answer(HTTPStatus.UNAUTHORIZED, {"error": "operator token required"})
            if self.path == "/jobs":
                return self._answer(HTTPStatus.OK, {"jobs": [job_view(job) for job in store.jobs()]})
            match = _CUSTOMER_PATH.match(self.path)
            job = store.latest(match.group(1)) if match else None
            if job is None:
                return self._answer(HTTPStatus.NOT_FOUND, {"error": "unknown customer"})
            return self._answer(HTTPStatus.OK, job_view(job))

    host, _, port = settings.bind.rpartition(":")
    return ThreadingHTTPServer((host, int(port)), Handler)
