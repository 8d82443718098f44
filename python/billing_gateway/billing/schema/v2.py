"""Version 2: the constraints several replicas need: one settled payment per invoice (a
second one recorded by the race this closes is kept, as ``duplicate``, for a refund), and
usage idempotency keys unique per subscription instead of across all customers."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .tables import payments, usage_records

__all__ = ["upgrade"]


def _payments(conn: Connection) -> None:
    column = sa.schema.CreateColumn(payments.c.status).compile(dialect=conn.dialect)
    conn.execute(sa.text(f"ALTER TABLE payments ADD COLUMN {column}"))
    earlier = payments.alias("earlier")
    conn.execute(
        payments.update()
        .where(
            sa.exists().where(
                earlier.c.invoice_id == payments.c.invoice_id,
                sa.tuple_(earlier.c.created_at, earlier.c.id)
                < sa.tuple_(payments.c.created_at, payments.c.id),
            )
        )
        .values(status="duplicate")
    )
    next(i for i in payments.indexes if i.name == "uq_payment_per_invoice").create(conn)


def _usage_keys(conn: Connection) -> None:
    usage = usage_records
    if conn.dialect.name == "postgresql":
        for old in sa.inspect(conn).get_unique_constraints("usage_records"):
            if old["column_names"] == ["idempotency_key"]:
                conn.execute(sa.text(f'ALTER TABLE usage_records DROP CONSTRAINT "{old["name"]}"'))
        new = next(c for c in usage.constraints if c.name == "uq_usage_key")
        # isolate_from_table=False: keep it in the table's own CREATE TABLE (the SQLite rebuild).
        conn.execute(sa.schema.AddConstraint(new, isolate_from_table=False))
        return
    # SQLite cannot drop a constraint: rebuild the table.
    conn.execute(sa.text("ALTER TABLE usage_records RENAME TO usage_records_v1"))
    for index in sa.inspect(conn).get_indexes("usage_records_v1"):
        conn.execute(sa.text(f'DROP INDEX "{index["name"]}"'))
    usage.create(conn)
    columns = ", ".join(c.name for c in usage.columns)
    conn.execute(sa.text(f"INSERT INTO usage_records ({columns}) SELECT {columns} FROM usage_records_v1"))
    conn.execute(sa.text("DROP TABLE usage_records_v1"))


def upgrade(conn: Connection) -> None:
    _payments(conn)
    _usage_keys(conn)
