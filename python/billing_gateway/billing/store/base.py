"""What every aggregate of the store shares: the engine (SQLite set up for concurrent
writers), the transaction in progress, ids, and typed rows read from tables."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, RowMapping

from billing_gateway.billing.domain import NotFound
from billing_gateway.billing.schema import WRITE, migrate

__all__ = ["OUTBOX_WRITTEN", "StoreBase", "insert_new", "load", "new_id", "open_engine", "utc"]

OUTBOX_WRITTEN = "billing_outbox_written"
"""``Connection.info`` key: the transaction in progress wrote outbox rows."""

R = TypeVar("R", bound=msgspec.Struct)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def utc(value: datetime) -> datetime:
    """SQLite returns naive datetimes; every time in this database is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def load(kind: type[R], row: RowMapping, **extra: Any) -> R:
    """A typed row from a database row (times in UTC) and ``extra`` fields."""
    fields = {k: utc(v) if isinstance(v, datetime) else v for k, v in row.items()}
    return kind(**fields, **extra)


def insert_new(conn: Connection, table: sa.Table, **values: Any) -> bool:
    """Inserts a row unless one with the same unique key exists: whether it was inserted.

    On PostgreSQL, a concurrent transaction inserting the same key makes this wait for
    its outcome, so a duplicate is never inserted and never raises."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = insert(table).values(**values).on_conflict_do_nothing()
    return conn.execute(statement.returning(*table.primary_key.columns)).first() is not None


def _switch_to_wal(cursor: Any, timeout_s: float = 10.0) -> None:
    """WAL mode (persistent in the file). The switch needs the database to itself and SQLite
    answers "locked" at once, without waiting, while another process switches a new file
    too: retry until then."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _sqlite_transactions(engine: Engine) -> None:
    """pysqlite's own BEGIN handling off; ours on: ``BEGIN IMMEDIATE`` for writes (the
    write lock up front, so concurrent writers queue instead of failing to upgrade), a
    plain ``BEGIN`` for reads."""

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _: Any) -> None:
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA busy_timeout=10000")
        _switch_to_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE) else "BEGIN")


def open_engine(url: str, **options: Any) -> Engine:
    """An engine on ``url`` (a SQLite path or URL, or a PostgreSQL URL), migrated."""
    if "://" not in url:
        url = f"sqlite:///{url}"
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    engine = sa.create_engine(url, **options)
    if engine.dialect.name == "sqlite":
        _sqlite_transactions(engine)
    migrate(engine)
    return engine


class StoreBase:
    """The engine, the clock and the transaction in progress in this context."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime] | None = None) -> None:
        self.engine = engine
        self.clock = clock or (lambda: datetime.now(UTC))
        self._tx: ContextVar[Connection | None] = ContextVar(f"billing_tx_{id(self)}", default=None)
        self._outbox_listeners: list[Callable[[], object]] = []
        self._writer = threading.Lock() if engine.dialect.name == "sqlite" else contextlib.nullcontext()

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Held around every write transaction of this process on SQLite (one writer at a
        time there anyway): writers queue here and start the moment the previous one commits,
        instead of in SQLite's busy handler, which polls with sleeps of 1 to 100 ms.
        Writers in other processes still meet ``busy_timeout``."""
        with self._writer:
            yield

    def on_outbox_commit(self, listener: Callable[[], object]) -> Callable[[], None]:
        """Calls ``listener`` (from the committing thread) after every commit of this store
        that wrote outbox rows; returns what removes it."""
        self._outbox_listeners.append(listener)
        return lambda: self._outbox_listeners.remove(listener)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection]:
        """The write transaction in progress in this context, or a new one.

        Operations called inside another's ``transaction()`` join it and commit (or roll
        back) with it: the API runs an operation and records its idempotency key that way."""
        current = self._tx.get()
        if current is not None:
            yield current
            return
        with self.writing(), self.engine.connect() as conn:
            conn.execution_options(**{WRITE: True})
            try:
                with conn.begin():
                    token = self._tx.set(conn)
                    try:
                        yield conn
                    finally:
                        self._tx.reset(token)
            finally:
                written = conn.info.pop(OUTBOX_WRITTEN, False)
        if written:  # committed: wake the dispatchers
            for listener in list(self._outbox_listeners):
                listener()

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Connection]:
        """The transaction in progress (to read its own writes), or a read-only connection."""
        current = self._tx.get()
        if current is not None:
            yield current
            return
        with self.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                # No BEGIN and no ROLLBACK around the reads: two round trips fewer each.
                # Under READ COMMITTED every statement takes its own snapshot anyway.
                conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn

    @staticmethod
    def _find(conn: Connection, table: sa.Table, key: str, *, lock: bool = False) -> RowMapping | None:
        """A row by id; ``lock`` holds it (``FOR UPDATE``) until the transaction ends."""
        query = sa.select(table).where(table.c.id == key)
        return conn.execute(query.with_for_update() if lock else query).mappings().first()

    @classmethod
    def _require(
        cls, conn: Connection, table: sa.Table, key: str, what: str, *, lock: bool = False
    ) -> RowMapping:
        found = cls._find(conn, table, key, lock=lock)
        if found is None:
            raise NotFound(f"{what} {key} not found")
        return found
