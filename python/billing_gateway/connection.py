"""NATS connections for every client in the package (daemon, billing service, dispatcher,
usage reporter, publish): once connected they reconnect forever, and they log one line
per state change (disconnected, reconnected after N s), never a traceback per retry."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import nats
from nats.aio.client import Client

__all__ = ["NatsUnreachable", "connect", "connect_when_up"]

log = logging.getLogger(__name__)


class NatsUnreachable(ConnectionError):
    """The broker did not answer the first connection attempts."""


class _StateLog:
    """Turns nats-py's callbacks into one log line per state change."""

    def __init__(self, url: str, name: str, on_change: Callable[[bool], Awaitable[None]] | None) -> None:
        self.url = url
        self.name = name
        self.on_change = on_change
        self.down_since: float | None = None
        self.last_error: str | None = None
        self.client: Client | None = None

    async def disconnected(self) -> None:
        closing = self.client is not None and (self.client.is_closed or self.client.is_draining)
        if self.down_since is None and not closing:
            self.down_since = time.monotonic()
            log.warning("%s: disconnected from NATS at %s; reconnecting", self.name, self.url)
        if self.on_change is not None:
            await self.on_change(False)

    async def reconnected(self) -> None:
        down = time.monotonic() - self.down_since if self.down_since is not None else 0.0
        self.down_since, self.last_error = None, None
        log.info("%s: reconnected to NATS at %s after %.1fs", self.name, self.url, down)
        if self.on_change is not None:
            await self.on_change(True)

    async def error(self, exc: Exception) -> None:
        text = f"{type(exc).__name__}: {exc}"
        if text != self.last_error:  # each new kind of error once, not once per retry
            self.last_error = text
            log.info("%s: NATS: %s", self.name, text)


async def connect(
    url: str,
    *,
    name: str,
    connect_timeout: float = 2.0,
    on_change: Callable[[bool], Awaitable[None]] | None = None,
) -> Client:
    """Connects to ``url``; raises :class:`NatsUnreachable` if it does not answer now.

    Once connected, the client reconnects forever (every 0.5 s). ``on_change(connected)``
    runs on every disconnection and reconnection."""
    state = _StateLog(url, name, on_change)
    try:
        nc = await nats.connect(
            url,
            name=name,
            connect_timeout=connect_timeout,
            max_reconnect_attempts=1,
            reconnect_time_wait=0.25,
            disconnected_cb=state.disconnected,
            reconnected_cb=state.reconnected,
            error_cb=state.error,
        )
    except Exception as exc:
        raise NatsUnreachable(f"cannot connect to NATS at {url}: {exc or type(exc).__name__}") from exc
    nc.options["max_reconnect_attempts"] = -1
    nc.options["reconnect_time_wait"] = 0.5
    state.client = nc
    return nc


async def connect_when_up(
    url: str, *, name: str, stop: asyncio.Event, max_wait_s: float = 5.0
) -> Client | None:
    """Connects to ``url``, retrying with capped backoff until it answers or ``stop`` is set
    (then None). Logs the first failure and the success, not every retry."""
    delay = 0.25
    while not stop.is_set():
        try:
            return await connect(url, name=name)
        except NatsUnreachable as exc:
            if delay == 0.25:
                log.warning("%s: %s; retrying until it answers", name, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, max_wait_s)
    return None
