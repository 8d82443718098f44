"""A Starlette app behind BudgetMiddleware: each request holds $0.01, a streaming
endpoint is committed when its stream ends, and ``/cheap`` charges less than it held.

    uvicorn examples.asgi_app:app          # then: curl -H 'x-api-key: key-demo' localhost:8000/
    python examples/asgi_app.py            # runs a few requests in process and prints them
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
from billing_gateway import Gateway, events, from_micros, to_micros
from billing_gateway.asgi import AdmittedRequest, BudgetMiddleware
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

KEYS = {b"key-demo": "cus_demo"}
HOLD = to_micros("0.01")

gateway = Gateway()
now = datetime.now(UTC)
gateway.apply(
    events.SubscriptionCreated(
        event_id="evt_asgi_demo",
        timestamp=now,
        data=events.SubscriptionCreatedData(
            subscription_id="sub_demo",
            customer_id="cus_demo",
            plan_id="plan_small",
            plan_name="Small",
            total_budget=Decimal("0.05"),
            currency="USD",
            period_start=now - timedelta(days=1),
            period_end=now + timedelta(days=29),
        ),
    )
)


async def hello(_: Request) -> JSONResponse:
    return JSONResponse({"hello": "world"})


async def cheap(request: Request) -> JSONResponse:
    admitted: AdmittedRequest = request.scope["billing_gateway"]
    admitted.actual = admitted.hold // 10  # the work turned out cheaper than held
    return JSONResponse({"charged": str(from_micros(admitted.actual))})


async def ticks() -> AsyncIterator[bytes]:
    for i in range(3):
        await asyncio.sleep(0.01)
        yield f"tick {i}\n".encode()


async def stream(_: Request) -> StreamingResponse:
    return StreamingResponse(ticks(), media_type="text/plain")


def tenant(scope: dict[str, Any]) -> str | None:
    return KEYS.get(dict(scope["headers"]).get(b"x-api-key", b""))


app = BudgetMiddleware(
    Starlette(routes=[Route("/", hello), Route("/cheap", cheap), Route("/stream", stream)]),
    gateway,
    tenant=tenant,
    cost=lambda scope: HOLD,
)


async def main() -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://demo") as client:
        for path in ("/", "/cheap", "/stream", "/", "/", "/", "/"):
            r = await client.get(path, headers={"x-api-key": "key-demo"})
            left = r.headers.get("x-budget-remaining")
            print(f"GET {path:<8} -> {r.status_code} {r.text.strip()!r:<48} left {left}")
        r = await client.get("/")
        print(f"GET / without a key -> {r.status_code}")
    budget = gateway.budget("cus_demo")
    assert budget is not None
    print(f"spent {from_micros(budget.spent)} of {from_micros(budget.total)}, held {budget.reserved}")


if __name__ == "__main__":
    asyncio.run(main())
