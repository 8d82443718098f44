"""``billing-gateway billing serve`` and ``billing dispatch``: the service's processes, wired
from the API (:mod:`.api`) and the workers (:mod:`.workers`).

``serve`` runs, in one process: the REST API (uvicorn), the outbox dispatcher, the
billing-cycle scheduler, the usage ingestion and the Stripe worker (which applies the
webhook events the API stored). ``dispatch`` runs the dispatcher
alone (several may run against one PostgreSQL database). SIGTERM or SIGINT stops
them after the work in hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from nats.js import JetStreamContext

from billing_gateway import broker
from billing_gateway.connection import connect_when_up
from billing_gateway.stream import ensure_stream

from .api import create_app
from .store import BillingStore
from .stripe.runtime import StripeRuntime
from .stripe.worker import StripeWorker
from .workers import Dispatcher, UsageIngestor, run_cycles

__all__ = ["ServiceOptions", "dispatch", "serve"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceOptions:
    db: str = "billing.db"
    nats_url: str | None = None
    data_dir: Path = Path(".billing-gateway")
    host: str = "127.0.0.1"
    port: int = 8088
    auto_pay: bool = True
    cycle_every_s: float = 60.0
    stripe: StripeRuntime = field(default_factory=StripeRuntime)


class _Server(uvicorn.Server):
    """uvicorn, minus its own signal handling: the service stops all its loops together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _run(options: ServiceOptions, loops: Callable[..., Loops]) -> int:
    store = BillingStore.open(options.db)
    url = broker.resolve_nats(options.nats_url, options.data_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    background = []
    if options.nats_url is None:
        background.append(asyncio.ensure_future(broker.keep_alive(options.data_dir, stop)))
    nc = await connect_when_up(url, name="billing", stop=stop)
    try:
        if nc is not None:
            js = nc.jetstream()
            await ensure_stream(js)
            await asyncio.gather(*(_supervised(name, run, stop) for name, run in loops(store, js, stop)))
    finally:
        stop.set()
        await asyncio.gather(*background)
        if nc is not None:
            await nc.drain()
        store.engine.dispose()
    return 0


Loops = list[tuple[str, Callable[[], Awaitable[None]]]]


def listen(host: str, port: int) -> socket.socket:
    """The API's listening socket, bound before anything starts so that a port in use fails
    here, once.

    ``socket.create_server`` leaves the socket's protocol unnamed (0), and asyncio turns
    Nagle's algorithm off only on connections whose protocol is ``IPPROTO_TCP``: every
    answer on a kept-alive connection then waited about 40 ms for the client's delayed ACK.
    Re-wrapping the descriptor reads the protocol back from the kernel."""
    bound = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    return socket.socket(fileno=bound.detach())


async def _supervised(name: str, run: Callable[[], Awaitable[None]], stop: asyncio.Event) -> None:
    """Runs one of the service's loops until ``stop``; a loop that fails is logged in one
    line and started again after a capped backoff, so one part never takes down the rest."""
    delay = 0.5
    while not stop.is_set():
        try:
            await run()
            return
        except Exception as exc:
            log.error("%s stopped (%s: %s); restarting it in %.1fs", name, type(exc).__name__, exc, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 30.0)


def serve(options: ServiceOptions) -> int:
    def loops(store: BillingStore, js: JetStreamContext, stop: asyncio.Event) -> Loops:
        runtime = options.stripe
        stripe_worker = StripeWorker(store, runtime.settings, runtime.gateway, runtime.metrics)
        runtime.wake = stripe_worker.wake
        config = uvicorn.Config(
            create_app(store, runtime),
            host=options.host,
            port=options.port,
            lifespan="off",
            log_config=None,  # the package's one log format, set up by the command
            access_log=False,
        )
        server = _Server(config)
        listener = listen(options.host, options.port)

        async def api() -> None:
            serving = asyncio.ensure_future(server.serve(sockets=[listener]))
            await stop.wait()
            server.should_exit = True
            await serving

        log.info("billing API on http://%s:%d", options.host, options.port)
        dispatcher, ingestor = Dispatcher(store, js), UsageIngestor(store, js)
        return [
            ("the API", api),
            ("the dispatcher", lambda: dispatcher.run(stop)),
            ("the cycle scheduler", lambda: run_cycles(store, stop, options.cycle_every_s, options.auto_pay)),
            ("the usage ingestion", lambda: ingestor.run(stop)),
            ("the Stripe worker", lambda: stripe_worker.run(stop)),
        ]

    return asyncio.run(_run(options, loops))


def dispatch(options: ServiceOptions) -> int:
    def loops(store: BillingStore, js: JetStreamContext, stop: asyncio.Event) -> Loops:
        dispatcher = Dispatcher(store, js)
        return [("the dispatcher", lambda: dispatcher.run(stop))]

    return asyncio.run(_run(options, loops))
