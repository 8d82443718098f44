"""The proxy, driven with the official ``openai`` client (sync, async, streaming) against a
real ``billing-gateway proxy`` process following a real nats-server, and fake upstreams."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from billing_gateway import from_micros
from billing_gateway.natsd import EmbeddedNats
from billing_gateway.proxy.pricing import estimate_prompt_tokens

from .conftest import updated
from .processes import CLI, publish_all
from .proxy_support import Fake, Fakes, Proxy, cost, subscribe, target, wait_for

HI = [{"role": "user", "content": "hi"}]
PROMPT = estimate_prompt_tokens(HI)  # the proxy's estimate: the hold's prompt part


async def status_of(c: openai.AsyncOpenAI) -> int:
    """The status of one chat request of ten output tokens (200 when answered)."""
    try:
        await c.chat.completions.create(model="gpt-x", messages=HI, max_tokens=10)
    except openai.APIStatusError as exc:
        return exc.status_code
    return 200


KEYS = {"sk-a": "cus_a", "sk-poor": "cus_poor", "sk-off": "cus_off", "sk-ghost": "cus_ghost"}


@pytest.fixture
def fakes(tmp_path: Path) -> Iterator[Fakes]:
    made = Fakes(tmp_path)
    yield made
    made.stop()


def start_proxy(tmp: Path, server: EmbeddedNats, targets: list[dict[str, Any]], **config: Any) -> Proxy:
    policies = [{"id": "default", "priority": 100, "match": "request.model != 'nowhere'",
                 "strategy": "failover", "targets": [t["name"] for t in targets]}]  # fmt: skip
    doc = {"tenants": KEYS, "targets": targets, "policies": policies, **config}
    return Proxy(tmp, server.url, doc).start()


@pytest.fixture
def main(fakes: Fakes) -> Fake:
    return fakes("main", "--model", "fake-large", "--tokens", "8")


@pytest.fixture
def proxy(tmp_path: Path, server: EmbeddedNats, main: Fake) -> Iterator[Proxy]:
    p = start_proxy(tmp_path, server, [target("main", main, model="gpt-x")])
    subscribe(server.url, "cus_a", "100")
    p.wait_budget("cus_a")
    yield p
    if p.process is not None and p.process.poll() is None:
        p.kill9()


_clients: list[openai.OpenAI] = []


def client(proxy: Proxy, key: str = "sk-a") -> openai.OpenAI:
    """A sync client, closed at the end of the test."""
    _clients.append(openai.OpenAI(base_url=proxy.url, api_key=key, max_retries=0, timeout=30))
    return _clients[-1]


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _clients:
        _clients.pop().close()


def test_chat_sync_headers_and_exact_charge(proxy: Proxy, main: Fake) -> None:
    raw = client(proxy).chat.completions.with_raw_response.create(model="gpt-x", messages=HI, max_tokens=5)
    completion = raw.parse()
    assert completion.choices[0].message.content == "tok0 tok1 tok2 tok3 tok4"
    assert raw.headers["x-route-policy"] == "default"
    assert raw.headers["x-route-target"] == "main"
    (usage,) = main.stats()["usage"]
    charged = cost(*usage)
    assert (
        completion.usage is not None
        and [completion.usage.prompt_tokens, completion.usage.completion_tokens] == usage
    )
    assert proxy.budget("cus_a")["spent"] == charged
    assert proxy.budget("cus_a")["reserved"] == 0
    assert raw.headers["x-budget-remaining"] == proxy.budget("cus_a")["decimal"]["remaining"]


@pytest.mark.parametrize("stream", [False, True])
def test_n_completions_are_held_and_charged_in_full(proxy: Proxy, main: Fake, stream: bool) -> None:
    """``n`` completions may produce ``n`` times ``max_tokens``: the hold covers them all,
    so the charge is the usage, not a hold sized for one completion."""
    options = {"stream_options": {"include_usage": True}} if stream else {}
    answer = client(proxy).chat.completions.create(
        model="gpt-x", messages=HI, max_tokens=5, n=3, stream=stream, **options
    )
    if stream:
        list(answer)  # type: ignore[arg-type]
    (usage,) = main.stats()["usage"]
    assert usage[1] == 15, "three completions of five tokens"
    assert proxy.budget("cus_a")["spent"] == cost(*usage) and proxy.budget("cus_a")["reserved"] == 0
    for n in (0, 129, "3"):
        r = httpx.post(
            f"{proxy.url}/chat/completions",
            json={"model": "gpt-x", "messages": HI, "n": n},
            headers={"Authorization": "Bearer sk-a"},
        )
        assert r.status_code == 400 and r.json()["error"]["param"] == "n", r.text


def test_stream_usage_only_when_asked(proxy: Proxy, main: Fake) -> None:
    c = client(proxy)
    chunks = list(c.chat.completions.create(model="gpt-x", messages=HI, max_tokens=4, stream=True))
    assert all(ch.usage is None for ch in chunks)
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == "tok0 tok1 tok2 tok3 "
    asked = list(
        c.chat.completions.create(
            model="gpt-x", messages=HI, max_tokens=3, stream=True, stream_options={"include_usage": True}
        )
    )
    assert asked[-1].usage is not None and asked[-1].usage.completion_tokens == 3
    expected = sum(cost(p, o) for p, o in main.stats()["usage"])
    wait_for(lambda: proxy.budget("cus_a")["spent"] == expected, what="both streams charged")
    assert proxy.budget("cus_a")["reserved"] == 0


def test_async_client_and_embeddings_and_models(proxy: Proxy, main: Fake) -> None:
    async def body() -> None:
        async with openai.AsyncOpenAI(base_url=proxy.url, api_key="sk-a", max_retries=0) as c:
            done = await c.chat.completions.create(model="gpt-x", messages=HI, max_tokens=2)
            assert done.choices[0].finish_reason == "length"
            emb = await c.embeddings.create(model="embed-x", input="some text to embed")
            assert emb.data[0].embedding == [0.0, 0.5, 1.0]
            stream = await c.chat.completions.create(model="gpt-x", messages=HI, stream=True, max_tokens=2)
            assert [ch async for ch in stream]

    asyncio.run(body())
    expected = sum(cost(p, o) for p, o in main.stats()["usage"])
    wait_for(lambda: proxy.budget("cus_a")["spent"] == expected, what="every request charged")
    assert [m.id for m in client(proxy).models.list()] == ["gpt-x"]  # the one model a policy reaches


def test_status_codes_and_error_shapes(tmp_path: Path, server: EmbeddedNats, proxy: Proxy) -> None:
    subscribe(server.url, "cus_poor", "0.00001")  # 10 micro-units: below any hold
    subscribe(server.url, "cus_off", "100", status="canceled")
    proxy.wait_budget("cus_poor")
    proxy.wait_budget("cus_off")
    with pytest.raises(openai.AuthenticationError) as e401:
        client(proxy, "sk-wrong").chat.completions.create(model="gpt-x", messages=HI)
    assert e401.value.code == "invalid_api_key"
    with pytest.raises(openai.BadRequestError) as e400:
        client(proxy).chat.completions.create(model="gpt-x", messages=[])
    assert e400.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as e400:
        client(proxy).chat.completions.create(model="gpt-x", messages=HI, max_tokens=-1)
    assert e400.value.param == "max_tokens"
    with pytest.raises(openai.APIStatusError) as e402:
        client(proxy, "sk-poor").chat.completions.create(model="gpt-x", messages=HI)
    assert e402.value.status_code == 402 and e402.value.code == "insufficient_budget"
    with pytest.raises(openai.APIStatusError) as e402:
        client(proxy, "sk-ghost").chat.completions.create(model="gpt-x", messages=HI)
    assert e402.value.status_code == 402 and e402.value.code == "unknown_tenant"
    with pytest.raises(openai.PermissionDeniedError) as e403:
        client(proxy, "sk-off").chat.completions.create(model="gpt-x", messages=HI)
    assert e403.value.code == "inactive"
    with pytest.raises(openai.InternalServerError) as e503:
        client(proxy).chat.completions.create(model="nowhere", messages=HI)
    assert e503.value.status_code == 503 and e503.value.code == "no_route"
    for body in (b"{not json", b"[1]", b'{"messages": []}'):
        r = httpx.post(
            f"{proxy.url}/chat/completions", content=body, headers={"Authorization": "Bearer sk-a"}
        )
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    wrong_method = httpx.get(f"{proxy.url}/chat/completions", headers={"Authorization": "Bearer sk-a"})
    assert wrong_method.status_code == 405 and "POST" in wrong_method.headers["Allow"]
    assert wrong_method.json()["error"]["type"] == "invalid_request_error"
    nowhere = httpx.post(f"{proxy.url}/responses", json={}, headers={"Authorization": "Bearer sk-a"})
    assert (
        nowhere.status_code == 404
        and nowhere.json()["error"]["message"] == "Invalid URL (POST /v1/responses)"
    )
    assert proxy.budget("cus_a")["spent"] == 0 and proxy.budget("cus_a")["reserved"] == 0


def test_exact_accounting_under_concurrency(proxy: Proxy, main: Fake) -> None:
    main.configure(latency_ms=20, tokens=12)

    async def one(c: openai.AsyncOpenAI, i: int) -> None:
        if i % 2:
            stream = await c.chat.completions.create(
                model="gpt-x",
                messages=[{"role": "user", "content": "x" * i}],
                max_tokens=5 + i % 9,
                stream=True,
            )
            async for _ in stream:
                pass
        else:
            await c.chat.completions.create(model="gpt-x", messages=[{"role": "user", "content": "y" * i}])

    async def body() -> None:
        async with openai.AsyncOpenAI(base_url=proxy.url, api_key="sk-a", max_retries=0, timeout=60) as c:
            await asyncio.gather(*(one(c, i) for i in range(80)))

    asyncio.run(body())
    usage = main.stats()["usage"]
    assert len(usage) == 80
    expected = sum(cost(p, o) for p, o in usage)
    wait_for(lambda: proxy.budget("cus_a")["spent"] == expected, what="every request charged")
    assert proxy.budget("cus_a")["reserved"] == 0


def test_no_overspend_when_200_race_for_50(tmp_path: Path, server: EmbeddedNats, fakes: Fakes) -> None:
    """Every request costs exactly its hold (input free, the answer is max_tokens long):
    a budget of 50 holds admits exactly 50 of 200 concurrent requests."""
    fake = fakes("race", "--tokens", "10", "--latency-ms", "300")
    proxy = start_proxy(tmp_path, server, [target("race", fake, input_price="0", output_price="3")])
    hold = cost(0, 10, "0", "3")
    subscribe(server.url, "cus_a", str(from_micros(50 * hold)))
    proxy.wait_budget("cus_a")

    async def body() -> list[int]:
        async with openai.AsyncOpenAI(base_url=proxy.url, api_key="sk-a", max_retries=0, timeout=60) as c:
            return await asyncio.gather(*(status_of(c) for _ in range(200)))

    statuses = asyncio.run(body())
    assert statuses.count(200) == 50 and statuses.count(402) == 150
    budget = proxy.budget("cus_a")
    assert budget["spent"] == budget["total"] == 50 * hold and budget["reserved"] == 0
    proxy.kill9()


def test_stream_cut_off_at_the_hold(proxy: Proxy, main: Fake) -> None:
    main.configure(tokens=50, ignore_max_tokens=True)
    chunks = list(
        client(proxy).chat.completions.create(model="gpt-x", messages=HI, max_tokens=10, stream=True)
    )
    content = [ch for ch in chunks if ch.choices and ch.choices[0].delta.content]
    assert len(content) == 10
    assert chunks[-1].choices[0].finish_reason == "length"
    wait_for(lambda: proxy.budget("cus_a")["reserved"] == 0, what="the hold settled")
    assert proxy.budget("cus_a")["spent"] == cost(PROMPT, 10)


def test_upstream_failing_mid_stream_is_reported_in_the_stream(proxy: Proxy, main: Fake) -> None:
    main.configure(tokens=20, abort_after=6)
    seen: list[Any] = []
    stream = client(proxy).chat.completions.create(model="gpt-x", messages=HI, max_tokens=20, stream=True)
    with pytest.raises(openai.APIError, match="the upstream failed mid-stream"):
        seen.extend(stream)
    assert sum(1 for ch in seen if ch.choices and ch.choices[0].delta.content) == 6
    wait_for(lambda: proxy.budget("cus_a")["reserved"] == 0, what="the hold settled")
    assert proxy.budget("cus_a")["spent"] == cost(PROMPT, 6)  # what was relayed, estimated


def leave_stream(proxy: Proxy, *, max_tokens: int, after: str) -> None:
    """Starts a stream and hangs up once the token ``after`` arrived."""
    body = {"model": "gpt-x", "messages": HI, "max_tokens": max_tokens, "stream": True}
    headers = {"Authorization": "Bearer sk-a"}
    with httpx.stream("POST", f"{proxy.url}/chat/completions", json=body, headers=headers) as r:
        for line in r.iter_lines():
            if after in line:
                return


def test_client_disconnect_mid_stream_is_charged_what_was_produced(proxy: Proxy, main: Fake) -> None:
    main.configure(tokens=60, chunk_delay_ms=10)
    leave_stream(proxy, max_tokens=100, after="tok2")
    (usage,) = wait_for(lambda: main.stats()["usage"], what="the upstream finished")
    assert usage[1] == 60
    wait_for(lambda: proxy.budget("cus_a")["reserved"] == 0, what="the hold settled")
    assert proxy.budget("cus_a")["spent"] == cost(*usage)


def test_client_disconnect_without_usage_charges_the_estimate(tmp_path: Path, server: EmbeddedNats,
                                                             fakes: Fakes) -> None:  # fmt: skip
    fake = fakes("slow", "--tokens", "1000", "--chunk-delay-ms", "20")
    proxy = start_proxy(tmp_path, server, [target("slow", fake)], drain_timeout_s=0.3)
    subscribe(server.url, "cus_a", "100")
    proxy.wait_budget("cus_a")
    leave_stream(proxy, max_tokens=1000, after="tok4")
    wait_for(lambda: proxy.budget("cus_a")["reserved"] == 0, what="the hold settled")
    spent = proxy.budget("cus_a")["spent"]
    assert cost(PROMPT, 5) <= spent < cost(PROMPT, 1000) / 2  # what was produced, not the hold, not 0
    proxy.kill9()


def test_updated_budget_applies_at_once(server: EmbeddedNats, proxy: Proxy) -> None:
    subscribe(server.url, "cus_poor", "0.00001")
    proxy.wait_budget("cus_poor")
    with pytest.raises(openai.APIStatusError):
        client(proxy, "sk-poor").chat.completions.create(model="gpt-x", messages=HI)
    publish_all(server.url, [updated("sub_cus_poor", new_total_budget="10", ts=datetime.now(UTC))])
    wait_for(lambda: proxy.budget("cus_poor")["total"] == 10_000_000, what="the upgrade")
    assert client(proxy, "sk-poor").chat.completions.create(model="gpt-x", messages=HI).choices


def test_config_errors_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[[targets]]\nname = "a"\nbase_url = "http://x/v1"\ninput_price = "1.0000001"\noutput_price = "1"\n'
    )
    done = subprocess.run([*CLI, "proxy", "--config", str(bad)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "targets[0].input_price" in done.stderr
