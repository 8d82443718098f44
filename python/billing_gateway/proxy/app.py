"""The proxy's HTTP face: ``POST /v1/chat/completions``, ``POST /v1/embeddings`` and
``GET /v1/models``, beside the daemon's endpoints (``/healthz``, ``/readyz``,
``/metrics``, ``/v1/budgets/{tenant_id}``).

Per request, in this order: the tenant from the key (401); ``route()`` (503 when no
target is healthy); a hold of the worst case at the target's prices (402 / 403); the
request forwarded; the actual cost committed from ``usage`` and the rest released (the
whole hold on any failure). A 429, 5xx, refused connection or timeout before the
client saw a byte marks the target down and moves the request to the next fallback.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp
import msgspec
from aiohttp import web

from billing_gateway.consumer import EventConsumer
from billing_gateway.daemon import create_app
from billing_gateway.gateway import Decision, Gateway
from billing_gateway.models import Reason
from billing_gateway.money import micros_text

from .accounting import Hold, Usage
from .config import ProxyConfig, TargetConfig
from .errors import openai_error, refusal, unrouted
from .metrics import ProxyStats
from .pricing import cost, estimate_embedding_tokens, estimate_prompt_tokens
from .requests import BadRequest, ChatRequest, chat_request, parse_body, tenant_of
from .streaming import relay_stream
from .upstream import UpstreamFailed, UpstreamResponse, Upstreams

if TYPE_CHECKING:
    from billing_gateway.leases import BudgetLeases

__all__ = ["Proxy", "create_proxy_app"]

log = logging.getLogger(__name__)

MAX_BODY = 8 * 1024 * 1024
MAX_HOLD = 2**63 - 1
CHAT = "/chat/completions"
EMBEDDINGS = "/embeddings"

_json = msgspec.json.Encoder()


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _Completion(msgspec.Struct):
    usage: _Usage | None = None


_decode_completion = msgspec.json.Decoder(_Completion).decode

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Forward = Callable[[TargetConfig, Hold, dict[str, str]], Awaitable[web.StreamResponse]]
"""Sends the request to a target under a hold, with the route's response headers."""


