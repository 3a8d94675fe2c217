"""HTTP intake and operator view: Starlette on uvicorn, two listeners in one process.

The public listener (CLAW_PUBLIC_BIND), for the internet, serves only:
POST /webhooks/billing      billing events (signed); 200 once stored, 4xx with the reason, 503 when the store is down
GET  /healthz               the process answers

The private listener (CLAW_PRIVATE_BIND), for the platform's private network, serves the rest:
GET  /customers/<id>        status of a customer's stack, with its job history   (Authorization: Bearer <token>)
GET  /jobs                  every job, oldest first                              (Authorization: Bearer <token>)
GET  /jobs/<event id>       one job                                              (Authorization: Bearer <token>)
GET  /stacks                the fleet: customers provisioned and not cancelled   (operator or review token)
GET  /stacks/<stack>/settings  the stack's whole config (the customer's last completed provision and
                            the platform's settings) and its Hetzner project; 404 when unknown
                                                                                 (operator or review token)
GET  /stacks/<stack>/state  the stack's state with every secret replaced (fleet.redact), as a worker kept
                            it after the stack's last operation: what a pull request's preview runs
                            against; 404 when none is kept                       (operator or review token)
POST /deploys               {"customer_id", "request_id"[, "commit"][, "refresh": true]}: deploy a stack (a
                            rollout's step; with refresh, a drift repair); 404 unknown customer, 409
                            cancelled                                            (Authorization: Bearer <token>)
GET  /healthz               the process answers
GET  /readyz                the store and the queue answer (503 otherwise)
GET  /metrics               Prometheus: jobs by state, attempt latency, queue depth, deliveries (no token:
                            only on this listener)

uvicorn's event loop holds idle and slow connections for the cost of a socket each; everything that
touches the store runs on a bounded thread pool (CLAW_HTTP_THREADS). A body is read as it streams in
and refused once more than CLAW_MAX_BODY_BYTES have arrived, whatever its headers claim, or once it
has taken CLAW_HTTP_BODY_TIMEOUT_SECONDS.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import aclosing, asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fleet.desired import FromStore, MissingSettings, stack_config
from fleet.stacks import CUSTOMER_PREFIX
from provisioner import billing
from provisioner.runner import stack_name
from provisioner.settings import COMMIT_PATTERN, ProvisionerSettings
from provisioner.store import ATTEMPT_BUCKETS, OUTCOMES, STATES, DeployRefused, Job, JobStore, StoreUnavailable
from provisioner.webhook import Delivery, WebhookError, parse, verify

log = logging.getLogger("provisioner")
_CUSTOMER = re.compile(r"[a-z][a-z0-9-]{0,38}[a-z0-9]")


class DeployOrder(BaseModel):
    """A deploy of one customer's stack; `request_id` makes a resubmission a duplicate."""

    model_config = ConfigDict(extra="forbid")

    customer_id: str = Field(pattern=f"^{_CUSTOMER.pattern}$")
    request_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
    # The commit being rolled out: only a worker running it may deploy the stack.
    commit: str | None = Field(default=None, pattern=COMMIT_PATTERN)
    # Drift repair: the stack's state is refreshed from the cloud before the deploy's preview.
    refresh: StrictBool = False


def _first_problem(error: ValidationError) -> str:
    problem = error.errors()[0]
    field = ".".join(str(part) for part in problem["loc"]) or "body"
    return f"{field}: {problem['msg']}"


def job_view(job: Job) -> dict[str, Any]:
    """What the API shows of a job: never its config (it may carry customer keys)."""
    return {
        "event_id": job.event_id,
        "customer_id": job.customer_id,
        "kind": job.kind,
        "status": job.status,
        "created": job.created,
        "attempts": job.attempts,
        "next_attempt": job.run_after if job.state == "queued" else None,
        "last_error": job.last_error,
        "outputs": job.outputs,
        "worker": job.worker,
        "project": job.project,
        "commit": job.commit,
        "refresh": job.refresh,
        "received": job.received,
        "updated": job.updated,
        "history": [entry.model_dump(exclude_none=True) for entry in job.history],
    }


