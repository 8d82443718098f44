"""The billing source of truth: domain operations over SQLite or PostgreSQL.

Every state change runs in one database transaction that also writes its event to the
``billing_events`` outbox, in the envelope of ``billing_gateway.events``, so an event is
published if and only if its change was committed.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RowMapping

from billing_gateway import events
from billing_gateway.money import from_micros

from .schema import migrate, tables

__all__ = [
    "ACTIVE_STATUSES",
    "TRANSITIONS",
    "BillingError",
    "BillingStore",
    "Conflict",
    "Invalid",
    "NotFound",
    "Principal",
]

T = tables
ACTIVE_STATUSES = ("trialing", "active", "past_due")
TRANSITIONS: dict[str, frozenset[str]] = {
    "trialing": frozenset({"active", "past_due", "canceled"}),
    "active": frozenset({"past_due", "canceled"}),
    "past_due": frozenset({"active", "canceled"}),
    "canceled": frozenset(),
}
"""Allowed subscription status changes."""


class BillingError(Exception):
    status_code = 400


class NotFound(BillingError):
    status_code = 404


class Conflict(BillingError):
    status_code = 409


class Invalid(BillingError):
    status_code = 422


@dataclass(frozen=True)
class Principal:
    """The caller behind an API key: its scopes, and the one customer it is bound to, if any."""

    key_id: str
    scopes: frozenset[str]
    customer_id: str | None = None


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def utc(value: datetime) -> datetime:
    """SQLite returns naive datetimes; every time in this database is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _row(row: RowMapping | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {k: utc(v) if isinstance(v, datetime) else v for k, v in row.items()}


class BillingStore:
    def __init__(self, engine: Engine, clock: Callable[[], datetime] | None = None) -> None:
        self.engine = engine
        self.clock = clock or (lambda: datetime.now(UTC))

    @classmethod
    def open(cls, url: str, **options: Any) -> BillingStore:
        """A store on ``url`` (a SQLite path or URL, or a PostgreSQL URL), migrated."""
        if "://" not in url:
            url = f"sqlite:///{url}"
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
        engine = sa.create_engine(url, **options)
        if engine.dialect.name == "sqlite":

            @sa.event.listens_for(engine, "connect")
            def _pragmas(dbapi_conn: Any, _: Any) -> None:
                cursor = dbapi_conn.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA foreign_keys=ON")
                cursor.execute("PRAGMA busy_timeout=10000")
                cursor.close()

        migrate(engine)
        return cls(engine)

    # ---- outbox -------------------------------------------------------------------------

    def _emit(
        self,
        conn: Connection,
        event: events.Event | events.UnknownEvent,
        customer_id: str | None,
    ) -> None:
        now = self.clock()
        conn.execute(
            T["billing_events"]
            .insert()
            .values(
                event_id=event.event_id,
                event_type=event.event_type,
                customer_id=customer_id,
                payload=events.encode_event(event),
                status="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
        )

    def _envelope(
        self, customer_id: str | None, correlation_id: str | None, causation_id: str | None = None
    ) -> dict[str, Any]:
        return {
            "event_id": new_id("evt"),
            "timestamp": self.clock(),
            "tenant_id": customer_id,
            "correlation_id": correlation_id,
            "causation_id": causation_id,
        }

    # ---- API keys -----------------------------------------------------------------------

    def create_api_key(self, scopes: list[str], customer_id: str | None = None) -> tuple[str, str]:
        """A new key: ``(key_id, secret)``. Only the secret's hash is stored."""
        key_id = new_id("key")
        secret = f"bgk_{secrets.token_urlsafe(32)}"
        with self.engine.begin() as conn:
            if customer_id is not None and self._get(conn, "customers", customer_id) is None:
                raise NotFound(f"customer {customer_id} not found")
            conn.execute(
                T["api_keys"]
                .insert()
                .values(
                    id=key_id,
                    key_hash=_hash_key(secret),
                    scopes=" ".join(sorted(set(scopes))),
                    customer_id=customer_id,
                    created_at=self.clock(),
                )
            )
        return key_id, secret

    def authenticate(self, secret: str) -> Principal | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(sa.select(T["api_keys"]).where(T["api_keys"].c.key_hash == _hash_key(secret)))
                .mappings()
                .first()
            )
        if row is None:
            return None
        return Principal(row["id"], frozenset(row["scopes"].split()), row["customer_id"])

    # ---- reading --------------------------------------------------------------------------

    def _get(self, conn: Connection, table: str, key: str) -> dict[str, Any] | None:
        t = T[table]
        return _row(conn.execute(sa.select(t).where(t.c.id == key)).mappings().first())

    def get(self, table: str, key: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            return self._get(conn, table, key)

    def _require(self, conn: Connection, table: str, key: str, what: str) -> dict[str, Any]:
        found = self._get(conn, table, key)
        if found is None:
            raise NotFound(f"{what} {key} not found")
        return found

    # ---- customers ------------------------------------------------------------------------

    def create_customer(
        self, name: str, email: str, stripe_customer_id: str | None = None, correlation_id: str | None = None
    ) -> dict[str, Any]:
        customer_id = new_id("cus")
        customer: dict[str, Any] = {
            "id": customer_id,
            "name": name,
            "email": email,
            "stripe_customer_id": stripe_customer_id,
            "created_at": self.clock(),
        }
        with self.engine.begin() as conn:
            conn.execute(T["customers"].insert().values(**customer))
            data = {k: v for k, v in customer.items() if k != "created_at"}
            event = events.UnknownEvent(
                event_type="customer.created", data=data, **self._envelope(customer_id, correlation_id)
            )
            self._emit(conn, event, customer_id)
        return customer

    # ---- plans ------------------------------------------------------------------------------

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
    ) -> dict[str, Any]:
        now = self.clock()
        product = {"id": new_id("prod"), "name": product_name or name, "created_at": now}
        plan_id = plan_id or new_id("plan")
        plan: dict[str, Any] = {
            "id": plan_id,
            "product_id": product["id"],
            "name": name,
            "currency": currency,
            "interval_days": interval_days,
            "included_budget": included_budget,
            "created_at": now,
        }
        with self.engine.begin() as conn:
            if self._get(conn, "plans", plan_id) is not None:
                raise Conflict(f"plan {plan_id} already exists")
            conn.execute(T["products"].insert().values(**product))
            conn.execute(T["plans"].insert().values(**plan))
            conn.execute(
                T["prices"]
                .insert()
                .values(id=new_id("price"), plan_id=plan["id"], amount=price, created_at=now)
            )
        return {**plan, "price": price, "product_name": product["name"]}

    def _plan(self, conn: Connection, plan_id: str) -> dict[str, Any]:
        plan = self._require(conn, "plans", plan_id, "plan")
        price = conn.execute(
            sa.select(T["prices"].c.amount)
            .where(T["prices"].c.plan_id == plan_id)
            .order_by(T["prices"].c.created_at.desc())
        ).scalar_one()
        product = self._require(conn, "products", plan["product_id"], "product")
        return {**plan, "price": price, "product_name": product["name"]}

    def list_plans(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            ids = conn.execute(sa.select(T["plans"].c.id).order_by(T["plans"].c.id)).scalars().all()
            return [self._plan(conn, i) for i in ids]

    def get_plan(self, plan_id: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            return self._plan(conn, plan_id)

    # ---- subscriptions ----------------------------------------------------------------------

    def _subscription_created(
        self, conn: Connection, sub: dict[str, Any], plan: dict[str, Any], **env: Any
    ) -> events.SubscriptionCreated:
        return events.SubscriptionCreated(
            data=events.SubscriptionCreatedData(
                subscription_id=sub["id"],
                customer_id=sub["customer_id"],
                plan_id=plan["id"],
                plan_name=plan["name"],
                total_budget=from_micros(sub["total_budget"]),
                currency=plan["currency"],
                period_start=sub["period_start"],
                period_end=sub["period_end"],
                status=sub["status"],
            ),
            **env,
        )

    def create_subscription(
        self,
        customer_id: str,
        plan_id: str,
        *,
        total_budget: int | None = None,
        trial_days: int = 0,
        correlation_id: str | None = None,
    ) -> dict[str, Any]:
        now = self.clock()
        with self.engine.begin() as conn:
            self._require(conn, "customers", customer_id, "customer")
            plan = self._plan(conn, plan_id)
            sub = {
                "id": new_id("sub"),
                "customer_id": customer_id,
                "plan_id": plan_id,
                "status": "trialing" if trial_days > 0 else "active",
                "total_budget": plan["included_budget"] if total_budget is None else total_budget,
                "period_start": now,
                "period_end": now + timedelta(days=trial_days or plan["interval_days"]),
                "created_at": now,
                "updated_at": now,
            }
            conn.execute(T["subscriptions"].insert().values(**sub))
            self._emit(
                conn,
                self._subscription_created(conn, sub, plan, **self._envelope(customer_id, correlation_id)),
                customer_id,
            )
        return sub

    def update_subscription(
        self,
        subscription_id: str,
        *,
        plan_id: str | None = None,
        total_budget: int | None = None,
        status: str | None = None,
        correlation_id: str | None = None,
    ) -> dict[str, Any]:
        """Plan change, budget change, or status change (cancel: ``status="canceled"``)."""
        with self.engine.begin() as conn:
            sub = self._require(conn, "subscriptions", subscription_id, "subscription")
            if sub["status"] == "canceled":
                raise Conflict(f"subscription {subscription_id} is canceled")
            changes: dict[str, Any] = {}
            data: dict[str, Any] = {"subscription_id": subscription_id, "customer_id": sub["customer_id"]}
            if plan_id is not None and plan_id != sub["plan_id"]:
                plan = self._plan(conn, plan_id)
                if plan["currency"] != self._plan(conn, sub["plan_id"])["currency"]:
                    raise Invalid(f"plan {plan_id} is in {plan['currency']}, not the subscription's currency")
                changes["plan_id"] = plan_id
                data |= {"new_plan_id": plan_id, "new_plan_name": plan["name"]}
                if total_budget is None:
                    total_budget = plan["included_budget"]
            if total_budget is not None and total_budget != sub["total_budget"]:
                changes["total_budget"] = total_budget
                data["new_total_budget"] = from_micros(total_budget)
            if status is not None and status != sub["status"]:
                if status not in TRANSITIONS[sub["status"]]:
                    raise Conflict(
                        f"subscription {subscription_id} cannot go from {sub['status']} to {status}"
                    )
                changes["status"] = status
                data["status"] = status
            if not changes:
                return sub
            changes["updated_at"] = self.clock()
            conn.execute(
                T["subscriptions"]
                .update()
                .where(T["subscriptions"].c.id == subscription_id)
                .values(**changes)
            )
            event = events.SubscriptionUpdated(
                data=events.SubscriptionUpdatedData(**data),
                **self._envelope(sub["customer_id"], correlation_id),
            )
            self._emit(conn, event, sub["customer_id"])
            return {**sub, **changes}

    # ---- usage --------------------------------------------------------------------------------

    def record_usage(
        self, subscription_id: str, amount: int, idempotency_key: str, period_start: datetime | None = None
    ) -> tuple[dict[str, Any], bool]:
        """Records metered spend once per ``idempotency_key``: ``(record, created)``."""
        if amount < 0:
            raise Invalid("amount must not be negative")
        with self.engine.begin() as conn:
            usage = T["usage_records"]
            existing = _row(
                conn.execute(sa.select(usage).where(usage.c.idempotency_key == idempotency_key))
                .mappings()
                .first()
            )
            if existing is not None:
                if existing["subscription_id"] != subscription_id or existing["amount"] != amount:
                    raise Conflict(f"idempotency key {idempotency_key!r} was used for different usage")
                return existing, False
            sub = self._require(conn, "subscriptions", subscription_id, "subscription")
            record = {
                "id": new_id("ur"),
                "subscription_id": subscription_id,
                "customer_id": sub["customer_id"],
                "amount": amount,
                "period_start": period_start or sub["period_start"],
                "idempotency_key": idempotency_key,
                "created_at": self.clock(),
            }
            conn.execute(usage.insert().values(**record))
            return record, True

    # ---- invoices -----------------------------------------------------------------------------

    def list_invoices(self, customer_id: str | None = None) -> list[dict[str, Any]]:
        inv = T["invoices"]
        query = sa.select(inv).order_by(inv.c.created_at, inv.c.id)
        if customer_id is not None:
            query = query.where(inv.c.customer_id == customer_id)
        with self.engine.connect() as conn:
            return [self._invoice(conn, r) for r in conn.execute(query).mappings()]

    def _invoice(self, conn: Connection, row: RowMapping | dict[str, Any]) -> dict[str, Any]:
        invoice = _row(row)  # type: ignore[arg-type]
        assert invoice is not None
        lines = T["invoice_lines"]
        invoice["lines"] = [
            dict(r)
            for r in conn.execute(
                sa.select(lines.c.kind, lines.c.description, lines.c.amount)
                .where(lines.c.invoice_id == invoice["id"])
                .order_by(lines.c.id)
            ).mappings()
        ]
        return invoice

    def get_invoice(self, invoice_id: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            return self._invoice(conn, self._require(conn, "invoices", invoice_id, "invoice"))

    def close_due_cycles(self, *, auto_pay: bool = True, now: datetime | None = None) -> list[dict[str, Any]]:
        """Invoices every live subscription whose period has ended: the plan price plus usage
        beyond the included budget. With ``auto_pay`` the invoice is paid at once, which opens
        the next period (``invoice.paid``); otherwise it stays open for ``pay_invoice``."""
        now = now or self.clock()
        subs = T["subscriptions"]
        with self.engine.connect() as conn:
            due = (
                conn.execute(
                    sa.select(subs.c.id).where(subs.c.status.in_(ACTIVE_STATUSES), subs.c.period_end <= now)
                )
                .scalars()
                .all()
            )
        closed = []
        for sub_id in due:
            invoice = self._invoice_period(sub_id, now)
            if invoice is not None:
                if auto_pay:
                    invoice = self.pay_invoice(
                        invoice["id"], correlation_id=f"cycle:{sub_id}", causation_id=invoice["event_id"]
                    )
                closed.append(invoice)
        return closed

    def _invoice_period(self, subscription_id: str, now: datetime) -> dict[str, Any] | None:
        with self.engine.begin() as conn:
            sub = self._require(conn, "subscriptions", subscription_id, "subscription")
            if sub["period_end"] > now or sub["status"] not in ACTIVE_STATUSES:
                return None
            inv = T["invoices"]
            existing = conn.execute(
                sa.select(inv.c.id).where(
                    inv.c.subscription_id == subscription_id, inv.c.period_start == sub["period_start"]
                )
            ).scalar()
            if existing is not None:
                return None  # already invoiced; waiting for payment
            plan = self._plan(conn, sub["plan_id"])
            usage = T["usage_records"]
            used = conn.execute(
                sa.select(sa.func.coalesce(sa.func.sum(usage.c.amount), 0)).where(
                    usage.c.subscription_id == subscription_id, usage.c.period_start == sub["period_start"]
                )
            ).scalar_one()
            overage = max(0, int(used) - sub["total_budget"])
            invoice_id = new_id("inv")
            lines = [("plan", f"{plan['name']} ({plan['interval_days']} days)", plan["price"])]
            lines.append(
                (
                    "usage",
                    f"usage {from_micros(int(used))} {plan['currency']}, beyond the included budget",
                    overage,
                )
            )
            invoice = {
                "id": invoice_id,
                "customer_id": sub["customer_id"],
                "subscription_id": subscription_id,
                "status": "open",
                "currency": plan["currency"],
                "total": sum(amount for _, _, amount in lines),
                "period_start": sub["period_start"],
                "period_end": sub["period_end"],
                "created_at": now,
            }
            conn.execute(inv.insert().values(**invoice))
            for kind, description, amount in lines:
                conn.execute(
                    T["invoice_lines"]
                    .insert()
                    .values(invoice_id=invoice_id, kind=kind, description=description, amount=amount)
                )
            conn.execute(
                usage.update()
                .where(
                    usage.c.subscription_id == subscription_id, usage.c.period_start == sub["period_start"]
                )
                .values(invoice_id=invoice_id)
            )
            created = events.UnknownEvent(
                event_type="invoice.created",
                data={
                    "invoice_id": invoice_id,
                    "subscription_id": subscription_id,
                    "customer_id": sub["customer_id"],
                    "total": str(from_micros(invoice["total"])),
                },
                **self._envelope(sub["customer_id"], f"cycle:{subscription_id}"),
            )
            self._emit(conn, created, sub["customer_id"])
            return {**self._invoice(conn, invoice), "event_id": created.event_id}

    def pay_invoice(
        self, invoice_id: str, correlation_id: str | None = None, causation_id: str | None = None
    ) -> dict[str, Any]:
        """Records the payment, marks the invoice paid and opens the subscription's next period."""
        now = self.clock()
        with self.engine.begin() as conn:
            invoice = self._require(conn, "invoices", invoice_id, "invoice")
            if invoice["status"] != "open":
                raise Conflict(f"invoice {invoice_id} is {invoice['status']}, not open")
            sub = self._require(conn, "subscriptions", invoice["subscription_id"], "subscription")
            plan = self._plan(conn, sub["plan_id"])
            conn.execute(
                T["payments"]
                .insert()
                .values(id=new_id("pay"), invoice_id=invoice_id, amount=invoice["total"], created_at=now)
            )
            conn.execute(
                T["invoices"]
                .update()
                .where(T["invoices"].c.id == invoice_id)
                .values(status="paid", paid_at=now)
            )
            start = invoice["period_end"]
            end = start + timedelta(days=plan["interval_days"])
            changes: dict[str, Any] = {"period_start": start, "period_end": end, "updated_at": now}
            conn.execute(
                T["subscriptions"].update().where(T["subscriptions"].c.id == sub["id"]).values(**changes)
            )
            event = events.InvoicePaid(
                data=events.InvoicePaidData(
                    invoice_id=invoice_id,
                    customer_id=sub["customer_id"],
                    subscription_id=sub["id"],
                    amount_paid=from_micros(invoice["total"]),
                    new_period_start=start,
                    new_period_end=end,
                ),
                **self._envelope(sub["customer_id"], correlation_id, causation_id),
            )
            self._emit(conn, event, sub["customer_id"])
            return self._invoice(conn, {**invoice, "status": "paid", "paid_at": now})

    def fail_payment(self, invoice_id: str, correlation_id: str | None = None) -> dict[str, Any]:
        """A payment attempt failed: the invoice stays open, the subscription goes ``past_due``."""
        with self.engine.begin() as conn:
            invoice = self._require(conn, "invoices", invoice_id, "invoice")
            if invoice["status"] != "open":
                raise Conflict(f"invoice {invoice_id} is {invoice['status']}, not open")
            subs = T["subscriptions"]
            sub = self._require(conn, "subscriptions", invoice["subscription_id"], "subscription")
            if "past_due" in TRANSITIONS[sub["status"]]:
                conn.execute(
                    subs.update()
                    .where(subs.c.id == sub["id"])
                    .values(status="past_due", updated_at=self.clock())
                )
            event = events.InvoicePaymentFailed(
                data=events.InvoicePaymentFailedData(
                    customer_id=sub["customer_id"], subscription_id=sub["id"], invoice_id=invoice_id
                ),
                **self._envelope(sub["customer_id"], correlation_id),
            )
            self._emit(conn, event, sub["customer_id"])
            return self._invoice(conn, invoice)

    def void_invoice(self, invoice_id: str) -> dict[str, Any]:
        """An open invoice that will not be collected."""
        with self.engine.begin() as conn:
            invoice = self._require(conn, "invoices", invoice_id, "invoice")
            if invoice["status"] != "open":
                raise Conflict(f"invoice {invoice_id} is {invoice['status']}, not open")
            conn.execute(T["invoices"].update().where(T["invoices"].c.id == invoice_id).values(status="void"))
            return self._invoice(conn, {**invoice, "status": "void"})

    # ---- events -------------------------------------------------------------------------------

    def outbox_state(self) -> dict[str, Any]:
        """Outbox rows by status, and the age of the oldest pending one (for /metrics)."""
        ev = T["billing_events"]
        with self.engine.connect() as conn:
            by_status = conn.execute(sa.select(ev.c.status, sa.func.count()).group_by(ev.c.status)).all()
            oldest = conn.execute(
                sa.select(sa.func.min(ev.c.created_at)).where(ev.c.status == "pending")
            ).scalar()
        age = (self.clock() - utc(oldest)).total_seconds() if oldest is not None else 0.0
        return {"counts": {str(k): int(v) for k, v in by_status}, "oldest_pending_s": max(0.0, age)}

    def list_events(
        self, customer_id: str | None = None, after: int = 0, limit: int = 100
    ) -> list[tuple[int, bytes]]:
        """``(seq, envelope)`` from the outbox after ``seq``, oldest first."""
        ev = T["billing_events"]
        query = sa.select(ev.c.seq, ev.c.payload).where(ev.c.seq > after).order_by(ev.c.seq).limit(limit)
        if customer_id is not None:
            query = query.where(ev.c.customer_id == customer_id)
        with self.engine.connect() as conn:
            return [(int(seq), bytes(payload)) for seq, payload in conn.execute(query)]

    def budget_events(self, customer_id: str | None = None) -> list[bytes]:
        """The current state of every live subscription, as ``subscription.created`` events
        carrying its current plan, budget, status and period: what a gateway applies to
        rebuild its table after a gap."""
        subs = T["subscriptions"]
        query = (
            sa.select(subs.c.id)
            .where(subs.c.status != "canceled")
            .order_by(subs.c.customer_id, subs.c.created_at)
        )
        if customer_id is not None:
            query = query.where(subs.c.customer_id == customer_id)
        out = []
        with self.engine.connect() as conn:
            for sub_id in conn.execute(query).scalars().all():
                sub = self._require(conn, "subscriptions", sub_id, "subscription")
                plan = self._plan(conn, sub["plan_id"])
                env = {
                    "event_id": f"state_{sub_id}_{int(sub['updated_at'].timestamp() * 1e6)}",
                    "timestamp": sub["updated_at"],
                    "tenant_id": sub["customer_id"],
                }
                out.append(events.encode_event(self._subscription_created(conn, sub, plan, **env)))
        return out
