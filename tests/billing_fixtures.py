"""Fixtures for tests that run the billing service as real processes: a fresh PostgreSQL
schema per test, an embedded nats-server, and ``billing-gateway billing serve`` processes
that a test can race against each other or ``kill -9``.

Import the fixtures into a test module (``from .billing_fixtures import pg_url, ...``)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import sqlalchemy as sa
from billing_gateway.natsd import EmbeddedNats, free_port

from .conftest import POSTGRES_URL, require_service

T = TypeVar("T")
CLI = [sys.executable, "-m", "billing_gateway.cli"]


@contextlib.contextmanager
def pg_schema() -> Iterator[str]:
    """A PostgreSQL URL whose tables live in a new schema of their own, dropped afterwards."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    with pg_schema() as url:
        yield url


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    with EmbeddedNats(tmp_path / "nats") as server:
        yield server.url


class BillingServer:
    """One ``billing-gateway billing serve`` process (API, dispatcher, scheduler, ingestion)."""

    def __init__(self, db: str, nats_url: str, log: Path, **env: str) -> None:
        self.db = db
        self.nats_url = nats_url
        self.log = log
        self.env = {**os.environ, **env}
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def launch(self) -> BillingServer:
        command = [
            *CLI, "--nats-url", self.nats_url, "billing", "--db", self.db, "serve",
            "--http", f"127.0.0.1:{self.port}", "--no-auto-pay", "--cycle-every", "3600",
        ]  # fmt: skip
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        return self

    def ready(self, timeout: float = 60.0) -> BillingServer:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"{self.url}/openapi.json", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"billing serve did not answer within {timeout}s: {self.log.read_text()}")

    def wait_for_log(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log.read_text(errors="replace"):
            assert time.monotonic() < deadline, f"{text!r} never logged: {self.log.read_text()}"
            time.sleep(0.05)

    def kill(self) -> None:
        """``kill -9``: no cleanup, no rollback but the database's own."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def billing_servers(tmp_path: Path, nats_url: str) -> Iterator[Callable[..., BillingServer]]:
    """``billing_servers(db, **env)`` launches a server (call ``.ready()``); all are stopped after."""
    started: list[BillingServer] = []

    def launch(db: str, **env: str) -> BillingServer:
        server = BillingServer(db, nats_url, tmp_path / f"billing-{len(started)}.log", **env)
        started.append(server.launch())
        return server

    yield launch
    for server in started:
        server.stop()


def race(*calls: Callable[[], T]) -> list[T]:
    """Runs ``calls`` at the same moment, one thread each; their results in order."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], T]) -> T:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


class Api:
    """Raw HTTP to one server with one key: status codes and bodies, no client-side logic."""

    def __init__(self, url: str, key: str) -> None:
        self.http = httpx.Client(
            base_url=f"{url}/api/v1", headers={"Authorization": f"Bearer {key}"}, timeout=30
        )

    def send(
        self, method: str, path: str, body: dict[str, Any] | None = None, key: str | None = None
    ) -> httpx.Response:
        headers = {"Idempotency-Key": key} if key else {}
        return self.http.request(method, path, json=body, headers=headers)

    def post(self, path: str, body: dict[str, Any] | None = None, key: str | None = None) -> httpx.Response:
        return self.send("POST", path, body or {}, key)

    def get(self, path: str) -> httpx.Response:
        return self.send("GET", path)

    def close(self) -> None:
        self.http.close()
