"""Routing policies: billing's copy of the rules every gateway follows.

A policy is checked by the gateway's own compiler before anything is written (billing never
commits a policy a gateway would refuse), and each change writes its
``routing_policy.upserted`` / ``routing_policy.deleted`` event in its transaction. A delete
keeps a tombstone. The events about one policy carry strictly increasing timestamps (the
row is locked, and each timestamp is at least a microsecond after the previous one), so a
gateway's last-writer-wins by timestamp agrees with the order billing committed them in,
whatever the clocks of several billing replicas say.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from billing_gateway import Gateway, InvalidPolicy, RoutingPolicy, Target, events
from billing_gateway.billing.domain import Conflict, Invalid, NotFound, check_amount
from billing_gateway.billing.schema import routing_policies

from .base import insert_new, utc
from .outbox import Outbox, envelope, state_envelope
from .records import RoutingPolicyRow

__all__ = ["MAX_EXPRESSION", "RoutingPolicies", "compile_policy"]

MAX_EXPRESSION = 4096
"""The longest ``match_expression`` a gateway takes, in bytes of UTF-8."""
_TICK = timedelta(microseconds=1)
_targets = msgspec.json.Decoder(tuple[Target, ...])
_FIELD = re.compile(r"[a-z_]+(\[\d+\])?(\.[a-z_]+)?")


def compile_policy(policy: RoutingPolicy) -> None:
    """Compiles ``policy`` as a gateway does; :class:`Invalid` naming the problem (and where
    in the expression it is) when a gateway would refuse it."""
    if len(policy.match_expression.encode("utf-8", "surrogatepass")) > MAX_EXPRESSION:
        raise Invalid(f"match_expression: longer than {MAX_EXPRESSION} bytes", field="match_expression")
    try:
        Gateway().set_policies([policy])
    except InvalidPolicy as exc:
        where = "" if exc.position is None else f" (at position {exc.position} of match_expression)"
        field = exc.problem.partition(":")[0]  # the compiler's problems start with their field
        raise Invalid(
            f"routing policy {policy.id}: {exc.problem}{where}",
            field=field if _FIELD.fullmatch(field) else "policy",
            position=exc.position,
        ) from None
    for i, target in enumerate(policy.targets):
        check_amount(f"targets[{i}].cost", target.cost)


def _row(found: RowMapping) -> RoutingPolicyRow:
    deleted = found["deleted_at"]
    policy = RoutingPolicy(
        found["id"], found["priority"], found["match_expression"], found["strategy"],
        _targets.decode(found["targets"]),
    )  # fmt: skip
    return RoutingPolicyRow(
        policy=policy,
        created_at=utc(found["created_at"]),
        updated_at=utc(found["updated_at"]),
        deleted_at=None if deleted is None else utc(deleted),
    )


class RoutingPolicies(Outbox):
    def _next_time(self, found: RowMapping | None) -> datetime:
        """Now, or just after the policy's last event if the clock says otherwise."""
        now = self.clock()
        return now if found is None else max(now, utc(found["updated_at"]) + _TICK)

    def put_routing_policy(
        self, policy: RoutingPolicy, *, replace: bool, correlation_id: str | None = None
    ) -> tuple[RoutingPolicyRow, bool]:
        """Creates ``policy`` or, with ``replace``, replaces the one with its id:
        ``(row, created)``. Without ``replace`` an existing policy is a :class:`Conflict`; a
        deleted one may be created again."""
        compile_policy(policy)
        table = routing_policies
        targets = msgspec.json.encode(policy.targets).decode()
        with self.transaction() as conn:
            found = self._find(conn, table, policy.id, lock=True)
            if found is None:
                at = self._next_time(None)
                fields = {"priority": policy.priority, "match_expression": policy.match_expression,
                          "strategy": policy.strategy, "targets": targets}  # fmt: skip
                if insert_new(conn, table, id=policy.id, created_at=at, updated_at=at, **fields):
                    return self._upserted(conn, policy, at, correlation_id), True
                found = self._find(conn, table, policy.id, lock=True)  # a concurrent create won
                assert found is not None
            live = found["deleted_at"] is None
            if live and not replace:
                raise Conflict(f"routing policy {policy.id} already exists")
            at = self._next_time(found)
            conn.execute(
                table.update()
                .where(table.c.id == policy.id)
                .values(
                    priority=policy.priority, match_expression=policy.match_expression,
                    strategy=policy.strategy, targets=targets, updated_at=at, deleted_at=None,
                    created_at=found["created_at"] if live else at,
                )
            )  # fmt: skip
            return self._upserted(conn, policy, at, correlation_id), not live

    def _upserted(
        self, conn: Connection, policy: RoutingPolicy, at: datetime, correlation_id: str | None
    ) -> RoutingPolicyRow:
        event = events.RoutingPolicyUpserted(data=policy, **envelope(at, None, correlation_id))
        self._emit(conn, event, None)
        return _row(self._require(conn, routing_policies, policy.id, "routing policy"))

    def delete_routing_policy(self, policy_id: str, correlation_id: str | None = None) -> RoutingPolicyRow:
        """Deletes a policy (it stays as a tombstone); :class:`NotFound` if there is none."""
        table = routing_policies
        with self.transaction() as conn:
            found = self._find(conn, table, policy_id, lock=True)
            if found is None or found["deleted_at"] is not None:
                raise NotFound(f"routing policy {policy_id} not found")
            at = self._next_time(found)
            conn.execute(table.update().where(table.c.id == policy_id).values(updated_at=at, deleted_at=at))
            event = events.RoutingPolicyDeleted(
                data=events.RoutingPolicyDeletedData(policy_id), **envelope(at, None, correlation_id)
            )
            self._emit(conn, event, None)
            return _row(self._require(conn, table, policy_id, "routing policy"))

    def get_routing_policy(self, policy_id: str) -> RoutingPolicyRow | None:
        """The policy, unless there is none or it was deleted."""
        with self._reading() as conn:
            found = self._find(conn, routing_policies, policy_id)
        return None if found is None or found["deleted_at"] is not None else _row(found)

    def _policy_rows(self, *, deleted: bool) -> Iterator[RoutingPolicyRow]:
        table = routing_policies
        query = sa.select(table).order_by(table.c.priority, table.c.id)
        if not deleted:
            query = query.where(table.c.deleted_at.is_(None))
        with self._reading() as conn:
            rows = conn.execute(query).mappings().all()
        return (_row(r) for r in rows)

    def list_routing_policies(self) -> list[RoutingPolicyRow]:
        """Every policy, in the order a gateway tries them (ascending priority, then id)."""
        return list(self._policy_rows(deleted=False))

    def routing_events(self) -> list[bytes]:
        """Every policy and tombstone as the event that made it (same timestamp; a state id):
        what a gateway applies to bring its routing table up to date after a gap."""
        out = []
        for row in self._policy_rows(deleted=True):
            env = state_envelope(row.policy.id, row.updated_at, None)
            event: events.Event = (
                events.RoutingPolicyUpserted(data=row.policy, **env)
                if row.deleted_at is None
                else events.RoutingPolicyDeleted(data=events.RoutingPolicyDeletedData(row.policy.id), **env)
            )
            out.append(events.encode_event(event))
        return out
