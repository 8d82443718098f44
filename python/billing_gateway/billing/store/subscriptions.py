"""Subscriptions: created, changed (plan, budget, status) under lock, and their current
state as the events a gateway rebuilds its table from."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from billing_gateway import events
from billing_gateway.billing.domain import Invalid, check_amount, require_live, require_transition
from billing_gateway.billing.schema import customers, subscriptions
from billing_gateway.errors import InvalidEvent
from billing_gateway.money import from_micros

from .base import load, new_id
from .outbox import Envelope, Outbox, envelope, state_envelope
from .plans import Plans
from .records import PlanRow, SubscriptionRow

__all__ = ["Subscriptions"]

log = logging.getLogger(__name__)


def _created(sub: SubscriptionRow, plan: PlanRow, env: Envelope) -> events.SubscriptionCreated:
    return events.SubscriptionCreated(
        data=events.SubscriptionCreatedData(
            subscription_id=sub.id,
            customer_id=sub.customer_id,
            plan_id=plan.id,
            plan_name=plan.name,
            total_budget=from_micros(sub.total_budget),
            currency=plan.currency,
            period_start=sub.period_start,
            period_end=sub.period_end,
            status=sub.status,
        ),
        **env,
    )


class Subscriptions(Plans, Outbox):
    def create_subscription(
        self,
        customer_id: str,
        plan_id: str,
        *,
        total_budget: int | None = None,
        trial_days: int = 0,
        correlation_id: str | None = None,
    ) -> SubscriptionRow:
        if total_budget is not None:
            check_amount("total_budget", total_budget)
        now = self.clock()
        with self.transaction() as conn:
            self._require(conn, customers, customer_id, "customer")
            plan = self._plan(conn, plan_id)
            sub = SubscriptionRow(
                id=new_id("sub"),
                customer_id=customer_id,
                plan_id=plan_id,
                status="trialing" if trial_days > 0 else "active",
                total_budget=plan.included_budget if total_budget is None else total_budget,
                period_start=now,
                period_end=now + timedelta(days=trial_days or plan.interval_days),
                created_at=now,
                updated_at=now,
            )
            conn.execute(subscriptions.insert().values(**msgspec.structs.asdict(sub)))
            self._emit(conn, _created(sub, plan, envelope(now, customer_id, correlation_id)), customer_id)
        return sub

    def get_subscription(self, subscription_id: str) -> SubscriptionRow | None:
        with self._reading() as conn:
            found = self._find(conn, subscriptions, subscription_id)
        return None if found is None else load(SubscriptionRow, found)

    def _subscription(self, conn: Connection, subscription_id: str, *, lock: bool = False) -> SubscriptionRow:
        return load(
            SubscriptionRow, self._require(conn, subscriptions, subscription_id, "subscription", lock=lock)
        )

    def update_subscription(
        self,
        subscription_id: str,
        *,
        plan_id: str | None = None,
        total_budget: int | None = None,
        status: str | None = None,
        correlation_id: str | None = None,
    ) -> SubscriptionRow:
        """Plan change, budget change, or status change (cancel: ``status="canceled"``).

        A canceled subscription refuses every change (:class:`Conflict`), and emits nothing."""
        if total_budget is not None:
            check_amount("total_budget", total_budget)
        with self.transaction() as conn:
            sub = self._subscription(conn, subscription_id, lock=True)
            require_live(subscription_id, sub.status)
            changes: dict[str, Any] = {}
            data: dict[str, Any] = {"subscription_id": subscription_id, "customer_id": sub.customer_id}
            if plan_id is not None and plan_id != sub.plan_id:
                plan = self._plan(conn, plan_id)
                if plan.currency != self._plan(conn, sub.plan_id).currency:
                    raise Invalid(f"plan {plan_id} is in {plan.currency}, not the subscription's currency")
                changes["plan_id"] = plan_id
                data |= {"new_plan_id": plan_id, "new_plan_name": plan.name}
                if total_budget is None:
                    total_budget = plan.included_budget
            if total_budget is not None and total_budget != sub.total_budget:
                changes["total_budget"] = total_budget
                data["new_total_budget"] = from_micros(total_budget)
            if status is not None and status != sub.status:
                require_transition(subscription_id, sub.status, status)
                changes["status"] = status
                data["status"] = status
            if not changes:
                return sub
            return self._change_subscription(conn, sub, changes, data, correlation_id)

    def _change_subscription(
        self,
        conn: Connection,
        sub: SubscriptionRow,
        changes: dict[str, Any],
        data: dict[str, Any],
        correlation_id: str | None,
        causation_id: str | None = None,
    ) -> SubscriptionRow:
        """Applies ``changes`` to a subscription held under lock and emits ``subscription.updated``."""
        now = self.clock()
        changes = {**changes, "updated_at": now}
        conn.execute(subscriptions.update().where(subscriptions.c.id == sub.id).values(**changes))
        event = events.SubscriptionUpdated(
            data=events.SubscriptionUpdatedData(**data),
            **envelope(now, sub.customer_id, correlation_id, causation_id),
        )
        self._emit(conn, event, sub.customer_id)
        return msgspec.structs.replace(sub, **changes)

    @staticmethod
    def _move_period(
        conn: Connection, sub: SubscriptionRow, start: datetime, end: datetime, now: datetime
    ) -> None:
        """Opens a subscription's next period (its event is the caller's)."""
        conn.execute(
            subscriptions.update()
            .where(subscriptions.c.id == sub.id)
            .values(period_start=start, period_end=end, updated_at=now)
        )

    def budget_events(self, customer_id: str | None = None) -> list[bytes]:
        """Each customer's current subscription (the one created last) as a
        ``subscription.created`` event carrying its current plan, budget, status and period:
        what a gateway applies to rebuild its table after a gap.

        A canceled current subscription is included (``status: "canceled"``), so a rebuilt
        gateway refuses that tenant; an older subscription never is, since its later timestamp
        would switch the gateway's row back to it."""
        subs = subscriptions
        newest_first = (subs.c.created_at.desc(), subs.c.id.desc())
        ranked = sa.select(
            subs.c.id,
            subs.c.customer_id,
            sa.func.row_number().over(partition_by=subs.c.customer_id, order_by=newest_first).label("rank"),
        )
        if customer_id is not None:
            ranked = ranked.where(subs.c.customer_id == customer_id)
        current = ranked.subquery()
        query = sa.select(current.c.id).where(current.c.rank == 1).order_by(current.c.customer_id)
        out = []
        with self._reading() as conn:
            for sub_id in conn.execute(query).scalars().all():
                sub = self._subscription(conn, sub_id)
                plan = self._plan(conn, sub.plan_id)
                env = state_envelope(sub_id, sub.updated_at, sub.customer_id)
                try:
                    out.append(events.encode_event(_created(sub, plan, env)))
                except InvalidEvent as exc:  # a row stored before the bounds: no gateway could apply it
                    log.error("subscription %s left out of the budget state: %s", sub_id, exc)
        return out