class _StoreCollector:
    """Read at scrape time from the store's counters, which every process's writes keep (one read of a
    fixed set of keys, whatever the number of jobs), and from the queue."""

    def __init__(self, store: JobStore, queue_depth: Callable[[], int]) -> None:
        self.store, self.queue_depth = store, queue_depth

    def collect(self) -> Iterator[Metric]:
        try:
            counters = self.store.counters()
            depth = self.queue_depth()
        except Exception as error:  # a scrape during an outage reports nothing rather than failing
            log.warning("metrics unavailable", extra={"error": repr(error)})
            return
        by_state = GaugeMetricFamily("claw_jobs", "Job records by state", labels=["state"])
        for state in STATES:
            by_state.add_metric([state], counters[f"metric:jobs:{state}"])
        yield by_state
        latency = HistogramMetricFamily(
            "claw_attempt_seconds", "Duration of stack operation attempts", labels=["outcome"]
        )
        for outcome in OUTCOMES:
            prefix = f"metric:attempts:{outcome}:"
            buckets = [(str(bound), counters[f"{prefix}{bound}"]) for bound in ATTEMPT_BUCKETS]
            buckets.append(("+Inf", counters[prefix + "count"]))
            latency.add_metric([outcome], buckets, counters[prefix + "sum"])
        yield latency
        yield GaugeMetricFamily("claw_queue_depth", "Tasks waiting in the queue, scheduled ones included", depth)


class _BodyRefused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def _bounded_body(request: Request, limit: int, seconds: float) -> bytes:
    """The request's body, counted as it arrives: refused (413) once more than `limit` bytes have been
    read, whether the body is framed by a Content-Length or chunked, and (408) once reading it has
    taken `seconds`. uvicorn stops reading a connection while 64 KiB of its body wait unconsumed, so
    what a client sends beyond that stays in the kernel's buffers, never in this process."""
    declared = request.headers.get("content-length")
    if declared is not None and "transfer-encoding" in request.headers:
        # Two framings: a proxy in front may read the other one (RFC 9112, 6.3).
        raise _BodyRefused(400, "Content-Length and Transfer-Encoding together")
    if declared is not None and not (declared.isascii() and declared.isdigit()):
        raise _BodyRefused(400, "bad Content-Length")
    if declared is not None and int(declared) > limit:
        raise _BodyRefused(413, "body too large")
    body = bytearray()
    try:
        async with asyncio.timeout(seconds), aclosing(request.stream()) as chunks:
            async for chunk in chunks:
                body += chunk
                if len(body) > limit:
                    raise _BodyRefused(413, "body too large")
    except TimeoutError:
        raise _BodyRefused(408, "the body took too long") from None
    except ClientDisconnect:
        raise _BodyRefused(400, "the client went away mid-body") from None
    return bytes(body)


def _refusal(error: _BodyRefused) -> JSONResponse:
    # Closing the connection: otherwise uvicorn would go on reading (and discarding) the rest of the body.
    return JSONResponse({"error": str(error)}, status_code=error.status, headers={"Connection": "close"})


@dataclass(frozen=True)
class Listeners:
    """The two apps `serve` runs: the internet's (billing) and the private network's (everything else)."""

    public: Starlette
    private: Starlette


