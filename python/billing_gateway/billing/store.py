"""The billing source of truth: domain operations over SQLite or PostgreSQL.

Every state change runs in one database transaction that also writes its event to the
``billing_events`` outbox, in the envelope of ``billing_gateway.events``, so an event is
published if and only if its change was committed.

Several API servers, schedulers and ingestors may share one database. Every transition
reads the rows it changes under a lock, then decides: on PostgreSQL ``SELECT … FOR
UPDATE`` (always the subscription before its invoice, so two transitions never wait on
each other in a cycle); on SQLite every write transaction begins ``IMMEDIATE``, which
serializes writers. Uniqueness (idempotency keys, usage keys, one invoice per period, one
payment per invoice, plan ids) is a database constraint, never a read-then-insert.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, RowMapping

from billing_gateway import events
from billing_gateway.errors import InvalidEvent
from billing_gateway.money import from_micros

from .domain import (
    LIVE_STATUSES,
    BillingError,
    Conflict,
    Invalid,
    NotFound,
    check_amount,
    check_key,
    checked,
    may_become,
    require_live,
    require_transition,
)
from .schema import WRITE, migrate, tables

__all__ = ["BillingError", "BillingStore", "Conflict", "Invalid", "NotFound", "Principal", "insert_new"]

log = logging.getLogger(__name__)
T = tables


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


def insert_new(conn: Connection, table: sa.Table, **values: Any) -> bool:
    """Inserts a row unless one with the same unique key exists: whether it was inserted.

    On PostgreSQL, a concurrent transaction inserting the same key makes this wait for
    its outcome, so a duplicate is never inserted and never raises."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = insert(table).values(**values).on_conflict_do_nothing()
    return conn.execute(statement.returning(*table.primary_key.columns)).first() is not None


