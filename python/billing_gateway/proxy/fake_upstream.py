"""A fake OpenAI-compatible upstream for the demo, the tests and the benchmarks.

``POST /v1/chat/completions`` (streaming or not, with ``usage`` as OpenAI sends it),
``POST /v1/embeddings``, ``GET /v1/models``. Its prompt count is ``ceil(bytes / 4)`` of
the messages' text; it answers ``tokens`` output tokens (at most ``max_tokens`` unless
``ignore_max_tokens``) for each of the ``n`` completions asked for, one chunk per token
and completion when streaming.

Driven over HTTP: ``POST /_fake/config`` with any of ``latency_ms`` (before the
response), ``chunk_delay_ms``, ``tokens``, ``ignore_max_tokens``, ``fail_status`` +
``fail_count`` (the next requests answer that status, with ``Retry-After: retry_after``
when given), ``abort_after`` (streams drop their connection after that many tokens),
``model``; ``GET /_fake/stats`` returns the requests seen and the usage of
every answer it completed (``usage``: a list of ``[prompt, completion]``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import web

__all__ = ["FakeSettings", "create_fake_app"]

_json = msgspec.json.Encoder()
_decode = msgspec.json.Decoder(dict[str, Any]).decode


@dataclass
class FakeSettings:
    latency_ms: float = 0.0
    chunk_delay_ms: float = 0.0
    tokens: int = 8
    ignore_max_tokens: bool = False
    fail_status: int = 0
    fail_count: int = 0
    retry_after: float | None = None
    abort_after: int = 0
    """Streams break (the connection is dropped) after this many tokens; 0: never."""
    model: str | None = None
    requests: int = 0
    usage: list[tuple[int, int]] = field(default_factory=list)


def _text_tokens(value: object) -> int:
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, dict):
        return sum(_text_tokens(v) for v in value.values())
    if isinstance(value, list):
        return sum(_text_tokens(v) for v in value)
    return 0


def _prompt_tokens(value: object) -> int:
    return max(1, -(-_text_tokens(value) // 4))


class _Fake:
    def __init__(self, settings: FakeSettings) -> None:
        self.s = settings

    async def _begin(self, request: web.Request) -> dict[str, Any] | web.Response:
        s = self.s
        s.requests += 1
        body = _decode(await request.read())
        if s.latency_ms:
            await asyncio.sleep(s.latency_ms / 1000)
        if s.fail_count > 0:
            s.fail_count -= 1
            headers = {"Retry-After": f"{s.retry_after:g}"} if s.retry_after is not None else None
            error = {"message": f"fake upstream failure {s.fail_status}", "type": "server_error"}
            return web.json_response({"error": error}, status=s.fail_status, headers=headers)
        return body

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._begin(request)
        if isinstance(body, web.Response):
            return body
        s = self.s
        prompt = _prompt_tokens(body.get("messages"))
        limit = body.get("max_completion_tokens") or body.get("max_tokens") or s.tokens
        produced = s.tokens if s.ignore_max_tokens else min(s.tokens, limit)
        n = body.get("n") or 1
        model = s.model or body.get("model", "fake")
        ident, created = f"chatcmpl-{s.requests}", int(time.time())
        completion = produced * n
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        finish = "length" if produced == limit and not s.ignore_max_tokens else "stop"
        if not body.get("stream"):
            s.usage.append((prompt, completion))
            message = {"role": "assistant", "content": " ".join(f"tok{i}" for i in range(produced))}
            return web.json_response({
                "id": ident, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": k, "message": message, "finish_reason": finish} for k in range(n)],
                "usage": usage,
            })  # fmt: skip
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        head = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model}

        async def send(choices: list[Any], **extra: Any) -> None:
            await response.write(b"data: " + _json.encode({**head, "choices": choices, **extra}) + b"\n\n")

        await send(
            [
                {"index": k, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                for k in range(n)
            ]
        )
        for i in range(produced):
            if s.chunk_delay_ms:
                await asyncio.sleep(s.chunk_delay_ms / 1000)
            if s.abort_after and i == s.abort_after:
                assert request.transport is not None
                request.transport.abort()  # the upstream dies mid-stream
                return response
            for k in range(n):
                await send([{"index": k, "delta": {"content": f"tok{i} "}, "finish_reason": None}])
        await send([{"index": k, "delta": {}, "finish_reason": finish} for k in range(n)])
        options = body.get("stream_options") or {}
        s.usage.append((prompt, completion))
        if options.get("include_usage"):
            await send([], usage=usage)
        await response.write(b"data: [DONE]\n\n")
        return response

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        body = await self._begin(request)
        if isinstance(body, web.Response):
            return body
        prompt = _prompt_tokens(body.get("input"))
        self.s.usage.append((prompt, 0))
        return web.json_response({
            "object": "list", "model": self.s.model or body.get("model", "fake"),
            "data": [{"object": "embedding", "index": 0, "embedding": [0.0, 0.5, 1.0]}],
            "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
        })  # fmt: skip

    async def models(self, _: web.Request) -> web.Response:
        name = self.s.model or "fake"
        return web.json_response({"object": "list", "data": [{"id": name, "object": "model", "created": 0,
                                                              "owned_by": "fake"}]})  # fmt: skip

    async def configure(self, request: web.Request) -> web.Response:
        for key, value in _decode(await request.read()).items():
            if key not in FakeSettings.__dataclass_fields__ or key in ("requests", "usage"):
                return web.json_response({"error": f"unknown setting {key}"}, status=400)
            setattr(self.s, key, value)
        return web.json_response({"ok": True})

    async def stats(self, _: web.Request) -> web.Response:
        return web.json_response({"requests": self.s.requests, "usage": self.s.usage})


def create_fake_app(settings: FakeSettings | None = None) -> web.Application:
    fake = _Fake(settings or FakeSettings())
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.add_routes(
        [
            web.post("/v1/chat/completions", fake.chat),
            web.post("/v1/embeddings", fake.embeddings),
            web.get("/v1/models", fake.models),
            web.post("/_fake/config", fake.configure),
            web.get("/_fake/stats", fake.stats),
        ]
    )
    return app
