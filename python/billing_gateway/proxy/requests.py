"""Reading a client's request: the tenant from its key, the body's fields the proxy
acts on (each problem is a 400 naming the field, in OpenAI's error shape)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import web

from .config import ProxyConfig
from .errors import openai_error

__all__ = ["BadRequest", "ChatRequest", "chat_request", "parse_body", "tenant_of"]

_decode = msgspec.json.Decoder(dict[str, Any]).decode

MAX_TOKENS = 10_000_000
"""The most output a request may ask for (no model produces more; holds stay within 64 bits)."""
MAX_CHOICES = 128
"""The most completions one request may ask for (``n``; OpenAI's own limit)."""


class BadRequest(Exception):
    """A refusal, already in its final form."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.text)
        self.response = response


def _bad(message: str, param: str | None = None) -> BadRequest:
    return BadRequest(openai_error(400, message, param=param, code="invalid_value" if param else None))


def tenant_of(request: web.Request, config: ProxyConfig) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    tenant = config.tenant_for(key.strip()) if scheme.lower() == "bearer" and key.strip() else None
    if tenant is None:
        message = (
            "Incorrect API key provided." if header else "Missing API key: send Authorization: Bearer <key>."
        )
        raise BadRequest(openai_error(401, message, code="invalid_api_key"))
    return tenant


def parse_body(raw: bytes) -> dict[str, Any]:
    try:
        body = _decode(raw)
    except msgspec.ValidationError:
        raise _bad("the request body must be a JSON object") from None
    except (msgspec.DecodeError, RecursionError) as exc:
        raise _bad(f"the request body is not valid JSON: {exc}") from None
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("model: required, a string", "model")
    return body


@dataclass(frozen=True)
class ChatRequest:
    body: dict[str, Any]
    model: str
    stream: bool
    wants_usage: bool
    max_tokens: int
    """The output of one completion: the request's ``max_completion_tokens`` or ``max_tokens``,
    else the configured default (then sent upstream as ``max_tokens``)."""
    choices: int = 1
    """How many completions the request asks for (``n``)."""

    @property
    def max_output(self) -> int:
        """The output the hold covers: every completion at its most."""
        return self.max_tokens * self.choices


def _positive_int(body: dict[str, Any], key: str, most: int = MAX_TOKENS) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise _bad(f"{key}: expected an integer in 1..{most}, got {value!r}", key)
    return value


def chat_request(body: dict[str, Any], default_max_tokens: int) -> ChatRequest:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages: required, a non-empty list", "messages")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad(f"stream: expected true or false, got {stream!r}", "stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _bad("stream_options: expected an object", "stream_options")
    wants_usage = bool(options and options.get("include_usage") is True)
    limit = _positive_int(body, "max_completion_tokens") or _positive_int(body, "max_tokens")
    if limit is None:
        limit = default_max_tokens
        body["max_tokens"] = limit
    choices = _positive_int(body, "n", MAX_CHOICES) or 1
    return ChatRequest(body, body["model"], stream, wants_usage, limit, choices)
