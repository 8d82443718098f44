"""The billing database: its tables (:mod:`.tables`) and the versioned migrations that
build them.

``migrate(engine)`` brings any database to the latest version and is safe to run at every
start, from several processes at once. Every database goes the same way: a new one is
created as version 1 (frozen DDL, :mod:`.v1`) and upgraded step by step like an old one,
so what a new database gets is what an upgraded one gets.

Versions:

1. the initial schema (:mod:`.v1`);
2. the constraints several replicas need (:mod:`.v2`);
3. routing policies (:mod:`.v3`).
4. Stripe sync: the webhook inbox and the Stripe ids (:mod:`.v4`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from . import v1, v2, v3, v4
from .tables import *  # noqa: F403  (the tables, re-exported: listed once, in .tables)
from .tables import WRITE, schema_migrations
from .tables import __all__ as _TABLES

__all__ = ["LATEST", "UPGRADES", "migrate", *_TABLES]

UPGRADES: list[tuple[int, Callable[[Connection], None]]] = [
    (2, v2.upgrade),
    (3, v3.upgrade),
    (4, v4.upgrade),
]
"""The steps from version 1 on, applied in order. Append; never edit an applied one."""
LATEST = max(v for v, _ in UPGRADES)


def migrate(engine: Engine) -> int:
    """Brings the database to :data:`LATEST`; returns it."""
    with engine.connect() as conn:
        conn.execution_options(**{WRITE: True})  # SQLite: one migrator at a time
        with conn.begin():
            if conn.dialect.name == "postgresql":  # one migrator at a time, from the first statement
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(74211)"))
            schema_migrations.create(conn, checkfirst=True)
            done = set(conn.execute(sa.select(schema_migrations.c.version)).scalars())
            if not done:
                v1.create(conn)
                done = {1}
                conn.execute(schema_migrations.insert().values(version=1, applied_at=datetime.now(UTC)))
            for version, step in UPGRADES:
                if version not in done:
                    step(conn)
                    conn.execute(
                        schema_migrations.insert().values(version=version, applied_at=datetime.now(UTC))
                    )
    return LATEST
