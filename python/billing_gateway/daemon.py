"""``billing-gateway consume``: the consumer as a service, with an HTTP face.

The table follows the stream; other processes (nginx ``auth_request``, Envoy
``ext_authz``, gateways in other languages) ask it over HTTP:

- ``GET /healthz``: the process is up.
- ``GET /readyz``: 200 once caught up with the stream (and no gap), else 503.
- ``GET /metrics``: Prometheus text.
- ``GET /v1/budgets?after=&limit=``: every Budget, by tenant id, a page at a time.
- ``GET /v1/budgets/{tenant_id}``: the Budget as JSON (404 for an unknown tenant).
- ``POST /v1/check`` and ``POST /v1/spend`` with ``{"tenant_id": ..., "amount": <micros>}``:
  the Decision as JSON, with status 200 when allowed and 403 when refused (so
  ``auth_request`` can use the status alone). ``GET /v1/check?tenant_id=&amount=``
  does the same for callers that cannot send a body.
- ``POST /v1/route`` with ``{"tenant_id": ... or null, "attrs": {...}}``: the Route as JSON
  (``policy_id``, ``target``, ``fallbacks``), 404 when no policy matches.

SIGTERM or SIGINT: finish the message in hand, write a final snapshot, drain, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from . import broker
from .broker import resolve_nats
from .consumer import EventConsumer
from .errors import InvalidAmount
from .gateway import Decision, Gateway, Route
from .httpsafety import QuietServerLog, error_middleware, json_error, read_body
from .metrics import registry_for
from .models import Budget
from .money import from_micros
from .snapshots import SavedState, SnapshotStore
from .usage import UsageReporter

if TYPE_CHECKING:
    from .leases import BudgetLeases

__all__ = ["DaemonOptions", "create_app", "run"]

log = logging.getLogger(__name__)


MAX_AMOUNT = 2**63 - 1
"""The largest amount the HTTP API takes, in micro-units (9,223,372,036,854.775807)."""


class SpendRequest(msgspec.Struct, frozen=True):
    tenant_id: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    amount: Annotated[int, msgspec.Meta(ge=0, le=MAX_AMOUNT)]


class RouteRequest(msgspec.Struct, frozen=True):
    attrs: dict[str, Any]
    """The request's attributes, ``request`` in the policies' expressions."""
    tenant_id: Annotated[str, msgspec.Meta(min_length=1, max_length=256)] | None = None
    """Whose budget ``budget`` is; null (or absent) for none."""


T = TypeVar("T")
_request_decoder = msgspec.json.Decoder(SpendRequest)
_route_decoder = msgspec.json.Decoder(RouteRequest)
_json = msgspec.json.Encoder()
_error = json_error


def _within_id_limit(request: SpendRequest) -> SpendRequest | web.Response:
    """Ids are at most 256 bytes of UTF-8 (as in events), whatever the characters."""
    if len(request.tenant_id.encode("utf-8", "surrogatepass")) > 256:
        return _error(400, "tenant_id is longer than 256 bytes", "tenant_id")
    return request


def _response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=_json.encode(body), status=status, content_type="application/json")


def _query_amount(text: str | None) -> int | None:
    """A query-string amount: plain ASCII digits within ``MAX_AMOUNT``, else None."""
    if text is None or not text.isascii() or not text.isdigit() or len(text) > 19:
        return None
    value = int(text)
    return value if value <= MAX_AMOUNT else None


def _decode_error(exc: Exception) -> web.Response:
    """A 400 for a body msgspec refused, naming the field when it can."""
    text = str(exc)
    if isinstance(exc, msgspec.ValidationError):
        field = text.rsplit("$.", 1)[1].rstrip("`") if "$." in text else None
        if field is None and "missing required field" in text:
            field = text.split("`")[1]
        return _error(400, text, field)
    return _error(400, f"malformed JSON: {text or type(exc).__name__}")


def budget_json(b: Budget) -> dict[str, Any]:
    """A Budget for the wire: integer micro-units, the same as decimal strings, ISO times."""
    money = {"total": b.total, "spent": b.spent, "reserved": b.reserved, "remaining": b.remaining}
    return {
        "tenant_id": b.tenant_id,
        "subscription_id": b.subscription_id,
        "plan_id": b.plan_id,
        "plan_name": b.plan_name,
        "currency": b.currency,
        **money,
        "decimal": {k: str(from_micros(v)) for k, v in money.items()},
        "period_start": b.period_start.isoformat().replace("+00:00", "Z"),
        "period_end": b.period_end.isoformat().replace("+00:00", "Z"),
        "status": b.status,
    }


def route_json(r: Route) -> dict[str, Any]:
    return {"policy_id": r.policy_id, "target": r.target, "fallbacks": list(r.fallbacks)}


async def _decoded(request: web.Request, decoder: msgspec.json.Decoder[T]) -> T | web.Response:
    """The request's JSON body, or a 400 naming what is wrong with it."""
    body = await read_body(request)
    try:
        return decoder.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError, ValueError) as exc:
        return _decode_error(exc)


