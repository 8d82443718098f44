"""Plans, each with its product and its price."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from billing_gateway.billing.domain import Conflict, check_amount
from billing_gateway.billing.schema import plans, prices, products

from .base import StoreBase, insert_new, load, new_id
from .records import PlanRow

__all__ = ["Plans"]


class Plans(StoreBase):
    def create_plan(
        self,
        *,
        name: str,
        currency: str,
        included_budget: int,
        price: int,
        interval_days: int = 30,
        product_name: str | None = None,
        plan_id: str | None = None,
        stripe_price_id: str | None = None,
    ) -> PlanRow:
        check_amount("included_budget", included_budget)
        check_amount("price", price)
        now = self.clock()
        product_id, product = new_id("prod"), product_name or name
        plan = PlanRow(
            plan_id or new_id("plan"), product_id, name, currency, interval_days, included_budget, now,
            price, product, stripe_price_id,
        )  # fmt: skip
        with self.transaction() as conn:
            conn.execute(products.insert().values(id=product_id, name=product, created_at=now))
            inserted = insert_new(
                conn, plans, id=plan.id, product_id=product_id, name=name, currency=currency,
                interval_days=interval_days, included_budget=included_budget, created_at=now,
                stripe_price_id=stripe_price_id,
            )  # fmt: skip
            if not inserted:
                raise Conflict(
                    f"plan {plan.id} (or one billed at Stripe price {stripe_price_id}) already exists"
                )
            conn.execute(
                prices.insert().values(id=new_id("price"), plan_id=plan.id, amount=price, created_at=now)
            )
        return plan

    def _plan(self, conn: Connection, plan_id: str) -> PlanRow:
        plan = self._require(conn, plans, plan_id, "plan")
        price = conn.execute(
            sa.select(prices.c.amount).where(prices.c.plan_id == plan_id).order_by(prices.c.created_at.desc())
        ).scalar_one()
        product = self._require(conn, products, plan["product_id"], "product")
        return load(PlanRow, plan, price=price, product_name=product["name"])

    def list_plans(self) -> list[PlanRow]:
        with self._reading() as conn:
            ids = conn.execute(sa.select(plans.c.id).order_by(plans.c.id)).scalars().all()
            return [self._plan(conn, i) for i in ids]

    def get_plan(self, plan_id: str) -> PlanRow:
        with self._reading() as conn:
            return self._plan(conn, plan_id)
