"""kill -9 of the proxy mid-traffic, then a restart: no committed spend is lost beyond
the snapshot window (``snapshot_every_s``, 0.2 s here)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from billing_gateway.natsd import EmbeddedNats
from billing_gateway.proxy.pricing import estimate_prompt_tokens

from .proxy_support import Fakes, Proxy, cost, subscribe, target, wait_for

HI = [{"role": "user", "content": "hi"}]
WINDOW_S = 0.2


@pytest.fixture
def fakes(tmp_path: Path) -> Iterator[Fakes]:
    made = Fakes(tmp_path)
    yield made
    made.stop()


def test_kill9_mid_traffic_loses_nothing_beyond_the_snapshot_window(
    tmp_path: Path, server: EmbeddedNats, fakes: Fakes
) -> None:
    fake = fakes("main", "--latency-ms", "5")
    doc = {"tenants": {"sk-a": "cus_a"}, "targets": [target("main", fake)],
           "policies": [{"id": "default", "match": "true", "targets": ["main"]}]}  # fmt: skip
    proxy = Proxy(tmp_path, server.url, doc).start()
    subscribe(server.url, "cus_a", "100")
    proxy.wait_budget("cus_a")
    stop = threading.Event()
    answered = 0

    def traffic() -> None:
        nonlocal answered
        with openai.OpenAI(base_url=proxy.url, api_key="sk-a", max_retries=0, timeout=10) as c:
            while not stop.is_set():
                try:
                    c.chat.completions.create(model="gpt-x", messages=HI, max_tokens=4)
                    answered += 1
                except openai.APIConnectionError:
                    return  # the proxy was killed

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        wait_for(lambda: answered >= 20, what="traffic")
        before = proxy.budget("cus_a")["spent"]  # committed at least this much...
        time.sleep(WINDOW_S * 5)  # ...and a snapshot has been written since (traffic goes on)
        proxy.kill9()
    finally:
        stop.set()
        worker.join(30)
    assert before > 0
    proxy.start()
    after = proxy.wait_budget("cus_a")
    assert after["spent"] >= before
    assert after["reserved"] <= cost(estimate_prompt_tokens(HI), 4)  # at most the one hold in flight
    # and the restarted proxy serves at once, charging on top of what it restored
    with openai.OpenAI(base_url=proxy.url, api_key="sk-a", max_retries=0, timeout=10) as c:
        assert c.chat.completions.create(model="gpt-x", messages=HI, max_tokens=4).choices
    assert proxy.budget("cus_a")["spent"] > after["spent"]
    proxy.terminate()
