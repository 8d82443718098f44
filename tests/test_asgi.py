"""BudgetMiddleware in front of real Starlette and Litestar apps, served by uvicorn."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from billing_gateway import Gateway, to_micros
from billing_gateway.asgi import AdmittedRequest, BudgetMiddleware
from billing_gateway.natsd import free_port
from litestar import Litestar, get
from litestar import Request as LitestarRequest
from litestar.response import Stream
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from .conftest import created

HOLD = to_micros("1.50")
called: list[str] = []


async def _ticks(n: int, delay: float) -> AsyncIterator[bytes]:
    for i in range(n):
        await asyncio.sleep(delay)
        yield f"tick {i}\n".encode()


async def hello(request: Request) -> JSONResponse:
    called.append("hello")
    admitted: AdmittedRequest = request.scope["billing_gateway"]
    if "actual" in request.query_params:
        admitted.actual = int(request.query_params["actual"])
    return JSONResponse({"tenant": admitted.tenant_id, "hold": admitted.hold})


async def stream(request: Request) -> StreamingResponse:
    called.append("stream")
    n = int(request.query_params.get("n", "5"))
    return StreamingResponse(
        _ticks(n, float(request.query_params.get("delay", "0"))), media_type="text/plain"
    )


async def boom(_: Request) -> JSONResponse:
    called.append("boom")
    raise RuntimeError("the app failed")


def starlette_app() -> Starlette:
    return Starlette(routes=[Route("/hello", hello), Route("/stream", stream), Route("/boom", boom)])


@get("/hello")
async def lit_hello() -> dict[str, str]:
    called.append("hello")
    return {"hello": "litestar"}


@get("/stream")
async def lit_stream(request: LitestarRequest[Any, Any, Any]) -> Stream:
    called.append("stream")
    n, delay = int(request.query_params.get("n", "5")), float(request.query_params.get("delay", "0"))
    return Stream(_ticks(n, delay), media_type="text/plain")


def litestar_app() -> Litestar:
    return Litestar([lit_hello, lit_stream], logging_config=None)


def tenant_of(scope: dict[str, Any]) -> str | None:
    headers = dict(scope["headers"])
    key = headers.get(b"x-api-key")
    return {b"key-1": "cus_1", b"key-poor": "cus_poor"}.get(key) if key else None


def serve(app: Any) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(params=["starlette", "litestar"])
def site(request: pytest.FixtureRequest) -> Iterator[tuple[str, Gateway]]:
    gw = Gateway()
    start = datetime.now(UTC) - timedelta(days=1)
    gw.apply(created("sub_1", "cus_1", start=start, end=start + timedelta(days=30)))
    gw.apply(created("sub_p", "cus_poor", total="1", start=start, end=start + timedelta(days=30)))
    app = starlette_app() if request.param == "starlette" else litestar_app()
    wrapped = BudgetMiddleware(app, gw, tenant=tenant_of, cost=lambda scope: HOLD)
    called.clear()
    for url in serve(wrapped):
        yield url, gw


def spent(gw: Gateway, tenant: str = "cus_1") -> tuple[int, int]:
    b = gw.budget(tenant)
    assert b is not None
    return b.spent, b.reserved


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_admits_and_commits_the_hold(site: tuple[str, Gateway]) -> None:
    url, gw = site
    r = httpx.get(f"{url}/hello", headers={"x-api-key": "key-1"})
    assert r.status_code == 200
    assert r.headers["x-budget-remaining"] == "98.5"
    wait_for(lambda: spent(gw) == (HOLD, 0))


def test_refuses_before_the_app_runs(site: tuple[str, Gateway]) -> None:
    url, gw = site
    r = httpx.get(f"{url}/hello", headers={"x-api-key": "key-poor"})
    assert r.status_code == 402
    assert r.json()["error"]["code"] == "insufficient_budget"
    assert httpx.get(f"{url}/hello").status_code == 401
    assert called == []
    assert spent(gw, "cus_poor") == (0, 0)


def test_streaming_commits_when_the_stream_completes(site: tuple[str, Gateway]) -> None:
    url, gw = site
    with httpx.stream("GET", f"{url}/stream?n=5&delay=0.05", headers={"x-api-key": "key-1"}) as r:
        assert r.status_code == 200
        lines = []
        for line in r.iter_lines():
            lines.append(line)
            if len(lines) == 1:
                assert spent(gw) == (0, HOLD)  # held while the stream runs
    assert lines == [f"tick {i}" for i in range(5)]
    wait_for(lambda: spent(gw) == (HOLD, 0))


def test_client_disconnect_mid_stream_releases(site: tuple[str, Gateway]) -> None:
    url, gw = site
    with httpx.stream("GET", f"{url}/stream?n=200&delay=0.02", headers={"x-api-key": "key-1"}) as r:
        for _ in r.iter_lines():
            break  # leave after the first line
    wait_for(lambda: spent(gw) == (0, 0))


def test_actual_charge_and_app_error_release() -> None:
    gw = Gateway()
    start = datetime.now(UTC) - timedelta(days=1)
    gw.apply(created(start=start, end=start + timedelta(days=30)))
    wrapped = BudgetMiddleware(starlette_app(), gw, tenant=tenant_of, cost=lambda scope: HOLD)
    for url in serve(wrapped):
        r = httpx.get(f"{url}/hello?actual=250000", headers={"x-api-key": "key-1"})
        assert r.status_code == 200
        wait_for(lambda: spent(gw) == (250_000, 0))
        r = httpx.get(f"{url}/boom", headers={"x-api-key": "key-1"})
        assert r.status_code == 500
        wait_for(lambda: spent(gw) == (250_000, 0))


def test_lifespan_passes_through() -> None:
    events: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        events.append(scope["type"])

    wrapped = BudgetMiddleware(app, Gateway(), tenant=lambda s: None, cost=lambda s: 0)
    asyncio.run(wrapped({"type": "lifespan"}, None, None))  # type: ignore[arg-type]
    assert events == ["lifespan"]
