"""Version 3: routing policies, the rules billing manages and every gateway follows through
``routing_policy.upserted`` / ``routing_policy.deleted`` events. A deleted policy stays as a
tombstone (``deleted_at``), so that the next event about its id is always later than the
delete. Frozen explicit DDL, like :mod:`.v1`: the current tables may change later."""

from __future__ import annotations

from sqlalchemy.engine import Connection

__all__ = ["upgrade"]

_TS = {"sqlite": "DATETIME", "postgresql": "TIMESTAMP WITH TIME ZONE"}

_DDL = """
CREATE TABLE routing_policies (
    id VARCHAR(64) NOT NULL,
    priority BIGINT NOT NULL,
    match_expression TEXT NOT NULL,
    strategy VARCHAR(16) NOT NULL,
    targets TEXT NOT NULL,
    created_at {ts} NOT NULL,
    updated_at {ts} NOT NULL,
    deleted_at {ts},
    PRIMARY KEY (id)
)
"""


def upgrade(conn: Connection) -> None:
    conn.exec_driver_sql(_DDL.format(ts=_TS[conn.dialect.name]))
