"""``billing-gateway consume``: the consumer as a service, with an HTTP face.

The table follows the stream; other processes (nginx ``auth_request``, Envoy
``ext_authz``, gateways in other languages) ask it over HTTP:

- ``GET /healthz``: the process is up.
- ``GET /readyz``: 200 once caught up with the stream (and no gap), else 503.
- ``GET /metrics``: Prometheus text.
- ``GET /v1/budgets/{tenant_id}``: the Budget as JSON (404 for an unknown tenant).
- ``POST /v1/check`` and ``POST /v1/spend`` with ``{"tenant_id": ..., "amount": <micros>}``:
  the Decision as JSON, with status 200 when allowed and 403 when refused (so
  ``auth_request`` can use the status alone). ``GET /v1/check?tenant_id=&amount=``
  does the same for callers that cannot send a body.

SIGTERM or SIGINT: finish the message in hand, write a final snapshot, drain, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .consumer import EventConsumer
from .errors import InvalidAmount
from .gateway import Decision, Gateway
from .metrics import registry_for
from .models import Budget
from .money import from_micros
from .natsd import EmbeddedNats
from .snapshots import SnapshotStore

__all__ = ["DaemonOptions", "create_app", "resolve_nats", "run"]

log = logging.getLogger(__name__)


class SpendRequest(msgspec.Struct, frozen=True):
    tenant_id: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    amount: Annotated[int, msgspec.Meta(ge=0)]


_request_decoder = msgspec.json.Decoder(SpendRequest)
_json = msgspec.json.Encoder()


def _response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=_json.encode(body), status=status, content_type="application/json")


def _error(status: int, message: str, field: str | None = None) -> web.Response:
    return _response({"error": message, "field": field}, status)


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


def decision_json(d: Decision, tenant_id: str, amount: int) -> dict[str, Any]:
    return {
        "tenant_id": tenant_id,
        "amount": amount,
        "allowed": d.allowed,
        "reason": d.reason.value,
        "remaining": d.remaining,
    }


def create_app(consumer: EventConsumer) -> web.Application:
    gateway = consumer.gateway
    registry = registry_for(consumer)

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

    async def budget(request: web.Request) -> web.Response:
        tenant_id = request.match_info["tenant_id"]
        found = gateway.budget(tenant_id)
        if found is None:
            return _error(404, f"unknown tenant {tenant_id!r}", "tenant_id")
        return _response(budget_json(found))

    async def parse(request: web.Request) -> SpendRequest | web.Response:
        if request.method == "GET":
            tenant_id, amount = request.query.get("tenant_id"), request.query.get("amount")
            if not tenant_id:
                return _error(400, "missing query parameter tenant_id", "tenant_id")
            if amount is None or not amount.isdigit():
                return _error(400, "amount must be a non-negative int of micro-units", "amount")
            return SpendRequest(tenant_id, int(amount))
        try:
            return _request_decoder.decode(await request.read())
        except msgspec.ValidationError as exc:
            text = str(exc)
            field = text.rsplit("$.", 1)[1].rstrip("`") if "$." in text else None
            if field is None and "missing required field" in text:
                field = text.split("`")[1]
            return _error(400, text, field)
        except msgspec.DecodeError as exc:
            return _error(400, f"malformed JSON: {exc}")

    def decide(check: bool) -> Any:
        async def handler(request: web.Request) -> web.Response:
            parsed = await parse(request)
            if isinstance(parsed, web.Response):
                return parsed
            try:
                fn = gateway.check if check else gateway.spend
                d = fn(parsed.tenant_id, parsed.amount)
            except InvalidAmount as exc:
                return _error(400, str(exc), "amount")
            return _response(decision_json(d, parsed.tenant_id, parsed.amount), 200 if d.allowed else 403)

        return handler

    app = web.Application(client_max_size=64 * 1024)
    app.add_routes(
        [
            web.get("/healthz", healthz),
            web.get("/readyz", readyz),
            web.get("/metrics", metrics),
            web.get("/v1/budgets/{tenant_id}", budget),
            web.post("/v1/check", decide(check=True)),
            web.get("/v1/check", decide(check=True)),
            web.post("/v1/spend", decide(check=False)),
        ]
    )
    return app


def resolve_nats(nats_url: str | None, data_dir: Path) -> tuple[str, EmbeddedNats | None]:
    """``nats_url``; or the embedded server of ``data_dir`` (started if not yet running)."""
    if nats_url:
        return nats_url, None
    url_file = data_dir / "nats.url"
    if url_file.exists():
        url = url_file.read_text().strip()
        host, port = url.removeprefix("nats://").rsplit(":", 1)
        with contextlib.suppress(OSError), socket.create_connection((host, int(port)), 0.5):
            return url, None
    server = EmbeddedNats(data_dir / "nats").start()
    url_file.write_text(server.url)
    return server.url, server


@dataclass(frozen=True)
class DaemonOptions:
    nats_url: str | None = None
    snapshot: Path | None = None
    snapshot_every_s: float = 10.0
    host: str = "127.0.0.1"
    port: int = 8089
    data_dir: Path = Path(".billing-gateway")
    grace_period_s: float = 86_400.0
    unknown_tenant: str = "deny"


async def run(options: DaemonOptions) -> int:
    url, embedded = resolve_nats(options.nats_url, options.data_dir)
    store = SnapshotStore(options.snapshot) if options.snapshot else None
    gateway_options = {
        "grace_period_s": options.grace_period_s,
        "unknown_tenant": options.unknown_tenant,
    }
    gateway = store.load_or_new(**gateway_options) if store else Gateway(**gateway_options)  # type: ignore[arg-type]
    consumer = EventConsumer(gateway, url, snapshots=store, snapshot_every_s=options.snapshot_every_s)
    runner = web.AppRunner(create_app(consumer), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, options.host, options.port).start()
    log.info(
        "serving http://%s:%d, following %s from cursor %d",
        options.host,
        options.port,
        url,
        consumer.cursor,
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
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
    await stop.wait()
    log.info("stopping: finishing the message in hand, writing a final snapshot")
    await consumer.stop()
    await runner.cleanup()
    if embedded is not None:
        embedded.stop()
    log.info("stopped at cursor %d", consumer.cursor)
    return 0
