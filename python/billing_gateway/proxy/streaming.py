"""Relaying a chat completion stream (server-sent events) from the upstream to the client.

The upstream is always asked for usage (``stream_options.include_usage``); the client
gets its usage chunk only when it asked for it. Output is counted as it passes, one
token per chunk that carries content (what upstreams send); a stream that would go past
its hold is ended for the client with ``finish_reason: "length"`` and ``data: [DONE]``,
and the upstream is closed. A client that leaves mid-stream is charged what was
produced: the upstream is read on, without relaying, for at most ``drain_timeout_s``
until its usage arrives; without it the proxy's count is charged.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import aiohttp
import msgspec
from aiohttp import web

from .accounting import Usage
from .errors import error_body
from .upstream import UpstreamResponse

__all__ = ["StreamResult", "relay_stream"]

log = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _Choice(msgspec.Struct):
    index: int = 0
    delta: msgspec.Raw = msgspec.Raw(b"{}")
    finish_reason: str | None = None


class _Chunk(msgspec.Struct):
    id: str = ""
    created: int = 0
    model: str = ""
    choices: list[_Choice] = []
    usage: _Usage | None = None
    error: msgspec.Raw | None = None


_decode_chunk = msgspec.json.Decoder(_Chunk).decode
_json = msgspec.json.Encoder()
_EMPTY_DELTAS = (b"{}", b'{"content":""}', b'{"role":"assistant","content":""}')


def _content_chunks(chunk: _Chunk) -> int:
    return sum(1 for c in chunk.choices if bytes(c.delta) not in _EMPTY_DELTAS)


class _ClientLeft(Exception):
    pass


_MORE, _END, _CUT = 0, 1, 2


@dataclass
class StreamResult:
    usage: Usage
    cut_off: bool = False
    client_left: bool = False


class _Relay:
    def __init__(
        self,
        upstream: UpstreamResponse,
        client: web.StreamResponse,
        *,
        wants_usage: bool,
        allowed: int,
        prompt_estimate: int,
        drain_timeout_s: float,
    ) -> None:
        self.upstream = upstream
        self.client = client
        self.wants_usage = wants_usage
        self.allowed = allowed
        self.prompt_estimate = prompt_estimate
        self.drain_timeout_s = drain_timeout_s
        self.produced = 0
        self.usage: _Usage | None = None
        self.last = _Chunk()

    def estimate(self) -> Usage:
        return Usage(self.prompt_estimate, self.produced)

    def result(self, **flags: bool) -> StreamResult:
        u = self.usage
        usage = Usage(u.prompt_tokens, u.completion_tokens) if u else self.estimate()
        return StreamResult(usage, **flags)

    async def _send(self, data: bytes, last: bool = False) -> None:
        """Writes to the client; the ``last`` write ends the response in the same packet."""
        try:
            await (self.client.write_eof(data) if last else self.client.write(data))
        except (ConnectionError, aiohttp.ClientError) as exc:
            raise _ClientLeft from exc

    async def run(self) -> StreamResult:
        try:
            return await self._relay()
        except _ClientLeft:
            return await self._drain()
        except (aiohttp.ClientError, TimeoutError) as exc:
            return await self._upstream_broke(exc)

    def _event(self, line: bytes, out: list[bytes]) -> int:
        """Handles one line of the upstream's stream, appending what the client gets to
        ``out``; returns ``_MORE``, ``_END`` (done or an error event) or ``_CUT``."""
        if not line.startswith(b"data:"):
            return _MORE
        payload = line[5:].strip()
        if payload == b"[DONE]":
            out.append(DONE)
            return _END
        try:
            chunk = _decode_chunk(payload)
        except msgspec.DecodeError:
            out.append(line + b"\n\n")  # not ours to judge: pass it on
            return _MORE
        if chunk.error is not None:
            out.append(b"data: " + payload + b"\n\n")
            return _END
        self.last = chunk
        if chunk.usage is not None:
            self.usage = chunk.usage
            if not chunk.choices and not self.wants_usage:
                return _MORE
        gained = _content_chunks(chunk)
        if gained and self.produced + gained > self.allowed:
            return _CUT
        self.produced += gained
        out.append(b"data: " + payload + b"\n\n")
        return _MORE

    async def _relay(self) -> StreamResult:
        """Relays what each read of the upstream brings in one write (fewer system calls)."""
        pending = b""
        async for data in self.upstream.content.iter_any():
            *lines, pending = (pending + data).split(b"\n")
            out: list[bytes] = []
            state = _MORE
            for line in lines:
                state = self._event(line.rstrip(b"\r"), out)
                if state != _MORE:
                    break
            if state == _CUT:
                out += self._cut_chunks()
                self.upstream.close()
            if out:
                try:
                    await self._send(b"".join(out), last=state != _MORE)
                except _ClientLeft:
                    if state == _MORE:
                        raise
                    return self.result(client_left=True)
            if state == _CUT:
                return StreamResult(self.estimate(), cut_off=True)
            if state == _END:
                return self.result()
        try:
            await self._send(DONE, last=True)  # the upstream ended without [DONE]
        except _ClientLeft:
            return self.result(client_left=True)
        return self.result()

    def _cut_chunks(self) -> list[bytes]:
        """The end of a stream cut at its hold: ``finish_reason: "length"``, then ``[DONE]``."""
        chunk = {
            "id": self.last.id,
            "object": "chat.completion.chunk",
            "created": self.last.created,
            "model": self.last.model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}],
        }
        return [b"data: " + _json.encode(chunk) + b"\n\n", DONE]

    async def _drain(self) -> StreamResult:
        """The client left: read the upstream (not relaying) until its usage, within the deadline."""
        if self.usage is not None:
            self.upstream.close()
            return self.result(client_left=True)
        try:
            async with asyncio.timeout(self.drain_timeout_s):
                async for line in self.upstream.content:
                    payload = line[5:].strip() if line.startswith(b"data:") else b""
                    if payload and payload != b"[DONE]":
                        try:
                            chunk = _decode_chunk(payload)
                        except msgspec.DecodeError:
                            continue
                        self.produced += _content_chunks(chunk)
                        if chunk.usage is not None:
                            self.usage = chunk.usage
                            break
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("client left a stream; upstream usage not read (%s): charging the estimate", exc)
        finally:
            self.upstream.close()
        return self.result(client_left=True)

    async def _upstream_broke(self, exc: BaseException) -> StreamResult:
        """The upstream failed after the first byte: the client hears it in the stream."""
        self.upstream.close()
        message = f"the upstream failed mid-stream: {type(exc).__name__}"
        try:
            await self._send(b"data: " + error_body(502, message, code="upstream_error") + b"\n\n", last=True)
        except _ClientLeft:
            return self.result(client_left=True)
        return self.result()


async def relay_stream(
    upstream: UpstreamResponse,
    client: web.StreamResponse,
    *,
    wants_usage: bool,
    max_output: int,
    prompt_estimate: int,
    drain_timeout_s: float,
) -> StreamResult:
    """Relays ``upstream`` to the prepared ``client`` response; ``max_output`` is the
    output (in chunks) the hold covers."""
    relay = _Relay(
        upstream,
        client,
        wants_usage=wants_usage,
        allowed=max_output,
        prompt_estimate=prompt_estimate,
        drain_timeout_s=drain_timeout_s,
    )
    return await relay.run()
