"""What the lease tests share: events for a few tenants, a Redis key prefix of their
own, a ``redis-server`` to kill and restart, and the replica processes' counters."""

from __future__ import annotations

import json
import mmap
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from billing_gateway.natsd import free_port, listening

UNIT = 1_000_000
START = "2025-11-28T10:00:00Z"
END = "2099-12-28T10:00:00Z"


def created(tenant: str, total: int, *, ts: str = "2025-11-28T10:00:00Z") -> str:
    return json.dumps(
        {
            "event_id": f"created-{tenant}",
            "event_type": "subscription.created",
            "timestamp": ts,
            "data": {
                "subscription_id": f"sub-{tenant}",
                "customer_id": tenant,
                "plan_id": "p",
                "plan_name": "Pro",
                "total_budget": total,
                "currency": "USD",
                "period_start": START,
                "period_end": END,
            },
        }
    )


def new_total(tenant: str, total: int, ts: str) -> str:
    return json.dumps(
        {
            "event_id": f"total-{tenant}-{ts}",
            "event_type": "subscription.updated",
            "timestamp": ts,
            "data": {"subscription_id": f"sub-{tenant}", "new_total_budget": total},
        }
    )


def paid(tenant: str, start: str) -> str:
    return json.dumps(
        {
            "event_id": f"paid-{tenant}-{start}",
            "event_type": "invoice.paid",
            "timestamp": start,
            "data": {
                "invoice_id": f"inv-{start}",
                "customer_id": tenant,
                "subscription_id": f"sub-{tenant}",
                "amount_paid": 1,
                "new_period_start": start,
                "new_period_end": END,
            },
        }
    )


def unique_prefix() -> str:
    return f"bgt{uuid.uuid4().hex[:12]}"


def drop_prefix(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def wait_until(predicate: object, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise TimeoutError(f"{what} not met in {timeout}s")


class RedisServer:
    """A ``redis-server`` of the test's own on a free port: killed and restarted at will,
    with its data kept (append-only file, fsync always) or not."""

    def __init__(self, directory: Path, *, persist: bool) -> None:
        self.port = free_port()
        self.directory = directory
        self.persist = persist
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        durability = (
            ["--appendonly", "yes", "--appendfsync", "always"] if self.persist else ["--appendonly", "no"]
        )
        command = [
            "/usr/bin/redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--dir", str(self.directory), *durability,
        ]  # fmt: skip
        with open(self.directory / "redis.log", "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        wait_until(lambda: listening(self.port), 20, "redis-server listening")
        return self

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()


@contextmanager
def redis_server(directory: Path, *, persist: bool) -> Iterator[RedisServer]:
    server = RedisServer(directory, persist=persist).start()
    try:
        yield server
    finally:
        server.stop()


class Counters:
    """int64 counters in a file each replica process maps: what its threads hold (spent
    plus held) per tenant, readable after a ``kill -9``."""

    def __init__(self, path: Path, slots: int) -> None:
        path.write_bytes(bytes(8 * slots))
        self.path = path
        self.slots = slots

    @staticmethod
    @contextmanager
    def mapped(path: Path) -> Iterator[memoryview]:
        with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as m:
            view = memoryview(m).cast("q")
            try:
                yield view
            finally:
                view.release()

    def read(self) -> list[int]:
        with self.mapped(self.path) as view:
            return list(view)
