"""Thread pool or async driver for the billing API's database work (``make bench``).

The API's handlers are synchronous and run on a thread pool, the sync driver under them.
The alternative is an async driver on the event loop. Both sides here run the statements
a ``PATCH /subscriptions`` commits (lock the row, update it, append an outbox row), from
``TASKS`` concurrent tasks on one event loop, on SQLite and PostgreSQL:

- ``baseline_thread_pool``: ``sqlite3`` / sync ``psycopg`` on a pool of ``TASKS`` threads;
- ``async_driver``: ``aiosqlite`` / ``psycopg.AsyncConnection`` on the loop.

Each reports the median and p50/p99 per transaction and transactions/s.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiosqlite
import psycopg
import pytest

from .test_bench_sync import percentiles

TASKS = 8
CALLS = 2_000
PG = "postgresql://postgres@127.0.0.1:5432/test"

SQLITE_TX = (
    ("BEGIN IMMEDIATE", ()),
    ("SELECT total FROM subs WHERE id = ?", ("sub",)),
    ("UPDATE subs SET total = total + 1 WHERE id = ?", ("sub",)),
    ("INSERT INTO outbox (payload) VALUES (?)", (b"{}" * 200,)),
    ("COMMIT", ()),
)
PG_TX = (
    ("SELECT total FROM subs WHERE id = %s FOR UPDATE", ("sub",)),
    ("UPDATE subs SET total = total + 1 WHERE id = %s", ("sub",)),
    ("INSERT INTO outbox (payload) VALUES (%s)", (b"{}" * 200,)),
)


@contextlib.contextmanager
def sqlite_db(tmp: Path) -> Iterator[str]:
    path = str(tmp / "drivers.db")
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE subs (id TEXT PRIMARY KEY, total INTEGER)")
        conn.execute("CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, payload BLOB)")
        conn.execute("INSERT INTO subs VALUES ('sub', 0)")
        conn.commit()
    yield path


@contextlib.contextmanager
def pg_db() -> Iterator[str]:
    schema = f"drivers_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        url = f"{PG}?options=-csearch_path%3D{schema}"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE subs (id TEXT PRIMARY KEY, total BIGINT)")
            conn.execute("CREATE TABLE outbox (seq BIGSERIAL PRIMARY KEY, payload BYTEA)")
            conn.execute("INSERT INTO subs VALUES ('sub', 0)")
        try:
            yield url
        finally:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


async def drive(transaction: Callable[[int], Awaitable[None]]) -> tuple[list[float], float]:
    """``CALLS`` transactions from ``TASKS`` tasks, each on its own connection ``worker``."""
    samples: list[float] = []

    async def task(worker: int) -> None:
        for _ in range(CALLS // TASKS):
            start = time.perf_counter()
            await transaction(worker)
            samples.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(task(w) for w in range(TASKS)))
    return samples, len(samples) / (time.perf_counter() - start)


def sync_sqlite(path: str) -> tuple[Callable[[int], None], list[Any]]:
    conns = [sqlite3.connect(path, isolation_level=None, check_same_thread=False) for _ in range(TASKS)]
    for conn in conns:
        conn.execute("PRAGMA busy_timeout=10000")

    def run(worker: int) -> None:
        for sql, args in SQLITE_TX:
            conns[worker].execute(sql, args).fetchall()

    return run, conns


def sync_pg(url: str) -> tuple[Callable[[int], None], list[Any]]:
    conns = [psycopg.connect(url) for _ in range(TASKS)]

    def run(worker: int) -> None:
        with conns[worker].transaction():
            for sql, args in PG_TX:
                conns[worker].execute(sql, args)

    return run, conns


async def thread_pool(open_sync: Callable[[str], Any], url: str) -> tuple[list[float], float]:
    run, conns = open_sync(url)
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(TASKS) as pool:
        try:
            return await drive(lambda worker: loop.run_in_executor(pool, run, worker))
        finally:
            for conn in conns:
                conn.close()


async def async_sqlite(path: str) -> tuple[list[float], float]:
    conns = [await aiosqlite.connect(path, isolation_level=None) for _ in range(TASKS)]
    for conn in conns:
        await conn.execute("PRAGMA busy_timeout=10000")

    async def run(worker: int) -> None:
        for sql, args in SQLITE_TX:
            await (await conns[worker].execute(sql, args)).fetchall()

    try:
        return await drive(run)
    finally:
        for conn in conns:
            await conn.close()


async def async_pg(url: str) -> tuple[list[float], float]:
    conns = [await psycopg.AsyncConnection.connect(url) for _ in range(TASKS)]

    async def run(worker: int) -> None:
        async with conns[worker].transaction():
            for sql, args in PG_TX:
                await conns[worker].execute(sql, args)

    try:
        return await drive(run)
    finally:
        for conn in conns:
            await conn.close()


def measure(benchmark: Any, body: Callable[[], Awaitable[tuple[list[float], float]]]) -> None:
    samples, rate = benchmark.pedantic(lambda: asyncio.run(body()), rounds=1, iterations=1)
    benchmark.extra_info.update(percentiles(samples))
    benchmark.extra_info["tx_per_s"] = round(rate)


@pytest.mark.benchmark(group="write_path_sqlite")
def test_write_path_sqlite__baseline_thread_pool(benchmark: Any, tmp_path: Path) -> None:
    with sqlite_db(tmp_path) as path:
        measure(benchmark, lambda: thread_pool(sync_sqlite, path))


@pytest.mark.benchmark(group="write_path_sqlite")
def test_write_path_sqlite__async_driver(benchmark: Any, tmp_path: Path) -> None:
    with sqlite_db(tmp_path) as path:
        measure(benchmark, lambda: async_sqlite(path))


@pytest.mark.benchmark(group="write_path_postgresql")
def test_write_path_postgresql__baseline_thread_pool(benchmark: Any) -> None:
    with pg_db() as url:
        measure(benchmark, lambda: thread_pool(sync_pg, url))


@pytest.mark.benchmark(group="write_path_postgresql")
def test_write_path_postgresql__async_driver(benchmark: Any) -> None:
    with pg_db() as url:
        measure(benchmark, lambda: async_pg(url))
