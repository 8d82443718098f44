"""Two ``billing-gateway proxy`` processes sharing one budget through Redis leases
(``[leases]`` in their configuration), raced by concurrent clients, and the ``[leases]``
table's errors."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import openai
import pytest
from billing_gateway import from_micros
from billing_gateway.natsd import EmbeddedNats
from billing_gateway.proxy.config import ConfigError, LeasesConfig, parse_config

from .leases_support import drop_prefix, unique_prefix
from .proxy_support import Fakes, Proxy, cost, subscribe, target
from .test_proxy import KEYS, status_of


def test_two_proxies_never_admit_more_than_the_shared_budget(
    tmp_path: Path, server: EmbeddedNats, redis_url: str
) -> None:
    """A budget of 20 holds: 120 concurrent requests spread over two proxies get at most 20
    answers between them (each costs exactly its hold); the rest are 402 or 429."""
    fakes = Fakes(tmp_path)
    prefix = unique_prefix()
    proxies: list[Proxy] = []
    try:
        fake = fakes("shared", "--tokens", "10", "--latency-ms", "100")
        hold = cost(0, 10, "0", "3")
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            leases = {"redis_url": redis_url, "lease_ttl_s": 2, "key_prefix": prefix, "replica_id": name}
            doc = {
                "tenants": KEYS,
                "targets": [target("shared", fake, input_price="0", output_price="3")],
                "policies": [{"id": "p", "priority": 1, "match": "true", "targets": ["shared"]}],
                "leases": leases,
            }
            proxies.append(Proxy(tmp_path / name, server.url, doc).start())
        subscribe(server.url, "cus_a", str(from_micros(20 * hold)))
        for p in proxies:
            p.wait_budget("cus_a")

        async def body() -> list[int]:
            clients = [
                openai.AsyncOpenAI(base_url=p.url, api_key="sk-a", max_retries=0, timeout=60) for p in proxies
            ]
            try:
                # A new shared budget is granted after one lease TTL (strict mode's learning
                # period): until then 429. One answer first, then the race.
                deadline = time.monotonic() + 30
                while (first := await status_of(clients[0])) == 429 and time.monotonic() < deadline:
                    await asyncio.sleep(0.2)
                return [first, *await asyncio.gather(*(status_of(clients[i % 2]) for i in range(120)))]
            finally:
                for c in clients:
                    await c.close()

        statuses = asyncio.run(body())
        assert statuses[0] == 200
        assert set(statuses) <= {200, 402, 429}, statuses
        assert statuses.count(200) <= 20
        spent = sum(p.budget("cus_a")["spent"] for p in proxies)
        assert spent == statuses.count(200) * hold <= 20 * hold
        for p in proxies:
            assert p.terminate() == 0
    finally:
        for p in proxies:
            if p.process is not None and p.process.poll() is None:
                p.kill9()
        fakes.stop()
        drop_prefix(redis_url, prefix)


BASE = {
    "targets": [{"name": "t", "base_url": "http://127.0.0.1:1/v1", "input_price": "1", "output_price": "1"}]
}


def test_the_leases_table_is_read_with_its_defaults() -> None:
    config = parse_config({**BASE, "leases": {"redis_url": "redis://127.0.0.1:6379/0"}})
    assert config.leases == LeasesConfig(redis_url="redis://127.0.0.1:6379/0")
    assert parse_config(BASE).leases is None


@pytest.mark.parametrize(
    ("leases", "named"),
    [
        ({}, "leases.redis_url"),
        ({"redis_url": "http://x"}, "leases.redis_url"),
        ({"redis_url": "redis://x", "mode": "eventual"}, "leases.mode"),
        ({"redis_url": "redis://x", "lease_ttl_s": 0}, "leases.lease_ttl_s"),
        ({"redis_url": "redis://x", "key_prefix": "{bad}"}, "leases.key_prefix"),
        ({"redis_url": "redis://x", "replica_id": "two words"}, "leases.replica_id"),
        ({"redis_url": "redis://x", "ttl": 3}, "leases.ttl"),
    ],
)
def test_a_bad_leases_table_names_the_key(leases: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        parse_config({**BASE, "leases": leases})
