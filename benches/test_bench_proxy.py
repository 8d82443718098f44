"""The LLM proxy's added latency and throughput, against the same fake upstream, in one run:
straight to the upstream (the baseline), through ``billing-gateway proxy``, and through
LiteLLM's proxy (``litellm[proxy]`` in its own virtualenv, ``.venv-litellm``, created here
on first use: one worker, a master key, no database).

For 1 and 32 concurrent clients, non-streaming and streaming: p50 / p99 latency (ms)
and requests per second; ``added_*`` is the proxy's p50 / p99 minus the baseline's.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from billing_gateway.natsd import EmbeddedNats, free_port

from tests.proxy_support import Fake, Proxy, subscribe, target

ROOT = Path(__file__).parent.parent
LITELLM_VENV = ROOT / ".venv-litellm"
REQUESTS = {1: 300, 32: 1600}
BODY = {"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
measured: dict[str, dict[str, float]] = {}


async def _one(session: aiohttp.ClientSession, url: str, stream: bool) -> float:
    start = time.perf_counter()
    async with session.post(url, json={**BODY, "stream": stream}) as r:
        assert r.status == 200, await r.text()
        await r.read()
    return time.perf_counter() - start


async def load(url: str, key: str, clients: int, stream: bool) -> dict[str, float]:
    total = REQUESTS[clients]
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients), headers=headers) as s:
        for _ in range(20):  # warm the pools
            await _one(s, url, stream)
        samples: list[float] = []

        async def worker(n: int) -> None:
            for _ in range(n):
                samples.append(await _one(s, url, stream))

        start = time.perf_counter()
        await asyncio.gather(*(worker(total // clients) for _ in range(clients)))
        elapsed = time.perf_counter() - start
    cuts = statistics.quantiles(samples, n=100)
    return {"p50_ms": cuts[49] * 1e3, "p99_ms": cuts[98] * 1e3, "rps": len(samples) / elapsed}


def run_all(benchmark: Any, name: str, url: str, key: str) -> None:
    def measure() -> dict[str, float]:
        figures: dict[str, float] = {}
        for stream in (False, True):
            for clients in (1, 32):
                got = asyncio.run(load(url, key, clients, stream))
                tag = f"{'stream' if stream else 'chat'}_{clients}c"
                figures.update({f"{tag}_{k}": round(v, 3) for k, v in got.items()})
        return figures

    figures = benchmark.pedantic(measure, rounds=1, iterations=1)
    measured[name] = figures
    base = measured.get("direct")
    if base is not None and name != "direct":
        for key_, value in list(figures.items()):
            if key_.endswith(("p50_ms", "p99_ms")):
                figures[f"added_{key_}"] = round(value - base[key_], 3)
    benchmark.extra_info.update(figures)
    if "ours" in measured and "litellm" in measured and name == "litellm":
        ours, theirs = measured["ours"], figures
        for key_ in [k for k in ours if k.startswith("added_") and k.endswith("p50_ms")]:
            benchmark.extra_info[f"litellm_over_ours_{key_}"] = round(theirs[key_] / max(ours[key_], 1e-3), 1)
        for key_ in [k for k in ours if k.endswith("rps") and not k.startswith("added_")]:
            benchmark.extra_info[f"ours_over_litellm_{key_}"] = round(ours[key_] / theirs[key_], 1)


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fake]:
    f = Fake(tmp_path_factory.mktemp("fake"), "bench", "--tokens", "8")
    yield f
    f.stop()


@pytest.fixture(scope="module")
def nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    with EmbeddedNats(tmp_path_factory.mktemp("nats")) as s:
        yield s


def test_proxy__baseline_direct(benchmark: Any, fake: Fake) -> None:
    run_all(benchmark, "direct", f"{fake.url}/v1/chat/completions", "sk-any")


def test_proxy__billing_gateway(benchmark: Any, fake: Fake, nats: EmbeddedNats, tmp_path: Path) -> None:
    doc = {"tenants": {"sk-bench": "cus_bench"}, "targets": [target("main", fake)],
           "policies": [{"id": "default", "match": "true", "targets": ["main"]}]}  # fmt: skip
    proxy = Proxy(tmp_path, nats.url, doc).start()
    subscribe(nats.url, "cus_bench", "1000000000")
    proxy.wait_budget("cus_bench")
    try:
        run_all(benchmark, "ours", f"{proxy.url}/chat/completions", "sk-bench")
    finally:
        proxy.terminate()


def _litellm() -> Path | None:
    """The LiteLLM proxy's executable, installed into its own virtualenv on first use."""
    exe = LITELLM_VENV / "bin" / "litellm"
    if not exe.exists():
        try:
            subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True, timeout=300)
            subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "--quiet", "litellm[proxy]"],
                           check=True, timeout=1500)  # fmt: skip
        except (subprocess.SubprocessError, OSError):
            shutil.rmtree(LITELLM_VENV, ignore_errors=True)
            return None
    return exe


def test_proxy__litellm(benchmark: Any, fake: Fake, tmp_path: Path) -> None:
    exe = _litellm()
    if exe is None:
        pytest.skip("litellm[proxy] could not be installed into .venv-litellm")
    port = free_port()
    config = tmp_path / "litellm.yaml"
    config.write_text(
        "model_list:\n  - model_name: gpt-x\n    litellm_params:\n      model: openai/gpt-x\n"
        f"      api_base: {fake.url}/v1\n      api_key: sk-fake\n"
        "general_settings:\n  master_key: sk-master\n"
    )
    version = subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "show", "litellm"], capture_output=True,
                             text=True, check=False).stdout.split("Version: ")[-1].split()[0]  # fmt: skip
    log = open(tmp_path / "litellm.log", "wb")  # noqa: SIM115 - the child writes it
    process = subprocess.Popen(
        [str(exe), "--config", str(config), "--port", str(port), "--num_workers", "1"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, (tmp_path / "litellm.log").read_text()[-3000:]
            try:
                asyncio.run(_ready(url))
                break
            except (aiohttp.ClientError, AssertionError, OSError):
                assert time.monotonic() < deadline, "LiteLLM did not start"
                time.sleep(0.5)
        benchmark.extra_info["litellm_version"] = version
        run_all(benchmark, "litellm", url, "sk-master")
    finally:
        process.terminate()
        process.wait(30)
        log.close()


async def _ready(url: str) -> None:
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer sk-master"}) as s:
        await _one(s, url, False)
