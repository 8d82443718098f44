"""The upstreams: a pool of keep-alive HTTP/1.1 connections per target, and what counts
as a failure that moves a request to the next target (429, 5xx, a refused connection, a
timeout before the response started).

The client is aiohttp's response protocol (its C parser: chunked bodies, decompression,
the read timeout) under a request written in one piece from bytes prepared once per
target and path: aiohttp's ``ClientSession`` costs about 0.15 ms of CPU per request
more, most of the proxy's own latency.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import socket
import ssl
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import StreamReader
from multidict import CIMultiDictProxy

from .config import TargetConfig

__all__ = ["UpstreamFailed", "UpstreamResponse", "Upstreams", "retry_after_s"]

RETRYABLE = frozenset({408, 409, 429}) | frozenset(range(500, 600))
KEEPALIVE_S = 30.0
"""How long an idle connection is kept for the next request."""


class UpstreamFailed(Exception):
    """The upstream could not answer: try the next target. ``retry_after_s`` is the
    upstream's ``Retry-After`` when it gave one."""

    def __init__(self, target: str, reason: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(f"{target}: {reason}")
        self.target = target
        self.status = status
        self.retry_after = retry_after


def retry_after_s(value: str | None) -> float | None:
    """``Retry-After`` (seconds or an HTTP date) in seconds from now; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return max(seconds, 0.0) if math.isfinite(seconds) else None


class UpstreamResponse:
    """An upstream's answer once its status and headers arrived; ``content`` is its body.
    Its connection goes back to the pool on :meth:`release` when the body was read whole
    (closed otherwise); :meth:`close` closes it."""

    __slots__ = ("_connection", "_pool", "content", "headers", "status")

    def __init__(self, pool: _Pool, connection: ResponseHandler, status: int,
                 headers: CIMultiDictProxy[str], content: StreamReader) -> None:  # fmt: skip
        self._pool = pool
        self._connection: ResponseHandler | None = connection
        self.status = status
        self.headers = headers
        self.content = content

    async def read(self) -> bytes:
        return await self.content.read()

    def release(self) -> None:
        if self._connection is not None:
            self._pool.put(self._connection)
            self._connection = None

    def close(self) -> None:
        if self._connection is not None:
            self._pool.discard(self._connection)
            self._connection = None


class _Pool:
    """One target's connections: at most ``max_connections`` in use, the idle ones kept
    (newest first) for :data:`KEEPALIVE_S`."""

    def __init__(self, target: TargetConfig) -> None:
        url = urlsplit(target.base_url)
        self.target = target
        self.host = url.hostname or ""
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.ssl = ssl.create_default_context() if url.scheme == "https" else None
        self.slots = asyncio.Semaphore(target.max_connections)
        self.idle: list[tuple[float, ResponseHandler]] = []
        auth = f"Authorization: Bearer {target.api_key}\r\n" if target.api_key else ""
        self._headers = f"Host: {url.netloc.rpartition('@')[2]}\r\n{auth}Content-Type: application/json\r\n"
        self._prefix = url.path
        self._heads: dict[str, bytes] = {}

    def request(self, path: str, body: bytes) -> bytes:
        """The whole request (its head prepared once per path)."""
        head = self._heads.get(path)
        if head is None:
            head = f"POST {self._prefix}{path} HTTP/1.1\r\n{self._headers}Content-Length: ".encode()
            self._heads[path] = head
        return b"%b%d\r\n\r\n%b" % (head, len(body), body)

    async def connection(self) -> ResponseHandler:
        """An idle connection still open, else a new one."""
        idle = self.idle
        now = time.monotonic()
        while idle:
            since, connection = idle.pop()
            if now - since < KEEPALIVE_S and connection.is_connected() and not connection.should_close:
                return connection
            connection.close()
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.target.connect_timeout_s):
            transport, connection = await loop.create_connection(
                lambda: ResponseHandler(loop), self.host, self.port, ssl=self.ssl,
                server_hostname=self.host if self.ssl else None,
            )  # fmt: skip
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection

    def put(self, connection: ResponseHandler) -> None:
        """Back to the idle ones when it can carry another request, else closed."""
        if connection.is_connected() and not connection.should_close:
            self.idle.append((time.monotonic(), connection))
        else:
            connection.close()
        self.slots.release()

    def discard(self, connection: ResponseHandler) -> None:
        connection.close()
        self.slots.release()

    def close(self) -> None:
        for _, connection in self.idle:
            connection.close()
        self.idle.clear()


class Upstreams:
    """A pool per target with its own connection limit and timeouts; open in
    :meth:`start` (on the serving loop), closed in :meth:`close`."""

    def __init__(self, targets: Mapping[str, TargetConfig]) -> None:
        self.targets = targets
        self._pools: dict[str, _Pool] = {}

    async def start(self) -> None:
        self._pools = {name: _Pool(target) for name, target in self.targets.items()}

    async def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()

    async def open(self, target: TargetConfig, path: str, body: bytes) -> UpstreamResponse:
        """POSTs ``body`` to the target; returns the response once its status and headers
        arrived and are not a failure (a 4xx other than 408/409/429 is the caller's to
        pass on); raises :class:`UpstreamFailed` otherwise."""
        pool = self._pools[target.name]
        await pool.slots.acquire()
        connection: ResponseHandler | None = None
        try:
            connection = await pool.connection()
            connection.set_response_params(read_timeout=target.timeout_s)
            assert connection.transport is not None  # connected: checked by pool.connection()
            connection.transport.write(pool.request(path, body))
            connection.start_timeout()
            message, content = await connection.read()
        except BaseException as exc:
            if connection is None:
                pool.slots.release()
            else:
                pool.discard(connection)
            if isinstance(exc, aiohttp.ClientError | HttpProcessingError | TimeoutError | OSError):
                raise UpstreamFailed(target.name, f"{type(exc).__name__}: {exc}") from None
            raise
        response = UpstreamResponse(pool, connection, message.code, message.headers, content)
        if response.status in RETRYABLE:
            retry = retry_after_s(response.headers.get("Retry-After"))
            response.close()
            raise UpstreamFailed(target.name, f"HTTP {response.status}", response.status, retry)
        return response
