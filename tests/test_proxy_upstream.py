"""The proxy's upstream client: keep-alive connections reused, the connection limit,
failures that free their slot, and idle connections the upstream closed left alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import msgspec
import pytest
from aiohttp import web
from billing_gateway.natsd import free_port
from billing_gateway.proxy.config import TargetConfig
from billing_gateway.proxy.fake_upstream import FakeSettings, create_fake_app
from billing_gateway.proxy.upstream import UpstreamFailed, Upstreams

BODY = msgspec.json.encode({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})


STREAM = msgspec.json.encode({**msgspec.json.decode(BODY), "stream": True})


def _target(port: int, **limits: float) -> TargetConfig:
    return TargetConfig("main", f"http://127.0.0.1:{port}/v1", "sk-up", 1, 2, **limits)  # type: ignore[arg-type]


@asynccontextmanager
async def _fake(keepalive_timeout: float = 75.0, settings: FakeSettings | None = None) -> AsyncIterator[int]:
    runner = web.AppRunner(create_fake_app(settings), keepalive_timeout=keepalive_timeout)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield port
    finally:
        await runner.cleanup()


@asynccontextmanager
async def _upstreams(target: TargetConfig) -> AsyncIterator[Upstreams]:
    upstreams = Upstreams({target.name: target})
    await upstreams.start()
    try:
        yield upstreams
    finally:
        await upstreams.close()


def test_a_connection_read_whole_is_reused() -> None:
    async def main() -> None:
        async with _fake() as port, _upstreams(_target(port)) as upstreams:
            target = upstreams.targets["main"]
            seen = []
            for _ in range(3):
                response = await upstreams.open(target, "/chat/completions", BODY)
                assert response.status == 200
                assert msgspec.json.decode(await response.read())["usage"]["completion_tokens"] == 4
                response.release()
                [(_, connection)] = upstreams._pools["main"].idle
                seen.append(connection)
            assert seen[0] is seen[1] is seen[2]

    asyncio.run(main())


def test_a_response_not_read_whole_closes_its_connection() -> None:
    async def main() -> None:
        slow = FakeSettings(chunk_delay_ms=50)
        async with _fake(settings=slow) as port, _upstreams(_target(port, max_connections=1)) as upstreams:
            target = upstreams.targets["main"]
            response = await upstreams.open(target, "/chat/completions", STREAM)
            response.release()  # the stream is still coming
            assert upstreams._pools["main"].idle == []
            again = await asyncio.wait_for(upstreams.open(target, "/chat/completions", BODY), 5)
            await again.read()
            again.release()

    asyncio.run(main())


def test_max_connections_bounds_the_requests_in_flight() -> None:
    async def main() -> None:
        async with _fake() as port, _upstreams(_target(port, max_connections=1)) as upstreams:
            target = upstreams.targets["main"]
            first = await upstreams.open(target, "/chat/completions", BODY)
            second = asyncio.create_task(upstreams.open(target, "/chat/completions", BODY))
            await asyncio.sleep(0.1)
            assert not second.done()  # waiting for the one connection
            await first.read()
            first.release()
            response = await asyncio.wait_for(second, 5)
            await response.read()
            response.close()

    asyncio.run(main())


def test_a_refused_connection_fails_and_frees_its_slot() -> None:
    async def main() -> None:
        async with _upstreams(_target(free_port(), max_connections=1)) as upstreams:
            target = upstreams.targets["main"]
            for _ in range(2):  # the first failure gave its slot back
                with pytest.raises(UpstreamFailed, match="main: "):
                    await asyncio.wait_for(upstreams.open(target, "/chat/completions", BODY), 5)

    asyncio.run(main())


def test_an_idle_connection_the_upstream_closed_is_not_reused() -> None:
    async def main() -> None:
        async with _fake(keepalive_timeout=0.05) as port, _upstreams(_target(port)) as upstreams:
            target = upstreams.targets["main"]
            response = await upstreams.open(target, "/chat/completions", BODY)
            await response.read()
            response.release()
            await asyncio.sleep(0.3)  # the upstream closes it
            response = await upstreams.open(target, "/chat/completions", BODY)
            assert response.status == 200
            await response.read()
            response.release()

    asyncio.run(main())


def test_a_retryable_status_fails_with_its_retry_after() -> None:
    async def main() -> None:
        failing = FakeSettings(fail_status=429, fail_count=1, retry_after=7)
        async with _fake(settings=failing) as port, _upstreams(_target(port, max_connections=1)) as upstreams:
            target = upstreams.targets["main"]
            with pytest.raises(UpstreamFailed) as failed:
                await upstreams.open(target, "/chat/completions", BODY)
            assert (failed.value.status, failed.value.retry_after) == (429, 7.0)
            response = await asyncio.wait_for(upstreams.open(target, "/chat/completions", BODY), 5)
            assert response.status == 200
            await response.read()
            response.release()

    asyncio.run(main())