def _switch_to_wal(cursor: Any, timeout_s: float = 10.0) -> None:
    """WAL mode (persistent in the file). The switch needs the database to itself and SQLite
    answers "locked" at once, without waiting, while another process switches a new file
    too: retry until then."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _sqlite_transactions(engine: Engine) -> None:
    """pysqlite's own BEGIN handling off; ours on: ``BEGIN IMMEDIATE`` for writes (the
    write lock up front, so concurrent writers queue instead of failing to upgrade), a
    plain ``BEGIN`` for reads."""

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _: Any) -> None:
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA busy_timeout=10000")
        _switch_to_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE) else "BEGIN")


class BillingStore:
    def __init__(self, engine: Engine, clock: Callable[[], datetime] | None = None) -> None:
        self.engine = engine
        self.clock = clock or (lambda: datetime.now(UTC))
        self._tx: ContextVar[Connection | None] = ContextVar(f"billing_tx_{id(self)}", default=None)

    @classmethod
    def open(cls, url: str, **options: Any) -> BillingStore:
        """A store on ``url`` (a SQLite path or URL, or a PostgreSQL URL), migrated."""
        if "://" not in url:
            url = f"sqlite:///{url}"
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
        engine = sa.create_engine(url, **options)
        if engine.dialect.name == "sqlite":
            _sqlite_transactions(engine)
        migrate(engine)
        return cls(engine)

    # ---- transactions -------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection]:
        """The write transaction in progress in this context, or a new one.

        Operations called inside another's ``transaction()`` join it and commit (or roll
        back) with it: the API runs an operation and records its idempotency key that way."""
        current = self._tx.get()
        if current is not None:
            yield current
            return
        with self.engine.connect() as conn:
            conn.execution_options(**{WRITE: True})
            with conn.begin():
                token = self._tx.set(conn)
                try:
                    yield conn
                finally:
                    self._tx.reset(token)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Connection]:
        """The transaction in progress (to read its own writes), or a read-only connection."""
        current = self._tx.get()
        if current is not None:
            yield current
            return
        with self.engine.connect() as conn:
            yield conn

    # ---- outbox -------------------------------------------------------------------------

    def _emit(
        self, conn: Connection, event: events.Event | events.UnknownEvent, customer_id: str | None
    ) -> None:
        """Writes ``event`` to the outbox in the change's transaction. An event a gateway could
        not apply (the single validator, ``events.validate_event``, refuses it) is
        :class:`Invalid` instead, and the whole change rolls back: billing never commits what
        its gateways would dead-letter."""
        try:
            payload = events.encode_event(event)  # validates what it encodes
        except InvalidEvent as exc:
            raise Invalid(f"the change would emit an event gateways cannot apply: {exc}") from None
        now = self.clock()
        conn.execute(
            T["billing_events"]
            .insert()
            .values(
                event_id=event.event_id,
                event_type=event.event_type,
                customer_id=customer_id,
                payload=payload,
                status="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
        )

    @staticmethod
    def _envelope(
        at: datetime, customer_id: str | None, correlation_id: str | None, causation_id: str | None = None
    ) -> dict[str, Any]:
        return {
            "event_id": new_id("evt"),
            "timestamp": at,
            "tenant_id": customer_id,
            "correlation_id": correlation_id,
            "causation_id": causation_id,
        }

    # ---- API keys -----------------------------------------------------------------------

    def create_api_key(self, scopes: list[str], customer_id: str | None = None) -> tuple[str, str]:
        """A new key: ``(key_id, secret)``. Only the secret's hash is stored."""
        key_id = new_id("key")
        secret = f"bgk_{secrets.token_urlsafe(32)}"
        with self.transaction() as conn:
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
        keys = T["api_keys"]
        with self._reading() as conn:
            row = conn.execute(sa.select(keys).where(keys.c.key_hash == _hash_key(secret))).mappings().first()
        if row is None:
            return None
        return Principal(row["id"], frozenset(row["scopes"].split()), row["customer_id"])

    # ---- reading --------------------------------------------------------------------------

    def _get(self, conn: Connection, table: str, key: str, *, lock: bool = False) -> dict[str, Any] | None:
        """A row by id; ``lock`` holds it (``FOR UPDATE``) until the transaction ends."""
        t = T[table]
        query = sa.select(t).where(t.c.id == key)
        return _row(conn.execute(query.with_for_update() if lock else query).mappings().first())

    def get(self, table: str, key: str) -> dict[str, Any] | None:
        with self._reading() as conn:
            return self._get(conn, table, key)

    def _require(
        self, conn: Connection, table: str, key: str, what: str, *, lock: bool = False
    ) -> dict[str, Any]:
        found = self._get(conn, table, key, lock=lock)
        if found is None:
            raise NotFound(f"{what} {key} not found")
        return found

    # ---- customers ------------------------------------------------------------------------

    def create_customer(
        self, name: str, email: str, stripe_customer_id: str | None = None, correlation_id: str | None = None
    ) -> dict[str, Any]:
        now = self.clock()
        customer_id = new_id("cus")
        customer: dict[str, Any] = {
            "id": customer_id,
            "name": name,
            "email": email,
            "stripe_customer_id": stripe_customer_id,
            "created_at": now,
        }
        with self.transaction() as conn:
            conn.execute(T["customers"].insert().values(**customer))
            data = {k: v for k, v in customer.items() if k != "created_at"}
            event = events.UnknownEvent(
                event_type="customer.created", data=data, **self._envelope(now, customer_id, correlation_id)
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
        check_amount("included_budget", included_budget)
        check_amount("price", price)
        now = self.clock()
        product = {"id": new_id("prod"), "name": product_name or name, "created_at": now}
        plan: dict[str, Any] = {
            "id": plan_id or new_id("plan"),
            "product_id": product["id"],
            "name": name,
            "currency": currency,
            "interval_days": interval_days,
            "included_budget": included_budget,
            "created_at": now,
        }
        with self.transaction() as conn:
            conn.execute(T["products"].insert().values(**product))
            if not insert_new(conn, T["plans"], **plan):
                raise Conflict(f"plan {plan['id']} already exists")
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
        with self._reading() as conn:
            ids = conn.execute(sa.select(T["plans"].c.id).order_by(T["plans"].c.id)).scalars().all()
            return [self._plan(conn, i) for i in ids]

    def get_plan(self, plan_id: str) -> dict[str, Any]:
        with self._reading() as conn:
            return self._plan(conn, plan_id)

    # ---- subscriptions ----------------------------------------------------------------------

    @staticmethod
    def _subscription_created(
        sub: dict[str, Any], plan: dict[str, Any], **env: Any
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
        if total_budget is not None:
            check_amount("total_budget", total_budget)
        now = self.clock()
        with self.transaction() as conn:
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
            env = self._envelope(now, customer_id, correlation_id)
            self._emit(conn, self._subscription_created(sub, plan, **env), customer_id)
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
        """Plan change, budget change, or status change (cancel: ``status="canceled"``).

        A canceled subscription refuses every change (:class:`Conflict`), and emits nothing."""
        if total_budget is not None:
            check_amount("total_budget", total_budget)
        with self.transaction() as conn:
            sub = self._require(conn, "subscriptions", subscription_id, "subscription", lock=True)
            require_live(subscription_id, sub["status"])
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
                require_transition(subscription_id, sub["status"], status)
                changes["status"] = status
                data["status"] = status
            if not changes:
                return sub
            return self._change_subscription(conn, sub, changes, data, correlation_id)

    def _change_subscription(
        self,
        conn: Connection,
        sub: dict[str, Any],
        changes: dict[str, Any],
        data: dict[str, Any],
        correlation_id: str | None,
        causation_id: str | None = None,
    ) -> dict[str, Any]:
        """Applies ``changes`` to a subscription held under lock and emits ``subscription.updated``."""
        now = self.clock()
        changes = {**changes, "updated_at": now}
        subs = T["subscriptions"]
        conn.execute(subs.update().where(subs.c.id == sub["id"]).values(**changes))
        event = events.SubscriptionUpdated(
            data=events.SubscriptionUpdatedData(**data),
            **self._envelope(now, sub["customer_id"], correlation_id, causation_id),
        )
        self._emit(conn, event, sub["customer_id"])
        return {**sub, **changes}

    # ---- usage --------------------------------------------------------------------------------

    def record_usage(
        self, subscription_id: str, amount: int, idempotency_key: str, period_start: datetime | None = None
    ) -> tuple[dict[str, Any], bool]:
        """Records metered spend once per ``idempotency_key`` of the subscription:
        ``(record, created)``. Keys are scoped to their subscription, so one customer's keys
        never collide with (or reveal) another's.

        Usage of a canceled subscription is still recorded: it was spent before the cancellation."""
        check_amount("amount", amount)
        check_key("idempotency_key", idempotency_key)
        usage = T["usage_records"]
        with self.transaction() as conn:
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
            if insert_new(conn, usage, **record):
                return record, True
            same_key = (usage.c.subscription_id == subscription_id) & (
                usage.c.idempotency_key == idempotency_key
            )
            existing = _row(conn.execute(sa.select(usage).where(same_key)).mappings().first())
            assert existing is not None  # the key is what conflicted
            if existing["amount"] != amount:
                raise Conflict(f"idempotency key {idempotency_key!r} was used for different usage")
            return existing, False

    # ---- invoices -----------------------------------------------------------------------------

    def list_invoices(self, customer_id: str | None = None) -> list[dict[str, Any]]:
        inv = T["invoices"]
        query = sa.select(inv).order_by(inv.c.created_at, inv.c.id)
        if customer_id is not None:
            query = query.where(inv.c.customer_id == customer_id)
        with self._reading() as conn:
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
        with self._reading() as conn:
            return self._invoice(conn, self._require(conn, "invoices", invoice_id, "invoice"))

    def close_due_cycles(self, *, auto_pay: bool = True, now: datetime | None = None) -> list[dict[str, Any]]:
        """Invoices every live subscription whose period has ended: the plan price plus usage
        beyond the included budget. With ``auto_pay`` the invoice is paid at once, which opens
        the next period (``invoice.paid``); otherwise it stays open for ``pay_invoice``.

        Each subscription's cycle is its own transaction: one that fails (a usage sum beyond
        64 bits, say) is logged and left for the next run, and the others are closed."""
        now = now or self.clock()
        subs = T["subscriptions"]
        with self._reading() as conn:
            due = (
                conn.execute(
                    sa.select(subs.c.id)
                    .where(subs.c.status.in_(LIVE_STATUSES), subs.c.period_end <= now)
                    .order_by(subs.c.id)
                )
                .scalars()
                .all()
            )
        closed = []
        for sub_id in due:
            try:
                with self.transaction() as conn:
                    invoice = self._close_cycle(conn, sub_id, now, auto_pay)
            except (BillingError, sa.exc.DBAPIError) as exc:
                reason = getattr(exc, "orig", None) or exc
                log.error("billing cycle of subscription %s not closed: %s", sub_id, reason)
                continue
            if invoice is not None:
                closed.append(invoice)
        return closed

    def _close_cycle(
        self, conn: Connection, subscription_id: str, now: datetime, auto_pay: bool
    ) -> dict[str, Any] | None:
        sub = self._require(conn, "subscriptions", subscription_id, "subscription", lock=True)
        if sub["period_end"] > now or sub["status"] not in LIVE_STATUSES:
            return None  # closed by a concurrent scheduler, or canceled meanwhile
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
        in_period = (usage.c.subscription_id == subscription_id) & (
            usage.c.period_start == sub["period_start"]
        )
        used = checked(
            f"usage of subscription {subscription_id}",
            conn.execute(sa.select(usage.c.amount).where(in_period)).scalars(),
        )
        overage = max(0, used - sub["total_budget"])
        lines = [
            ("plan", f"{plan['name']} ({plan['interval_days']} days)", plan["price"]),
            ("usage", f"usage {from_micros(used)} {plan['currency']}, beyond the included budget", overage),
        ]
        invoice_id = new_id("inv")
        invoice = {
            "id": invoice_id,
            "customer_id": sub["customer_id"],
            "subscription_id": subscription_id,
            "status": "open",
            "currency": plan["currency"],
            "total": checked(f"invoice of subscription {subscription_id}", (a for _, _, a in lines)),
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
        conn.execute(usage.update().where(in_period).values(invoice_id=invoice_id))
        created = events.UnknownEvent(
            event_type="invoice.created",
            data={
                "invoice_id": invoice_id,
                "subscription_id": subscription_id,
                "customer_id": sub["customer_id"],
                "total": str(from_micros(invoice["total"])),
            },
            **self._envelope(self.clock(), sub["customer_id"], f"cycle:{subscription_id}"),
        )
        self._emit(conn, created, sub["customer_id"])
        if auto_pay:
            return self._pay(conn, invoice, sub, f"cycle:{subscription_id}", created.event_id)
        return {**self._invoice(conn, invoice), "event_id": created.event_id}

    def _locked_invoice(self, conn: Connection, invoice_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """An invoice and its subscription, both locked (the subscription first)."""
        found = self._require(conn, "invoices", invoice_id, "invoice")
        sub = self._require(conn, "subscriptions", found["subscription_id"], "subscription", lock=True)
        invoice = self._require(conn, "invoices", invoice_id, "invoice", lock=True)
        if invoice["status"] != "open":
            raise Conflict(f"invoice {invoice_id} is {invoice['status']}, not open")
        return invoice, sub

    def pay_invoice(
        self, invoice_id: str, correlation_id: str | None = None, causation_id: str | None = None
    ) -> dict[str, Any]:
        """Records the payment of an open invoice and marks it paid. For a live subscription
        it opens the next period (``invoice.paid``) and brings a ``trialing`` or ``past_due``
        one back to ``active`` (``subscription.updated``).

        The last invoice of a canceled subscription can still be paid — the money is owed —
        but that never reopens a period or revives the subscription, and emits no event: a
        gateway has nothing to apply."""
        with self.transaction() as conn:
            invoice, sub = self._locked_invoice(conn, invoice_id)
            return self._pay(conn, invoice, sub, correlation_id, causation_id)

    def _pay(
        self,
        conn: Connection,
        invoice: dict[str, Any],
        sub: dict[str, Any],
        correlation_id: str | None,
        causation_id: str | None,
    ) -> dict[str, Any]:
        now = self.clock()
        invoices = T["invoices"]
        paid = conn.execute(
            invoices.update()
            .where(invoices.c.id == invoice["id"], invoices.c.status == "open")
            .values(status="paid", paid_at=now)
        )
        if paid.rowcount != 1:
            raise Conflict(f"invoice {invoice['id']} is no longer open")
        conn.execute(
            T["payments"]
            .insert()
            .values(id=new_id("pay"), invoice_id=invoice["id"], amount=invoice["total"], created_at=now)
        )
        result = self._invoice(conn, {**invoice, "status": "paid", "paid_at": now})
        if sub["status"] not in LIVE_STATUSES or sub["period_start"] != invoice["period_start"]:
            return result  # canceled (terminal), or an invoice of a period already left behind
        plan = self._plan(conn, sub["plan_id"])
        start = invoice["period_end"]
        end = start + timedelta(days=plan["interval_days"])
        subs = T["subscriptions"]
        conn.execute(
            subs.update()
            .where(subs.c.id == sub["id"])
            .values(period_start=start, period_end=end, updated_at=now)
        )
        event = events.InvoicePaid(
            data=events.InvoicePaidData(
                invoice_id=invoice["id"],
                customer_id=sub["customer_id"],
                subscription_id=sub["id"],
                amount_paid=from_micros(invoice["total"]),
                new_period_start=start,
                new_period_end=end,
            ),
            **self._envelope(now, sub["customer_id"], correlation_id, causation_id),
        )
        self._emit(conn, event, sub["customer_id"])
        if sub["status"] != "active" and may_become(sub["status"], "active"):
            data = {"subscription_id": sub["id"], "customer_id": sub["customer_id"], "status": "active"}
            self._change_subscription(conn, sub, {"status": "active"}, data, correlation_id, event.event_id)
        return result

    def fail_payment(self, invoice_id: str, correlation_id: str | None = None) -> dict[str, Any]:
        """A payment attempt failed: the invoice stays open, the subscription goes ``past_due``
        (``invoice.payment_failed``). Refused (:class:`Conflict`, no event) for a canceled one."""
        with self.transaction() as conn:
            invoice, sub = self._locked_invoice(conn, invoice_id)
            now = self.clock()  # once the rows are ours: events of one subscription in commit order
            if sub["status"] != "past_due":
                require_transition(sub["id"], sub["status"], "past_due")
                subs = T["subscriptions"]
                conn.execute(
                    subs.update().where(subs.c.id == sub["id"]).values(status="past_due", updated_at=now)
                )
            event = events.InvoicePaymentFailed(
                data=events.InvoicePaymentFailedData(
                    customer_id=sub["customer_id"], subscription_id=sub["id"], invoice_id=invoice_id
                ),
                **self._envelope(now, sub["customer_id"], correlation_id),
            )
            self._emit(conn, event, sub["customer_id"])
            return self._invoice(conn, invoice)

    def void_invoice(self, invoice_id: str) -> dict[str, Any]:
        """An open invoice that will not be collected."""
        with self.transaction() as conn:
            invoice, _ = self._locked_invoice(conn, invoice_id)
            conn.execute(T["invoices"].update().where(T["invoices"].c.id == invoice_id).values(status="void"))
            return self._invoice(conn, {**invoice, "status": "void"})

    # ---- events -------------------------------------------------------------------------------

    def outbox_state(self) -> dict[str, Any]:
        """Outbox rows by status, and the age of the oldest pending one (for /metrics)."""
        ev = T["billing_events"]
        with self._reading() as conn:
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
        with self._reading() as conn:
            return [(int(seq), bytes(payload)) for seq, payload in conn.execute(query)]

    def budget_events(self, customer_id: str | None = None) -> list[bytes]:
        """Each customer's current subscription (the one created last) as a
        ``subscription.created`` event carrying its current plan, budget, status and period:
        what a gateway applies to rebuild its table after a gap.

        A canceled current subscription is included (``status: "canceled"``), so a rebuilt
        gateway refuses that tenant; an older subscription never is, since its later timestamp
        would switch the gateway's row back to it."""
        subs = T["subscriptions"]
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
                sub = self._require(conn, "subscriptions", sub_id, "subscription")
                plan = self._plan(conn, sub["plan_id"])
                env = {
                    "event_id": f"state_{sub_id}_{int(sub['updated_at'].timestamp() * 1e6)}",
                    "timestamp": sub["updated_at"],
                    "tenant_id": sub["customer_id"],
                }
                try:
                    out.append(events.encode_event(self._subscription_created(sub, plan, **env)))
                except InvalidEvent as exc:  # a row stored before the bounds: no gateway could apply it
                    log.error("subscription %s left out of the budget state: %s", sub_id, exc)
        return out
