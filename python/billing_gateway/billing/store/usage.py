"""Metered usage, recorded once per idempotency key of its subscription."""

from __future__ import annotations

from datetime import datetime

import msgspec
import sqlalchemy as sa

from billing_gateway.billing.domain import Conflict, check_amount, check_key
from billing_gateway.billing.schema import subscriptions, usage_records

from .base import StoreBase, insert_new, load, new_id, utc
from .records import UsageRow

__all__ = ["Usage"]


class Usage(StoreBase):
    def record_usage(
        self, subscription_id: str, amount: int, idempotency_key: str, period_start: datetime | None = None
    ) -> tuple[UsageRow, bool]:
        """Records metered spend once per ``idempotency_key`` of the subscription:
        ``(record, created)``. Keys are scoped to their subscription, so one customer's keys
        never collide with (or reveal) another's.

        Usage of a canceled subscription is still recorded: it was spent before the cancellation."""
        check_amount("amount", amount)
        check_key("idempotency_key", idempotency_key)
        usage = usage_records
        with self.transaction() as conn:
            sub = self._require(conn, subscriptions, subscription_id, "subscription")
            record = UsageRow(
                id=new_id("ur"),
                subscription_id=subscription_id,
                customer_id=sub["customer_id"],
                amount=amount,
                period_start=period_start or utc(sub["period_start"]),
                idempotency_key=idempotency_key,
                created_at=self.clock(),
            )
            if insert_new(conn, usage, **msgspec.structs.asdict(record)):
                return record, True
            same_key = (usage.c.subscription_id == subscription_id) & (
                usage.c.idempotency_key == idempotency_key
            )
            existing = conn.execute(sa.select(usage).where(same_key)).mappings().one()  # the key conflicted
            if existing["amount"] != amount:
                raise Conflict(f"idempotency key {idempotency_key!r} was used for different usage")
            return load(UsageRow, existing), False

    def get_usage_record(self, record_id: str) -> UsageRow | None:
        with self._reading() as conn:
            found = self._find(conn, usage_records, record_id)
        return None if found is None else load(UsageRow, found)
