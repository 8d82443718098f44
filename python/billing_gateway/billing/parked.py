"""Rows that wait in a table by status until they are done, and go ``dead`` after too many
failures: the outbox (``billing_events``) and the Stripe inbox (``stripe_events``).
Listed, counted, and redriven (dead rows back to ``pending``) the same way."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa

from .store import BillingStore, Conflict, NotFound

__all__ = ["count_rows", "list_rows", "redrive"]

R = TypeVar("R")


def list_rows(
    store: BillingStore,
    columns: Sequence[sa.Column[Any]],
    make: Callable[..., R],
    status: str | None,
    limit: int,
) -> list[R]:
    """The first ``limit`` rows (of ``status``, or all), oldest (by the first column) first."""
    query = sa.select(*columns)
    if status is not None:
        query = query.where(columns[0].table.c.status == status)
    with store.engine.connect() as conn:
        return [make(*row) for row in conn.execute(query.order_by(columns[0]).limit(limit))]


def count_rows(store: BillingStore, table: sa.Table, status: str | None = None) -> int:
    query = sa.select(sa.func.count()).select_from(table)
    if status is not None:
        query = query.where(table.c.status == status)
    with store.engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def redrive(
    store: BillingStore,
    key: sa.Column[Any],
    keys: Sequence[Any] | None,
    names: tuple[str, str],
    **values: Any,
) -> int:
    """Dead rows back to ``pending`` with ``values``: every dead row when ``keys`` is None,
    else exactly those. An unknown key is :class:`NotFound`, a row that is not dead
    :class:`Conflict`; nothing changes then. ``names``: what a row is, what its key is
    (``("outbox row with seq", "seq ")``)."""
    what, label = names
    table = key.table
    back = table.update().values(status="pending", **values)
    with store.transaction() as conn:
        if keys is None:
            return int(conn.execute(back.where(table.c.status == "dead")).rowcount)
        wanted = sorted(set(keys))
        found = dict(
            conn.execute(sa.select(key, table.c.status).where(key.in_(wanted)).with_for_update()).all()
        )
        unknown = [str(k) for k in wanted if k not in found]
        if unknown:
            raise NotFound(f"no {what} {', '.join(unknown)}")
        alive = [f"{label}{k} is {found[k]}" for k in wanted if found[k] != "dead"]
        if alive:
            raise Conflict(f"only dead rows can be redriven: {', '.join(alive)}")
        return int(conn.execute(back.where(key.in_(wanted), table.c.status == "dead")).rowcount)
