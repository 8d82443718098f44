"""Idempotency keys: a request runs at most once per (API key, ``Idempotency-Key``).

The key is claimed, the operation runs and its answer is recorded in **one** transaction
— the same one that writes the domain change and its outbox event — so a crash at any
point leaves either all of it or none of it, and a retry after a crash runs the operation
exactly once. The claim is a row under a unique key: on PostgreSQL a concurrent request
with the same key waits at its claim until the first one commits (then replays its
answer) or rolls back (then runs); on SQLite writers are serialized anyway.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from billing_gateway.settings import env

from .domain import Conflict
from .schema import tables
from .store import BillingStore, insert_new

__all__ = ["Answer", "Claim", "run_once"]

T = tables["idempotency_keys"]


@dataclass(frozen=True)
class Claim:
    api_key_id: str
    key: str
    request_hash: str
    """What the request asked for: the same key with another request is a :class:`Conflict`."""


@dataclass(frozen=True)
class Answer:
    status_code: int
    body: bytes


def run_once(store: BillingStore, claim: Claim, status_code: int, work: Callable[[], bytes]) -> Answer:
    """``work()``'s answer, run in this transaction if the key is new, else the recorded one."""
    where = (T.c.api_key_id == claim.api_key_id) & (T.c.key == claim.key)
    with store.transaction() as conn:
        claimed = insert_new(
            conn, T, api_key_id=claim.api_key_id, key=claim.key, request_hash=claim.request_hash,
            status_code=0, response=b"", created_at=store.clock(),
        )  # fmt: skip
        if not claimed:
            seen = conn.execute(sa.select(T).where(where)).mappings().one()
            if seen["request_hash"] != claim.request_hash:
                raise Conflict(f"Idempotency-Key {claim.key!r} was used with another request")
            return Answer(seen["status_code"], bytes(seen["response"]))
        body = work()
        _pause_here_in_tests("idempotency")
        conn.execute(T.update().where(where).values(status_code=status_code, response=body))
        return Answer(status_code, body)


_PAUSE_AT = env("TEST_PAUSE_AT")


def _pause_here_in_tests(point: str) -> None:
    """Test-only: with ``BILLING_GATEWAY_TEST_PAUSE_AT=<point>`` the process stops here for
    good, saying so on stderr, so that a test can ``kill -9`` it at exactly this point."""
    if point == _PAUSE_AT:
        print(f"paused at {point}", file=sys.stderr, flush=True)
        time.sleep(3600)
