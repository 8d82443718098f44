"""The proxy's integration tests drive real processes: ``billing-gateway proxy`` following
a real nats-server, and ``billing-gateway fake-upstream`` servers."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from billing_gateway import to_micros
from billing_gateway.natsd import free_port

from .conftest import created
from .processes import CLI, Daemon, publish_all

NOW = datetime.now(UTC)
PERIOD = {"start": NOW - timedelta(days=1), "end": NOW + timedelta(days=29)}


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except (httpx.HTTPError, OSError):
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not met within {timeout}s"
        time.sleep(0.02)


class Fake:
    """``billing-gateway fake-upstream`` as a child process."""

    def __init__(self, tmp: Path, name: str, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"fake-{name}.log"
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [*CLI, "fake-upstream", "--http", f"127.0.0.1:{self.port}", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for(lambda: httpx.get(f"{self.url}/_fake/stats").status_code == 200, what=f"fake {name}")

    def configure(self, **settings: Any) -> None:
        assert httpx.post(f"{self.url}/_fake/config", json=settings).status_code == 200

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = httpx.get(f"{self.url}/_fake/stats").json()
        return result

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


def toml_value(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, bool) else str(value).lower()


def write_config(path: Path, doc: dict[str, Any]) -> Path:
    """A small TOML writer: top-level scalars, tables and arrays of tables of scalars/lists."""
    lines = [f"{k} = {toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict | list)]
    for key, value in doc.items():
        if isinstance(value, dict):
            lines.append(f"[{key}]")
            lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()]
        elif isinstance(value, list):
            for item in value:
                lines.append(f"[[{key}]]")
                lines += [f"{k} = {toml_value(v)}" for k, v in item.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


class Proxy(Daemon):
    """``billing-gateway proxy`` as a child process (the daemon harness: same endpoints)."""

    def __init__(self, tmp: Path, nats_url: str, config: dict[str, Any]) -> None:
        super().__init__(tmp, nats_url)
        self.log = tmp / "proxy.log"
        self.url = f"http://127.0.0.1:{self.port}/v1"
        config = {"listen": f"127.0.0.1:{self.port}", **config}
        config["events"] = {"nats_url": nats_url, "snapshot": str(self.snapshot), "snapshot_every_s": 0.2,
                            "usage_every_s": 0.5, **config.get("events", {})}  # fmt: skip
        self.config = write_config(tmp / "proxy.toml", config)

    def start(self, wait: bool = True) -> Proxy:
        command = [*CLI, "--data-dir", str(self.data_dir), "proxy", "--config", str(self.config)]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_for("/readyz")
        return self

    def budget(self, tenant: str) -> dict[str, Any]:
        status, body = self.request("GET", f"/v1/budgets/{tenant}")
        assert status == 200, body
        return dict(body)

    def wait_budget(self, tenant: str) -> dict[str, Any]:
        return dict(self.wait_for(f"/v1/budgets/{tenant}"))


def subscribe(nats_url: str, tenant: str, total: str, sub: str | None = None, **fields: Any) -> None:
    publish_all(nats_url, [created(sub or f"sub_{tenant}", tenant, total=total, **PERIOD, **fields)])


def target(
    name: str, fake: Fake | str, *, input_price: str = "1", output_price: str = "2", **more: Any
) -> dict[str, Any]:
    base = fake.url if isinstance(fake, Fake) else fake
    return {"name": name, "base_url": f"{base}/v1", "api_key": f"sk-upstream-{name}",
            "input_price": input_price, "output_price": output_price, **more}  # fmt: skip


class Fakes:
    """Fake upstreams started by a test, all stopped at its end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.started: list[Fake] = []

    def __call__(self, name: str, *args: str) -> Fake:
        self.started.append(Fake(self.tmp, name, *args))
        return self.started[-1]

    def stop(self) -> None:
        for fake in self.started:
            fake.stop()


def cost(prompt: int, completion: int, input_price: str = "1", output_price: str = "2") -> int:
    """What the proxy charges, computed here independently: prices per million tokens, rounded up."""
    total = prompt * to_micros(input_price) + completion * to_micros(output_price)
    return -(-total // 1_000_000)
