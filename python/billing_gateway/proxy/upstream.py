"""The upstreams: one pooled aiohttp session per target, and what counts as a failure
that moves a request to the next target (429, 5xx, a refused connection, a timeout
before the response started)."""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping

import aiohttp
from yarl import URL

from .config import TargetConfig

__all__ = ["UpstreamFailed", "Upstreams", "retry_after_s"]

_JSON = {"Content-Type": "application/json"}
RETRYABLE = frozenset({408, 409, 429}) | frozenset(range(500, 600))


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


class Upstreams:
    """A session per target with its own connection limit and timeouts; open in
    :meth:`start` (on the serving loop), closed in :meth:`close`."""

    def __init__(self, targets: Mapping[str, TargetConfig]) -> None:
        self.targets = targets
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._urls: dict[tuple[str, str], URL] = {}  # parsed once, not per request

    async def start(self) -> None:
        for name, target in self.targets.items():
            headers = {"Authorization": f"Bearer {target.api_key}"} if target.api_key else {}
            self._sessions[name] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=target.max_connections, keepalive_timeout=30),
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=target.connect_timeout_s, sock_read=target.timeout_s
                ),
                headers=headers,
                skip_auto_headers=("User-Agent",),
                cookie_jar=aiohttp.DummyCookieJar(),  # upstreams' cookies are not ours to keep
            )

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()

    async def open(self, target: TargetConfig, path: str, body: bytes) -> aiohttp.ClientResponse:
        """POSTs ``body`` to the target; returns the response once its status and headers
        arrived and are not a failure (a 4xx other than 408/409/429 is the caller's to
        pass on); raises :class:`UpstreamFailed` otherwise."""
        session = self._sessions[target.name]
        url = self._urls.get((target.name, path))
        if url is None:
            url = self._urls[target.name, path] = URL(target.base_url + path)
        try:
            response = await session.post(url, data=body, headers=_JSON)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise UpstreamFailed(target.name, f"{type(exc).__name__}: {exc}") from None
        if response.status in RETRYABLE:
            retry = retry_after_s(response.headers.get("Retry-After"))
            response.release()
            raise UpstreamFailed(target.name, f"HTTP {response.status}", response.status, retry)
        return response
