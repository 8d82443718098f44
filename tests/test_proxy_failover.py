"""Failover between real fake-upstream processes (429 with Retry-After, 500, a refused
connection, and the target coming back), and policies changed by events under traffic."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openai
import pytest
from billing_gateway.natsd import EmbeddedNats, free_port

from .conftest import event
from .processes import publish_all
from .proxy_support import Fake, Fakes, Proxy, cost, subscribe, target, wait_for

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def fakes(tmp_path: Path) -> Iterator[Fakes]:
    made = Fakes(tmp_path)
    yield made
    made.stop()


@pytest.fixture
def pair(tmp_path: Path, server: EmbeddedNats, fakes: Fakes) -> Iterator[tuple[Proxy, Fake, Fake]]:
    primary, backup = fakes("primary"), fakes("backup")
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    policies = [
        {"id": "default", "priority": 100, "match": "true", "strategy": "failover",
         "targets": ["primary", "backup"]},
        {"id": "dead-first", "priority": 10, "match": "request.model == 'gpt-dead'", "strategy": "failover",
         "targets": ["dead", "backup"]},
    ]  # fmt: skip
    targets = [target("primary", primary), target("backup", backup), target("dead", dead)]
    doc = {"tenants": {"sk-a": "cus_a"}, "targets": targets, "policies": policies, "cooldown_s": 1.0}
    proxy = Proxy(tmp_path, server.url, doc).start()
    subscribe(server.url, "cus_a", "100")
    proxy.wait_budget("cus_a")
    yield proxy, primary, backup
    if proxy.process is not None and proxy.process.poll() is None:
        proxy.kill9()


def ask(proxy: Proxy, model: str = "gpt-x", stream: bool = False) -> str:
    with openai.OpenAI(base_url=proxy.url, api_key="sk-a", max_retries=0, timeout=30) as c:
        if stream:
            with c.chat.completions.with_streaming_response.create(
                model=model, messages=HI, max_tokens=3, stream=True
            ) as r:
                assert "".join(r.iter_lines())
                return str(r.headers["x-route-target"])
        raw = c.chat.completions.with_raw_response.create(model=model, messages=HI, max_tokens=3)
        assert raw.parse().choices
        return str(raw.headers["x-route-target"])


def spent_matches(proxy: Proxy, *fakes: Fake) -> bool:
    expected = sum(cost(p, o) for f in fakes for p, o in f.stats()["usage"])
    b = proxy.budget("cus_a")
    return bool(b["spent"] == expected and b["reserved"] == 0)


def test_429_with_retry_after_fails_over_then_comes_back(pair: tuple[Proxy, Fake, Fake]) -> None:
    proxy, primary, backup = pair
    assert ask(proxy) == "primary"
    primary.configure(fail_status=429, fail_count=1, retry_after=2)
    failed_at = time.monotonic()
    assert ask(proxy) == "backup"
    assert ask(proxy, stream=True) == "backup"  # still down: not even tried
    assert primary.stats()["requests"] == 2
    wait_for(lambda: ask(proxy) == "primary", what="primary back after Retry-After")
    assert time.monotonic() - failed_at >= 1.9
    wait_for(lambda: spent_matches(proxy, primary, backup), what="charged once per answer")
    _, metrics = proxy.request("GET", "/metrics")
    assert 'billing_gateway_proxy_failovers_total{target="primary"} 1.0' in metrics
    assert 'billing_gateway_proxy_responses_total{endpoint="chat",status="200"}' in metrics
    charged = sum(float(line.split()[-1]) for line in metrics.splitlines()
                  if line.startswith("billing_gateway_proxy_charged_micros_total{"))  # fmt: skip
    assert charged == proxy.budget("cus_a")["spent"]


def test_500_and_stream_fail_over_for_the_cooldown(pair: tuple[Proxy, Fake, Fake]) -> None:
    proxy, primary, backup = pair
    primary.configure(fail_status=500, fail_count=1)
    assert ask(proxy, stream=True) == "backup"
    wait_for(lambda: ask(proxy) == "primary", what="primary back after the cooldown")
    primary.configure(fail_status=503, fail_count=1)
    assert ask(proxy) == "backup"
    wait_for(lambda: spent_matches(proxy, primary, backup), what="charged once per answer")


def test_refused_connection_fails_over(pair: tuple[Proxy, Fake, Fake]) -> None:
    proxy, _, backup = pair
    assert ask(proxy, "gpt-dead") == "backup"
    assert ask(proxy, "gpt-dead", stream=True) == "backup"
    assert len(backup.stats()["usage"]) == 2


def test_every_upstream_failing_is_a_502_and_charges_nothing(pair: tuple[Proxy, Fake, Fake]) -> None:
    proxy, primary, backup = pair
    primary.configure(fail_status=500, fail_count=1)
    backup.configure(fail_status=502, fail_count=1)
    with pytest.raises(openai.APIStatusError) as err:
        ask(proxy)
    assert err.value.status_code == 502 and err.value.code == "upstream_error"
    b = proxy.budget("cus_a")
    assert b["spent"] == 0 and b["reserved"] == 0


def policy_event(kind: str, data: dict[str, Any]) -> bytes:
    return event(f"routing_policy.{kind}", data, ts=datetime.now(UTC))


def test_policies_changed_by_events_while_traffic_flows(
    server: EmbeddedNats, pair: tuple[Proxy, Fake, Fake]
) -> None:
    proxy, primary, backup = pair
    seen: list[str] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            try:
                seen.append(ask(proxy))
            except BaseException as exc:
                errors.append(exc)

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        wait_for(lambda: "primary" in seen, what="traffic on primary")
        switch = {"id": "switch", "priority": 1, "match_expression": "has(budget.total)",
                  "strategy": "failover", "targets": [{"name": "backup"}]}  # fmt: skip
        publish_all(server.url, [policy_event("upserted", switch)])
        mark = len(seen)
        wait_for(lambda: "backup" in seen[mark:], what="traffic moved to backup")
        publish_all(server.url, [policy_event("deleted", {"policy_id": "switch"})])
        mark = len(seen)
        wait_for(lambda: "primary" in seen[mark:], what="traffic back on primary")
    finally:
        stop.set()
        worker.join(30)
    assert errors == []
    assert len(seen) == len(primary.stats()["usage"]) + len(backup.stats()["usage"])
    wait_for(lambda: spent_matches(proxy, primary, backup), what="every answer charged")