def make_apps(
    settings: ProvisionerSettings,
    store: JobStore,
    enqueue: Callable[[Job], None],
    queue_depth: Callable[[], int],
) -> Listeners:
    token = settings.operator_token.get_secret_value().encode()
    desired = FromStore(store, settings.platform)
    registry = CollectorRegistry()
    registry.register(_StoreCollector(store, queue_depth))
    deliveries = Counter("claw_webhook_deliveries", "Webhook deliveries by outcome", ["outcome"], registry=registry)

    def answer(status: int, body: dict[str, Any], outcome: str) -> JSONResponse:
        deliveries.labels(outcome).inc()
        return JSONResponse(body, status_code=status)

    def deliver(body: bytes, signature: str | None) -> JSONResponse:
        try:
            verify(
                Delivery(body, signature),
                settings.webhook_secret.get_secret_value(),
                settings.signature_tolerance_seconds,
            )
            event = parse(body, settings.plans)
        except WebhookError as error:
            return answer(error.status, {"error": str(error)}, "refused")
        try:
            outcome, stored, reason = billing.accept(store, event, settings.cancellation_grace_seconds, time.time())
        except StoreUnavailable as error:
            log.error("store unavailable", extra={"event_id": event.event_id, "error": str(error)})
            return answer(503, {"error": "the job store is unavailable; deliver again later"}, "unavailable")
        fields = {"event_id": event.event_id, "customer": event.customer_id, "subscription": event.subscription}
        if outcome == "refused":
            # Answered 2xx all the same: Stripe would deliver it again for days, and it will never be used.
            log.warning("refused", extra={**fields, "stripe_customer": event.stripe_customer, "reason": reason})
        else:
            log.info(outcome, extra={**fields, "status": event.status, "reason": reason})
        if stored is not None and stored.state == "queued":
            # Also for a duplicate: its first delivery may have been stored but never queued.
            try:
                enqueue(stored)
            except Exception as error:  # stored is what counts: the sweep queues it
                log.error("enqueue failed", extra={"event_id": event.event_id, "error": repr(error)})
        return answer(200, {outcome: event.event_id}, outcome)

    async def read_body(request: Request) -> bytes:
        return await _bounded_body(request, settings.max_body_bytes, settings.http_body_timeout_seconds)

    async def webhook(request: Request) -> Response:
        try:
            body = await read_body(request)
        except _BodyRefused as error:
            deliveries.labels("refused").inc()
            return _refusal(error)
        return await run_in_threadpool(deliver, body, request.headers.get("stripe-signature"))

    reviewing = settings.review_token.get_secret_value().encode() if settings.review_token else None

    def authorised(request: Request, *, review: bool = False) -> bool:
        """The operator token; with `review`, the review token as well (reading the fleet only)."""
        given = request.headers.get("authorization", "").removeprefix("Bearer ").encode("utf-8", "replace")
        if review and reviewing is not None and hmac.compare_digest(given, reviewing):
            return True
        return hmac.compare_digest(given, token)

    def customer_view(customer_id: str) -> JSONResponse:
        job = store.latest(customer_id) if _CUSTOMER.fullmatch(customer_id) else None
        if job is None:
            return JSONResponse({"error": "unknown customer"}, status_code=404)
        view = job_view(job)
        record = billing.record_of(store, customer_id)
        if record is not None:
            view["billing"] = {
                "stripe_customer": record.stripe_customer,
                "subscription": record.owner,
                "subscriptions": {name: state.status for name, state in record.subscriptions.items()},
            }
        return JSONResponse(view)

    async def customer(request: Request) -> Response:
        if not authorised(request):
            return JSONResponse({"error": "operator token required"}, status_code=401)
        try:
            return await run_in_threadpool(customer_view, request.path_params["customer_id"])
        except StoreUnavailable:
            return JSONResponse({"error": "the job store is unavailable"}, status_code=503)

    async def jobs(request: Request) -> Response:
        if not authorised(request):
            return JSONResponse({"error": "operator token required"}, status_code=401)
        try:
            found = await run_in_threadpool(store.jobs)
        except StoreUnavailable:
            return JSONResponse({"error": "the job store is unavailable"}, status_code=503)
        return JSONResponse({"jobs": [job_view(job) for job in found]})

    async def one_job(request: Request) -> Response:
        if not authorised(request):
            return JSONResponse({"error": "operator token required"}, status_code=401)
        try:
            found = await run_in_threadpool(store.get, request.path_params["event_id"])
        except StoreUnavailable:
            return JSONResponse({"error": "the job store is unavailable"}, status_code=503)
        if found is None:
            return JSONResponse({"error": "unknown job"}, status_code=404)
        return JSONResponse(job_view(found))

    async def fleet_stacks(request: Request) -> Response:
        if not authorised(request, review=True):
            return JSONResponse({"error": "operator or review token required"}, status_code=401)
        try:
            customers = await run_in_threadpool(store.deployable)
        except StoreUnavailable:
            return JSONResponse({"error": "the job store is unavailable"}, status_code=503)
        return JSONResponse({"stacks": [stack_name(customer) for customer in customers]})

    async def stack_settings(request: Request) -> Response:
        if not authorised(request, review=True):
            return JSONResponse({"error": "operator or review token required"}, status_code=401)
        try:
            last = await run_in_threadpool(desired.last_provisioned, request.path_params["stack"])
        except MissingSettings as error:
            return JSONResponse({"error": str(error)}, status_code=404)
        except StoreUnavailable:
            return JSONResponse({"error": "the job store is unavailable"}, status_code=503)
        return JSONResponse({"config": stack_config(last.config, settings.platform), "project": last.project})

    async def stack_state(request: Request) -> Response:
        if not authorised(request, review=True):
            return JSONResponse({"error": "operator or review token required"}, status_code=401)
        stack = request.path_params["stack"]
        try:
            export = await run_in_threadpool(store.redacted_state, stack.removeprefix(CUSTOMER_PREFIX))
        except StoreUnavailable:
            return JSONResponse({"error": "the job store is unavailable"}, status_code=503)
        if export is None or not stack.startswith(CUSTOMER_PREFIX):
            error = f"{stack}: no redacted state is kept; a worker keeps one after each of the stack's operations"
            return JSONResponse({"error": error}, status_code=404)
        return JSONResponse(export)

    def submit_deploy(order: DeployOrder) -> JSONResponse:
        job = Job(
            event_id=f"deploy-{order.request_id}-{order.customer_id}",
            kind="deploy",
            customer_id=order.customer_id,
            created=int(time.time()),
            commit=order.commit,
            refresh=order.refresh,
        )
        try:
            accepted = store.accept_stack_job(job)
        except StoreUnavailable:
            return JSONResponse({"error": "the job store is unavailable; submit again later"}, status_code=503)
        if isinstance(accepted, DeployRefused):
            return JSONResponse({"error": accepted.reason}, status_code=404 if accepted.unknown else 409)
        outcome, stored = accepted
        log.info(f"deploy {outcome}", extra={"event_id": stored.event_id, "customer": stored.customer_id})
        if stored.state == "queued":
            try:
                enqueue(stored)
            except Exception as error:  # stored is what counts: the sweep queues it
                log.error("enqueue failed", extra={"event_id": stored.event_id, "error": repr(error)})
        return JSONResponse({outcome: stored.event_id})

    async def deploys(request: Request) -> Response:
        if not authorised(request):
            return JSONResponse({"error": "operator token required"}, status_code=401)
        try:
            order = DeployOrder.model_validate_json(await read_body(request))
        except _BodyRefused as error:
            return _refusal(error)
        except ValidationError as error:
            return JSONResponse({"error": _first_problem(error)}, status_code=400)
        return await run_in_threadpool(submit_deploy, order)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True})

    def check_ready() -> None:
        store.kv.ping()
        queue_depth()

    async def readyz(request: Request) -> Response:
        try:
            await asyncio.wait_for(run_in_threadpool(check_ready), 5)
        except Exception as error:
            log.warning("not ready", extra={"error": repr(error)})
            return JSONResponse({"ready": False, "error": type(error).__name__}, status_code=503)
        return JSONResponse({"ready": True})

    async def metrics(request: Request) -> Response:
        body = await run_in_threadpool(generate_latest, registry)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # The one bound on threads that touch the store (Starlette's sync work runs on anyio's pool).
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.http_threads
        yield

    public = Starlette(
        routes=[
            Route("/webhooks/billing", webhook, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    private = Starlette(
        routes=[
            Route("/customers/{customer_id}", customer, methods=["GET"]),
            Route("/jobs", jobs, methods=["GET"]),
            Route("/jobs/{event_id}", one_job, methods=["GET"]),
            Route("/stacks", fleet_stacks, methods=["GET"]),
            Route("/stacks/{stack}/settings", stack_settings, methods=["GET"]),
            Route("/stacks/{stack}/state", stack_state, methods=["GET"]),
            Route("/deploys", deploys, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    return Listeners(public, private)


def serve(settings: ProvisionerSettings, listeners: Listeners) -> None:
    """Both listeners in one event loop (one thread pool, one store connection per thread); SIGTERM or
    SIGINT stops both gracefully."""
    import uvicorn

    from provisioner.logs import uvicorn_config

    class Listener(uvicorn.Server):
        @contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield  # the process's signals stop both listeners (below), not the last one started

    def listener(app: Starlette, bind: str) -> Listener:
        host, _, port = bind.rpartition(":")
        config = uvicorn.Config(
            app,
            host=host.strip("[]"),
            port=int(port),
            log_config=uvicorn_config(),
            backlog=2048,  # a burst of deliveries queues in the kernel instead of being reset
            limit_concurrency=settings.http_max_connections,  # beyond this, 503 instead of exhaustion
            timeout_keep_alive=5,
            timeout_graceful_shutdown=10,
            h11_max_incomplete_event_size=16 * 1024,  # request line and headers
            server_header=False,
            proxy_headers=False,
        )
        return Listener(config)

    servers = [listener(listeners.public, settings.public_bind), listener(listeners.private, settings.private_bind)]

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, lambda: [setattr(server, "should_exit", True) for server in servers])
        await asyncio.gather(*(server.serve() for server in servers))

    asyncio.run(run())
