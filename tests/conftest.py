"""Shared test helpers: event builders, a pinned clock, and real-service fixtures."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
import sqlalchemy as sa
import uvicorn
from billing_gateway import Gateway
from billing_gateway.billing.api import create_app
from billing_gateway.billing.client import BillingClient
from billing_gateway.billing.store import BillingStore
from billing_gateway.natsd import EmbeddedNats, free_port

from .processes import Daemon

SEEDS = Path(__file__).parent.parent / "examples" / "events"
SEED_NAMES = ("subscription_created", "subscription_updated", "invoice_paid")

# A fixed "now" for tests; the default period [START, END) contains it.
NOW = datetime(2026, 6, 15, tzinfo=UTC)
START = datetime(2026, 6, 1, tzinfo=UTC)
END = datetime(2026, 7, 1, tzinfo=UTC)
SEED_NOW = datetime(2025, 12, 1, tzinfo=UTC)  # inside the seed's first period

_ids = itertools.count(1)
_encoder = msgspec.json.Encoder(decimal_format="number")


def seed(name: str) -> bytes:
    """One of the event specification's three payloads, verbatim."""
    (path,) = SEEDS.glob(f"*_{name}.json")
    return path.read_bytes()


def micros(when: datetime) -> int:
    return int((when - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))


def pin(gw: Gateway, when: datetime = NOW) -> Gateway:
    gw._set_clock(micros(when))
    return gw


def iso(when: datetime | str) -> str:
    return when if isinstance(when, str) else when.isoformat().replace("+00:00", "Z")


def event(
    event_type: str, data: dict[str, Any], *, ts: datetime | str = NOW, event_id: str | None = None
) -> bytes:
    """A JSON event envelope; Decimal values are written as JSON numbers."""
    return _encoder.encode(
        {
            "event_id": event_id or f"evt_{next(_ids)}",
            "event_type": event_type,
            "timestamp": iso(ts),
            "data": data,
        }
    )


def created(
    sub: str = "sub_1",
    cus: str = "cus_1",
    *,
    total: str = "100",
    ts: datetime | str = START,
    start: datetime = START,
    end: datetime = END,
    plan_id: str = "plan_pro",
    plan_name: str = "Pro",
    currency: str = "USD",
    status: str | None = None,
    event_id: str | None = None,
) -> bytes:
    data: dict[str, Any] = {
        "subscription_id": sub,
        "customer_id": cus,
        "plan_id": plan_id,
        "plan_name": plan_name,
        "total_budget": Decimal(total),
        "currency": currency,
        "period_start": iso(start),
        "period_end": iso(end),
    }
    if status is not None:
        data["status"] = status
    return event("subscription.created", data, ts=ts, event_id=event_id)


def updated(
    sub: str = "sub_1", *, ts: datetime | str = NOW, event_id: str | None = None, **fields: Any
) -> bytes:
    data: dict[str, Any] = {"subscription_id": sub}
    for key, value in fields.items():
        data[key] = Decimal(value) if key == "new_total_budget" else value
    return event("subscription.updated", data, ts=ts, event_id=event_id)


def paid(
    sub: str = "sub_1",
    cus: str = "cus_1",
    *,
    start: datetime = END,
    end: datetime | None = None,
    ts: datetime | str | None = None,
    event_id: str | None = None,
) -> bytes:
    data = {
        "invoice_id": f"inv_{next(_ids)}",
        "customer_id": cus,
        "subscription_id": sub,
        "amount_paid": Decimal("100.00"),
        "new_period_start": iso(start),
        "new_period_end": iso(end or start + timedelta(days=30)),
    }
    return event("invoice.paid", data, ts=ts or start, event_id=event_id)


def payment_failed(
    sub: str = "sub_1",
    cus: str = "cus_1",
    *,
    ts: datetime | str = NOW,
    event_id: str | None = None,
) -> bytes:
    data = {"customer_id": cus, "subscription_id": sub, "invoice_id": f"inv_{next(_ids)}"}
    return event("invoice.payment_failed", data, ts=ts, event_id=event_id)


@pytest.fixture
def gw() -> Gateway:
    """A gateway whose clock is pinned at NOW, with cus_1 on a 100-unit budget."""
    g = pin(Gateway())
    g.apply(created())
    return g


# ---- real services ---------------------------------------------------------------

REQUIRE_SERVICES = os.environ.get("BILLING_GATEWAY_REQUIRE_SERVICES") == "1"


def require_service(name: str, host: str, port: int) -> None:
    """Fails (in CI) or skips (on a laptop) when a server is not listening."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return
    except OSError as exc:
        message = f"{name} is not reachable on {host}:{port} ({exc})"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message}; BILLING_GATEWAY_REQUIRE_SERVICES=1 requires it")
    pytest.skip(f"{message}; set BILLING_GATEWAY_REQUIRE_SERVICES=1 to make this a failure")


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get("BILLING_GATEWAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    host_port = url.split("//", 1)[1].split("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    require_service("Redis", host or "127.0.0.1", int(port or 6379))
    return url


# ---- the Billing service on a real database and a real HTTP server ----------------------

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BillingStore]:
    if request.param == "sqlite":
        yield BillingStore.open(str(tmp_path / "billing.db"))
        return
    require_service("PostgreSQL", "127.0.0.1", 5432)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    s = BillingStore.open(POSTGRES_URL, connect_args={"options": f"-csearch_path={schema}"})
    try:
        yield s
    finally:
        s.engine.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@dataclass
class Service:
    store: BillingStore
    url: str
    admin_key: str

    def client(self, key: str | None = None) -> BillingClient:
        return BillingClient(self.url, key or self.admin_key, retries=0)


@pytest.fixture
def service(store: BillingStore) -> Iterator[Service]:
    port = free_port()
    config = uvicorn.Config(
        create_app(store), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    _, admin = store.create_api_key(["billing:*"])
    yield Service(store, f"http://127.0.0.1:{port}", admin)
    server.should_exit = True
    thread.join(10)


@pytest.fixture(autouse=True, scope="session")
def _stop_shared_brokers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The shared broker outlives the commands that start it (by design): stop every one
    that a test left running under this session's temporary directory."""
    yield
    base = str(tmp_path_factory.getbasetemp())
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and b"nats-server" in argv[0] and any(base.encode() in a for a in argv):
            with contextlib.suppress(OSError):
                os.kill(int(proc.name), signal.SIGKILL)


# ---- nats-server and the consume daemon, as real processes --------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    with EmbeddedNats(tmp_path / "nats") as s:
        yield s


@pytest.fixture
def daemon(tmp_path: Path, server: EmbeddedNats) -> Iterator[Daemon]:
    d = Daemon(tmp_path, server.url).start()
    yield d
    if d.process is not None and d.process.poll() is None:
        d.kill9()
