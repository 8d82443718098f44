"""The billing service's plumbing that latency depends on: the API's socket and the
dispatcher's bookkeeping transactions."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import nats
from billing_gateway import to_micros
from billing_gateway.billing.service import listen
from billing_gateway.billing.store import BillingStore
from billing_gateway.billing.workers.dispatcher import Dispatcher
from billing_gateway.natsd import EmbeddedNats
from billing_gateway.stream import ensure_stream


def test_the_api_socket_turns_nagle_off_on_every_connection() -> None:
    """Without TCP_NODELAY every answer on a kept-alive connection waited ~40 ms for the
    client's delayed ACK (``socket.create_server`` leaves the protocol unnamed)."""

    async def body() -> list[int]:
        seen: list[int] = []

        async def accepted(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.append(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        listener = listen("127.0.0.1", 0)
        server = await asyncio.start_server(accepted, sock=listener)
        port = listener.getsockname()[1]
        for _ in range(2):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
        while len(seen) < 2:
            await asyncio.sleep(0.01)
        server.close()
        return seen

    assert all(asyncio.run(asyncio.wait_for(body(), 30)))


def test_a_port_in_use_fails_when_listening(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        try:
            listen("127.0.0.1", port).close()
        except OSError:
            return
    raise AssertionError("listening on a port in use succeeded")


def test_the_dispatchers_bookkeeping_leaves_sqlite_connections_durable(
    tmp_path: Path, server: EmbeddedNats
) -> None:
    """Leases and marks commit without waiting for the disk; every connection goes back to
    the pool with the database's own ``synchronous`` setting (FULL), for the domain's writes."""
    store = BillingStore.open(str(tmp_path / "billing.db"))
    store.create_plan(plan_id="plan_pro", name="Pro", currency="USD", included_budget=to_micros(1), price=0)
    customer = store.create_customer("A", "a@x.io")
    store.create_subscription(customer.id, "plan_pro")

    async def body() -> int:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await ensure_stream(js)
        dispatcher = Dispatcher(store, js)
        published = 0
        while handled := await dispatcher.dispatch_once():
            published += handled
        await nc.close()
        return published

    assert asyncio.run(asyncio.wait_for(body(), 60)) == 2  # customer.created, subscription.created
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2
    assert store.outbox_state().counts == {"published": 2}
    store.engine.dispose()