class Proxy:
    """The request handlers, over one gateway and the configured upstreams."""

    def __init__(self, gateway: Gateway, config: ProxyConfig, leases: BudgetLeases | None = None) -> None:
        self.gateway = gateway
        self.config = config
        self.leases = leases
        self.upstreams = Upstreams(config.targets)
        self.stats = ProxyStats()

    async def start(self, _: web.Application) -> None:
        await self.upstreams.start()

    async def close(self, _: web.Application) -> None:
        await self.upstreams.close()

    # ---- the handlers ------------------------------------------------------------------

    async def chat(self, request: web.Request) -> web.StreamResponse:
        try:
            tenant, body = await self._admit(request)
            chat = chat_request(body, self.config.default_max_tokens)
        except BadRequest as refused:
            return refused.response
        prompt = estimate_prompt_tokens(chat.body["messages"], chat.body.get("tools"))
        attrs = {"model": chat.model, "path": request.path, "stream": chat.stream,
                 "max_tokens": chat.max_tokens, "metadata": body.get("metadata")}  # fmt: skip
        if chat.stream:
            chat.body["stream_options"] = {**(chat.body.get("stream_options") or {}), "include_usage": True}

        async def forward(target: TargetConfig, hold: Hold, headers: dict[str, str]) -> web.StreamResponse:
            payload = _json.encode(_for_target(chat.body, target))
            upstream = await self.upstreams.open(target, CHAT, payload)
            if chat.stream and upstream.status == 200:
                return await self._stream(request, chat, upstream, hold, headers)
            return await self._whole(upstream, hold, headers)

        return await self._with_failover(request, tenant, attrs, prompt, chat.max_output, forward)

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        try:
            tenant, body = await self._admit(request)
        except BadRequest as refused:
            return refused.response
        if "input" not in body:
            return openai_error(400, "input: required", param="input", code="invalid_value")
        prompt = estimate_embedding_tokens(body["input"])
        attrs = {"model": body["model"], "path": request.path, "stream": False, "max_tokens": 0,
                 "metadata": body.get("metadata")}  # fmt: skip

        async def forward(target: TargetConfig, hold: Hold, headers: dict[str, str]) -> web.StreamResponse:
            upstream = await self.upstreams.open(target, EMBEDDINGS, _json.encode(_for_target(body, target)))
            return await self._whole(upstream, hold, headers)

        return await self._with_failover(request, tenant, attrs, prompt, 0, forward)

    async def models(self, request: web.Request) -> web.Response:
        """The models the tenant's policies can reach (targets' ``model`` names)."""
        try:
            tenant = tenant_of(request, self.config)
        except BadRequest as refused:
            return refused.response
        names = sorted({t.model for t in self.config.targets.values() if t.model})
        reachable = [
            name
            for name in names
            if self.gateway.route(
                tenant, {"model": name, "path": "/v1" + CHAT, "stream": False, "max_tokens": 1}
            )
        ]
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "billing-gateway"} for name in reachable
        ]
        return web.Response(
            body=_json.encode({"object": "list", "data": data}), content_type="application/json"
        )

    # ---- the steps ---------------------------------------------------------------------

    async def _admit(self, request: web.Request) -> tuple[str, dict[str, Any]]:
        tenant = tenant_of(request, self.config)
        try:
            raw = await request.read()
        except web.HTTPException as exc:  # too large
            raise BadRequest(openai_error(exc.status, exc.text or exc.reason)) from None
        return tenant, parse_body(raw)

    async def _with_failover(
        self, request: web.Request, tenant: str, attrs: dict[str, object], prompt: int, output: int,
        forward: Forward,
    ) -> web.StreamResponse:  # fmt: skip
        try:
            route = self.gateway.route(tenant, attrs)
        except (TypeError, ValueError) as exc:  # metadata that is not str-keyed JSON of scalars
            return openai_error(400, f"metadata: {exc}", param="metadata", code="invalid_value")
        if route is None:
            return openai_error(503, f"no healthy upstream for model {attrs['model']!r}", code="no_route")
        failures: list[str] = []
        for name in (route.target, *route.fallbacks):
            target = self.config.targets.get(name)
            if target is None:
                failures.append(f"{name}: not a configured target")
                continue
            amount = cost(target, prompt, output)
            if amount > MAX_HOLD:  # beyond any budget (64-bit micro-units)
                return refusal(Reason.INSUFFICIENT_BUDGET, tenant, amount, 0)
            decision = await self._reserve(tenant, amount)
            if not decision.allowed or decision.reservation_id is None:
                return refusal(decision.reason, tenant, amount, decision.remaining)
            hold = Hold(
                self.gateway, tenant, target, decision.reservation_id, amount, prompt, decision.remaining
            )
            headers = {"x-route-policy": route.policy_id, "x-route-target": name}
            try:
                response = await forward(target, hold, headers)
            except UpstreamFailed as exc:
                hold.release()
                down_for = exc.retry_after if exc.retry_after is not None else self.config.cooldown_s
                self.gateway.mark_down(name, down_for)
                log.warning("upstream %s failed (%s): down for %.1fs, trying the next", name, exc, down_for)
                failures.append(str(exc))
                self.stats.failovers[name] += 1
                continue
            except BaseException:
                hold.release()
                raise
            hold.release()  # a no-op when the forward settled it
            return response
        return openai_error(502, "every upstream failed: " + "; ".join(failures), code="upstream_error")

    async def _reserve(self, tenant: str, amount: int) -> Decision:
        """The hold; with leases, a used-up slice is refilled first (one Redis round trip)."""
        if self.leases is None:
            return self.gateway.reserve(tenant, amount, ttl_s=self.config.hold_ttl_s)
        return await self.leases.reserve(tenant, amount, ttl_s=self.config.hold_ttl_s)

    async def _whole(self, upstream: UpstreamResponse, hold: Hold, headers: dict[str, str]) -> web.Response:
        """A response read whole: committed from its usage when it succeeded."""
        try:
            body = await upstream.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamFailed(hold.target.name, f"{type(exc).__name__} reading the response") from None
        finally:
            upstream.release()
        if upstream.status == 200:
            try:
                usage = _decode_completion(body).usage
            except msgspec.DecodeError:
                usage = None
            charged = hold.commit(Usage(usage.prompt_tokens, usage.completion_tokens) if usage else None)
            self.stats.charged[hold.target.name] += charged
        else:
            hold.release()
        return web.Response(
            body=body,
            status=upstream.status,
            content_type="application/json",
            headers={**headers, "x-budget-remaining": _decimal(hold.left)},
        )

    async def _stream(
        self,
        request: web.Request,
        chat: ChatRequest,
        upstream: UpstreamResponse,
        hold: Hold,
        headers: dict[str, str],
    ) -> web.StreamResponse:
        response = _EventStream(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "x-budget-remaining": _decimal(hold.left),
                **headers,
            }
        )
        try:
            await response.prepare(request)
            result = await relay_stream(
                upstream,
                response,
                wants_usage=chat.wants_usage,
                max_output=chat.max_output,
                prompt_estimate=hold.prompt_estimate,
                drain_timeout_s=self.config.drain_timeout_s,
            )
        finally:
            upstream.release()
        self.stats.charged[hold.target.name] += hold.commit(result.usage)
        self.stats.streams_cut += result.cut_off
        self.stats.streams_left += result.client_left
        return response


class _EventStream(web.StreamResponse):
    """A stream whose headers leave with its first chunk (one packet less for the client)."""

    _send_headers_immediately = False


def _for_target(body: dict[str, Any], target: TargetConfig) -> dict[str, Any]:
    return {**body, "model": target.model} if target.model else body


def _decimal(micros: int) -> str:
    return micros_text(max(micros, 0))


def _counted(stats: ProxyStats, endpoint: str, handler: Handler) -> Handler:
    async def counted(request: web.Request) -> web.StreamResponse:
        response = await handler(request)
        stats.responses[endpoint, response.status] += 1
        return response

    return counted


def create_proxy_app(
    consumer: EventConsumer, config: ProxyConfig, leases: BudgetLeases | None = None
) -> web.Application:
    """The daemon's application (its endpoints, its error handling) plus the proxy's routes."""
    proxy = Proxy(consumer.gateway, config, leases)
    app = create_app(consumer, leases, client_max_size=MAX_BODY, collectors=[proxy.stats])
    app.middlewares.append(unrouted)
    app.on_startup.append(proxy.start)
    app.on_cleanup.append(proxy.close)
    app.add_routes(
        [
            web.post("/v1/chat/completions", _counted(proxy.stats, "chat", proxy.chat)),
            web.post("/v1/embeddings", _counted(proxy.stats, "embeddings", proxy.embeddings)),
            web.get("/v1/models", _counted(proxy.stats, "models", proxy.models)),
        ]
    )
    return app