def decision_json(d: Decision, tenant_id: str, amount: int) -> dict[str, Any]:
    return {
        "tenant_id": tenant_id,
        "amount": amount,
        "allowed": d.allowed,
        "reason": d.reason.value,
        "remaining": d.remaining,
    }


def create_app(
    consumer: EventConsumer,
    leases: BudgetLeases | None = None,
    *,
    client_max_size: int = 64 * 1024,
    collectors: Iterable[Collector] = (),
) -> web.Application:
    """The daemon's API. With ``leases``, ``/v1/spend`` refills a used-up slice (one Redis
    round trip) before it answers; ``collectors`` add to what ``/metrics`` reports (the
    proxy's)."""
    gateway = consumer.gateway
    registry = registry_for(consumer, leases)
    for collector in collectors:
        registry.register(collector)

    async def spend(tenant_id: str, amount: int) -> Decision:
        if leases is None:
            return gateway.spend(tenant_id, amount)
        return await leases.spend(tenant_id, amount)

    async def healthz(_: web.Request) -> web.Response:
        return _response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        body = {
            "ready": consumer.ready,
            "current": consumer.is_current(),
            "lag": consumer.lag,
            "gap": consumer.gap_detected,
            "cursor": consumer.cursor,
        }
        return _response(body, 200 if consumer.ready else 503)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def budgets(request: web.Request) -> web.Response:
        """Every budget, by tenant id, a page at a time: ``?after=<tenant_id>&limit=<n>``."""
        after = request.query.get("after", "")
        limit_text = request.query.get("limit", "100")
        if not (limit_text.isascii() and limit_text.isdigit() and 1 <= int(limit_text) <= 1000):
            return _error(400, "limit must be an integer in 1..1000", "limit")
        limit = int(limit_text)
        rows = sorted((b for b in gateway.budgets() if b.tenant_id > after), key=lambda b: b.tenant_id)
        page = rows[:limit]
        following = page[-1].tenant_id if len(rows) > limit else None
        return _response({"budgets": [budget_json(b) for b in page], "next": following})

    async def budget(request: web.Request) -> web.Response:
        tenant_id = request.match_info["tenant_id"]
        try:
            found = gateway.budget(tenant_id)
        except ValueError as exc:
            return _error(400, str(exc), "tenant_id")
        if found is None:
            return _error(404, f"unknown tenant {tenant_id!r}", "tenant_id")
        return _response(budget_json(found))

    async def parse(request: web.Request) -> SpendRequest | web.Response:
        if request.method == "GET":
            tenant_id = request.query.get("tenant_id")
            if not tenant_id:
                return _error(400, "missing query parameter tenant_id", "tenant_id")
            amount = _query_amount(request.query.get("amount"))
            if amount is None:
                return _error(400, f"amount must be an int of micro-units in 0..{MAX_AMOUNT}", "amount")
            return _within_id_limit(SpendRequest(tenant_id, amount))
        decoded = await _decoded(request, _request_decoder)
        return decoded if isinstance(decoded, web.Response) else _within_id_limit(decoded)

    def decide(check: bool) -> Any:
        async def handler(request: web.Request) -> web.Response:
            parsed = await parse(request)
            if isinstance(parsed, web.Response):
                return parsed
            try:
                if check:
                    d = gateway.check(parsed.tenant_id, parsed.amount)
                else:
                    d = await spend(parsed.tenant_id, parsed.amount)
            except InvalidAmount as exc:
                return _error(400, str(exc), "amount")
            except (ValueError, OverflowError) as exc:  # e.g. a tenant id that is not valid text
                return _error(400, str(exc), "tenant_id")
            return _response(decision_json(d, parsed.tenant_id, parsed.amount), 200 if d.allowed else 403)

        return handler

    async def route(request: web.Request) -> web.Response:
        parsed = await _decoded(request, _route_decoder)
        if isinstance(parsed, web.Response):
            return parsed
        try:
            found = gateway.route(parsed.tenant_id, parsed.attrs)
        except (ValueError, TypeError, OverflowError) as exc:  # a value the policies cannot hold
            return _error(400, str(exc), "attrs")
        if found is None:
            return _error(404, "no routing policy matches")
        return _response(route_json(found))

    app = web.Application(client_max_size=client_max_size, middlewares=[error_middleware])
    app.add_routes(
        [
            web.get("/healthz", healthz),
            web.get("/readyz", readyz),
            web.get("/metrics", metrics),
            web.get("/v1/budgets", budgets),
            web.get("/v1/budgets/{tenant_id}", budget),
            web.post("/v1/check", decide(check=True)),
            web.get("/v1/check", decide(check=True)),
            web.post("/v1/spend", decide(check=False)),
            web.post("/v1/route", route),
        ]
    )
    return app


@dataclass(frozen=True)
class DaemonOptions:
    nats_url: str | None = None
    snapshot: Path | None = None
    snapshot_every_s: float = 1.0
    host: str = "127.0.0.1"
    port: int = 8089
    data_dir: Path = Path(".billing-gateway")
    grace_period_s: float = 86_400.0
    max_parked_bytes: int = 64 * 1024 * 1024
    unknown_tenant: str = "deny"
    report_usage: bool = True
    usage_every_s: float = 5.0
    billing_url: str | None = None
    billing_key: str | None = None
    idle_timeout_s: float = 15.0
    redis_url: str | None = None
    lease_mode: str = "strict"
    lease_ttl_s: float = 10.0
    replica_id: str | None = None
    lease_key_prefix: str = "bg"


def _rebuild_from_billing(url: str, key: str) -> Callable[[], Awaitable[list[bytes]]]:
    async def fetch() -> list[bytes]:
        from .billing.client import AsyncBillingClient

        async with AsyncBillingClient(url, key) as client:
            return await client.budget_events()

    return fetch


def _leases(gateway: Gateway, options: DaemonOptions) -> BudgetLeases | None:
    """The budget leases ``--redis-url`` asks for, or None."""
    if options.redis_url is None:
        return None
    from .leases import BudgetLeases  # redis, imported only when leases are asked for

    return BudgetLeases(
        gateway,
        options.redis_url,
        replica_id=options.replica_id,
        mode=options.lease_mode,
        lease_ttl_s=options.lease_ttl_s,
        key_prefix=options.lease_key_prefix,
    )


AppFactory = Callable[[EventConsumer, "BudgetLeases | None"], web.Application]


async def run(options: DaemonOptions, app_factory: AppFactory = create_app) -> int:
    """Serves ``app_factory(consumer, leases)`` (the daemon's API; the proxy adds its
    routes) while the consumer follows the stream, until SIGTERM or SIGINT."""
    store = SnapshotStore(options.snapshot) if options.snapshot else None
    if store is not None:
        store.lock()
    url = resolve_nats(options.nats_url, options.data_dir)
    gateway_options = {
        "grace_period_s": options.grace_period_s,
        "max_parked_bytes": options.max_parked_bytes,
        "unknown_tenant": options.unknown_tenant,
    }
    saved = store.load_state(**gateway_options) if store else SavedState(Gateway(**gateway_options))  # type: ignore[arg-type]
    reporter = UsageReporter(saved.gateway, interval_s=options.usage_every_s, unsent=saved.unsent_usage)
    rebuild = (
        _rebuild_from_billing(options.billing_url, options.billing_key or "") if options.billing_url else None
    )
    consumer = EventConsumer.from_saved(
        saved,
        url,
        snapshots=store,
        snapshot_every_s=options.snapshot_every_s,
        rebuild_from=rebuild,
        unsent_usage=(lambda: reporter.unsent) if options.report_usage else None,
    )
    if store is not None:
        reporter.on_drained = consumer.save_snapshot
    leases = _leases(saved.gateway, options)
    if leases is not None:
        await leases.start()
    runner = web.AppRunner(
        app_factory(consumer, leases),
        access_log=None,
        keepalive_timeout=options.idle_timeout_s,
        logger=QuietServerLog(),
    )
    await runner.setup()
    await web.TCPSite(runner, options.host, options.port).start()
    log.info(
        "serving http://%s:%d, following %s from cursor %d%s",
        options.host,
        options.port,
        url,
        consumer.cursor,
        "" if options.report_usage else " (usage reporting off)",
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    background = []
    if options.nats_url is None:
        background.append(asyncio.create_task(broker.keep_alive(options.data_dir, stop)))
    delay = 0.25
    while not stop.is_set():
        try:
            await consumer.start()
            break
        except Exception as exc:  # NATS not reachable yet: keep serving /healthz, retry
            log.warning("cannot start the consumer (%s); retrying in %.1fs", exc, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 5.0)
    if options.report_usage and not stop.is_set():
        reporter.js = consumer.jetstream
        background.append(asyncio.create_task(reporter.run(stop)))
    await stop.wait()
    log.info("stopping: finishing the message in hand, reporting usage, writing a final snapshot")
    await asyncio.gather(*background, return_exceptions=True)
    if leases is not None:
        await leases.stop()
    await consumer.stop()
    await runner.cleanup()
    log.info("stopped at cursor %d", consumer.cursor)
    return 0
