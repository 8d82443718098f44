"""The Gateway against a small pure-Python model of API.md's rules (Hypothesis state machine).

Random events (with duplicates, reordering, ties, parking and subscription switches),
spends, checks, reservations, commits, releases, clock moves, drains and
snapshot/restore cycles; after every step the table must equal the model.

Routing policies too: ``routing_policy.upserted`` / ``.deleted`` events (duplicated, out of
order; last-writer-wins per policy id by timestamp, a delete a tombstone), local sets from
``set_policies`` (hidden by any event about the same id), and ``route`` answers.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from billing_gateway import (
    ApplyOutcome,
    Budget,
    Gateway,
    InvalidAmount,
    Reason,
    RoutingPolicy,
    Target,
    UnknownReservation,
    to_micros,
)
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    multiple,
    rule,
)

from .conftest import NOW, START, created, event, micros, paid, payment_failed, pin, updated

ACTIVE = {"active", "trialing", "past_due"}
SUBS = {"sub_a": "cus_1", "sub_b": "cus_1", "sub_c": "cus_2"}
TENANTS = ["cus_1", "cus_2", "cus_9"]
TIMES = [NOW + timedelta(hours=h) for h in range(4)]  # few values: ties are frequent
PERIODS = [(START + timedelta(days=30 * i), START + timedelta(days=30 * (i + 1))) for i in range(3)]
GRACE_S = 86_400
_ids = itertools.count()
_ticks = itertools.count(1)  # routing events get distinct timestamps: no ties to break

Policy = tuple[str, int, str, str, tuple[tuple[str, int, int], ...]]
"""``(id, priority, match_expression, strategy, ((name, weight, cost), ...))``."""
EXPRESSIONS: dict[str, Any] = {  # what each one says, given (attrs, the tenant has a row)
    "true": lambda attrs, known: True,
    "request.model == 'a'": lambda attrs, known: attrs.get("model") == "a",
    "request.model != 'a'": lambda attrs, known: "model" in attrs and attrs["model"] != "a",
    "has(budget.total)": lambda attrs, known: known,
    "request.tokens > 100": lambda attrs, known: attrs.get("tokens", 0) > 100,  # absent: an error
}


@dataclass(frozen=True)
class Ev:
    """One generated event: what the model needs, and the JSON the gateway gets."""

    kind: str
    event_id: str
    ts: int
    sub: str
    fields: dict[str, Any]
    raw: bytes


@dataclass
class Row:
    sub: str
    plan_id: str
    plan_name: str
    total: int
    status: str
    period: tuple[int, int]
    created_ts: int
    ts: dict[str, int]
    spent: int = 0
    reserved: int = 0
    drained: int = 0


@dataclass
class Model:
    now: int
    rows: dict[str, Row] = field(default_factory=dict)
    subs: dict[str, str] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    parked: dict[str, list[Ev]] = field(default_factory=dict)
    reservations: dict[int, tuple[str, int, int]] = field(default_factory=dict)
    fates: dict[int, str] = field(default_factory=dict)
    """How each resolved reservation ended (``UnknownReservation.reason``)."""
    journal: list[tuple[str, str, int, int]] = field(default_factory=list)
    dirty: bool = False  # changed since the last snapshot
    local: list[Policy] = field(default_factory=list)
    replicated: dict[str, tuple[int, Policy | None]] = field(default_factory=dict)
    """A policy id's latest event: its timestamp and the policy (None: deleted)."""

    # ---- events -----------------------------------------------------------------

    def apply(self, ev: Ev) -> ApplyOutcome:
        if ev.event_id in self.seen:
            return ApplyOutcome.DUPLICATE
        self.seen.add(ev.event_id)
        self.dirty = True  # the id joins the snapshot's duplicate window, whatever the outcome
        return self._apply(ev)

    def _apply(self, ev: Ev) -> ApplyOutcome:
        if ev.kind == "created":
            return self._created(ev)
        if ev.kind == "policy":
            current = self.replicated.get(ev.sub)
            if current is not None and ev.ts <= current[0]:
                return ApplyOutcome.STALE
            self.replicated[ev.sub] = (ev.ts, ev.fields["policy"])
            return ApplyOutcome.APPLIED
        tenant = self.subs.get(ev.sub)
        if tenant is None:
            self.parked.setdefault(ev.sub, []).append(ev)
            return ApplyOutcome.PARKED
        row = self.rows.get(tenant)
        if row is None or row.sub != ev.sub:
            return ApplyOutcome.STALE
        changed = False
        if ev.kind == "updated":
            for name, value in ev.fields.items():
                if name == "status":
                    changed |= self._status(row, value, ev.ts, wins_tie=True)
                elif ev.ts >= row.ts[name]:
                    row.ts[name] = ev.ts
                    setattr(row, name, value)
                    changed = True
        elif ev.kind == "paid":
            if ev.fields["period"][0] > row.period[0]:
                self._close_period(tenant, row)
                row.period = ev.fields["period"]
                changed = True
        elif ev.kind == "failed":
            changed = self._status(row, "past_due", ev.ts, wins_tie=True)
        return ApplyOutcome.APPLIED if changed else ApplyOutcome.STALE

    @staticmethod
    def _status(row: Row, status: str, ts: int, *, wins_tie: bool) -> bool:
        """``canceled`` is terminal and wins whatever its timestamp; the rest is last-writer-wins."""
        if row.status == "canceled":
            return False
        if status != "canceled" and (ts < row.ts["status"] or (ts == row.ts["status"] and not wins_tie)):
            return False
        row.ts["status"] = max(ts, row.ts["status"])
        row.status = status
        return True

    def _created(self, ev: Ev) -> ApplyOutcome:
        tenant = SUBS[ev.sub]
        f = ev.fields
        if ev.sub in self.subs:
            row = self.rows.get(tenant)
            if row is None or row.sub != ev.sub:
                return ApplyOutcome.STALE
            changed = self._status(row, f["status"], ev.ts, wins_tie=False)
            for name in ("plan_id", "plan_name", "total"):
                if ev.ts > row.ts[name]:
                    row.ts[name] = ev.ts
                    setattr(row, name, f[name])
                    changed = True
            if f["period"][0] > row.period[0]:
                row.period = f["period"]
                changed = True
            return ApplyOutcome.APPLIED if changed else ApplyOutcome.STALE
        self.subs[ev.sub] = tenant
        fresh = Row(
            sub=ev.sub,
            plan_id=f["plan_id"],
            plan_name=f["plan_name"],
            total=f["total"],
            status=f["status"],
            period=f["period"],
            created_ts=ev.ts,
            ts=dict.fromkeys(("plan_id", "plan_name", "total", "status"), ev.ts),
        )
        row = self.rows.get(tenant)
        if row is not None:
            if (ev.ts, ev.sub) <= (row.created_ts, row.sub):
                self.parked.pop(ev.sub, None)
                return ApplyOutcome.STALE
            self._close_period(tenant, row)
            fresh.reserved = row.reserved
        self.rows[tenant] = fresh
        for waiting in self.parked.pop(ev.sub, []):
            self._apply(waiting)
        return ApplyOutcome.APPLIED

    def _close_period(self, tenant: str, row: Row) -> None:
        if row.spent > row.drained:
            self.journal.append((tenant, row.sub, row.period[0], row.spent - row.drained))
        row.spent = row.drained = 0

    # ---- spending ---------------------------------------------------------------

    def sweep(self) -> None:
        for rid, (tenant, amount, expires_at) in list(self.reservations.items()):
            if expires_at <= self.now:
                del self.reservations[rid]
                self.fates[rid] = "expired"
                self.rows[tenant].reserved -= amount
                self.dirty = True

    def admit(self, tenant: str, amount: int, debit: str | None) -> tuple[bool, Reason, int]:
        self.sweep()
        row = self.rows.get(tenant)
        if row is None:
            return False, Reason.UNKNOWN_TENANT, 0
        remaining = max(0, row.total - row.spent - row.reserved)
        if row.status not in ACTIVE:
            return False, Reason.INACTIVE, remaining
        if self.now >= row.period[1] + GRACE_S * 1_000_000:
            return False, Reason.PERIOD_ENDED, remaining
        if row.spent + row.reserved + amount > row.total:
            return False, Reason.INSUFFICIENT_BUDGET, remaining
        if debit == "spend":
            row.spent += amount
            self.dirty |= amount > 0
        elif debit == "hold":
            row.reserved += amount
            self.dirty = True
        return True, Reason.OK, remaining - (amount if debit else 0)

    def resolve(self, rid: int, actual: int | None) -> tuple[type[Exception], str | None] | None:
        """``None`` for success, else the error and, for UnknownReservation, its reason."""
        found = self.reservations.get(rid)
        if found is None:
            return UnknownReservation, self.fates.get(rid, "unknown")
        tenant, amount, expires_at = found
        row = self.rows[tenant]
        if expires_at <= self.now:
            del self.reservations[rid]
            self.fates[rid] = "expired"
            row.reserved -= amount
            self.dirty = True
            return UnknownReservation, "expired"
        if actual is not None and actual > amount:
            return InvalidAmount, None
        del self.reservations[rid]
        self.fates[rid] = "released" if actual is None else "committed"
        row.reserved -= amount
        row.spent += actual or 0
        self.dirty = True
        return None

    def drain(self) -> list[tuple[str, str, int, int]]:
        items, self.journal = self.journal, []
        for tenant, row in self.rows.items():
            if row.spent > row.drained:
                items.append((tenant, row.sub, row.period[0], row.spent - row.drained))
                row.drained = row.spent
        self.dirty |= bool(items)
        return sorted(items)

    def snapshot(self) -> None:
        """A snapshot leaves out holds already expired (the restored table never had them)."""
        for rid, (tenant, amount, expires_at) in list(self.reservations.items()):
            if expires_at <= self.now:
                del self.reservations[rid]
                self.fates[rid] = "expired"
                self.rows[tenant].reserved -= amount
        self.dirty = False

    # ---- routing ----------------------------------------------------------------

    def policies(self) -> list[Policy]:
        """The union in routing order: local policies whose id no event spoke about, and
        the replicated ones not deleted."""
        union = [p for p in self.local if p[0] not in self.replicated]
        union += [p for _, p in self.replicated.values() if p is not None]
        return sorted(union, key=lambda p: (p[1], p[0]))

    def route(self, tenant: str | None, attrs: dict[str, Any]) -> tuple[str, str, tuple[str, ...]] | None:
        known = tenant is not None and tenant in self.rows
        for policy_id, _, expression, _, targets in self.policies():
            if EXPRESSIONS[expression](attrs, known):
                names = tuple(name for name, _, _ in targets)
                return policy_id, names[0], names[1:]
        return None

    def budgets(self) -> list[tuple[Any, ...]]:
        self.sweep()
        return [
            (
                t,
                r.sub,
                r.plan_id,
                r.plan_name,
                r.total,
                r.spent,
                r.reserved,
                max(0, r.total - r.spent - r.reserved),
                r.period,
                r.status,
            )
            for t, r in sorted(self.rows.items())
        ]


def policy_view(p: RoutingPolicy) -> Policy:
    targets = tuple((t.name, t.weight, t.cost) for t in p.targets)
    return (p.id, p.priority, p.match_expression, p.strategy, targets)


def view(b: Budget) -> tuple[Any, ...]:
    assert b.currency == "USD"
    return (
        b.tenant_id,
        b.subscription_id,
        b.plan_id,
        b.plan_name,
        b.total,
        b.spent,
        b.reserved,
        b.remaining,
        (micros(b.period_start), micros(b.period_end)),
        b.status,
    )


# ---- event strategies ------------------------------------------------------------------

subs = st.sampled_from(sorted(SUBS))
times = st.sampled_from(TIMES)
totals = st.sampled_from(["10", "50"])


@st.composite
def created_events(draw: st.DrawFn) -> Ev:
    sub, ts, total = draw(subs), draw(times), draw(totals)
    plan_id = draw(st.sampled_from(["plan_a", "plan_b"]))
    plan_name = draw(st.sampled_from(["A", "B"]))
    start, end = PERIODS[draw(st.integers(0, 1))]
    status = draw(st.sampled_from([None, "trialing", "canceled"]))
    eid = f"c{next(_ids)}"
    raw = created(
        sub,
        SUBS[sub],
        total=total,
        ts=ts,
        start=start,
        end=end,
        plan_id=plan_id,
        plan_name=plan_name,
        status=status,
        event_id=eid,
    )
    model_fields = {
        "plan_id": plan_id,
        "plan_name": plan_name,
        "total": to_micros(total),
        "status": status or "active",
        "period": (micros(start), micros(end)),
    }
    return Ev("created", eid, micros(ts), sub, model_fields, raw)


@st.composite
def updated_events(draw: st.DrawFn) -> Ev:
    sub, ts = draw(subs), draw(times)
    wire: dict[str, str] = {}
    model_fields: dict[str, Any] = {}
    if plan_id := draw(st.sampled_from([None, "plan_x"])):
        wire["new_plan_id"], model_fields["plan_id"] = plan_id, plan_id
    if plan_name := draw(st.sampled_from([None, "X", "Y"])):
        wire["new_plan_name"], model_fields["plan_name"] = plan_name, plan_name
    if total := draw(st.sampled_from([None, "5", "80"])):
        wire["new_total_budget"], model_fields["total"] = total, to_micros(total)
    if status := draw(st.sampled_from([None, "active", "canceled", "past_due"])):
        wire["status"], model_fields["status"] = status, status
    if draw(st.booleans()):
        wire["customer_id"] = SUBS[sub]
    eid = f"u{next(_ids)}"
    return Ev("updated", eid, micros(ts), sub, model_fields, updated(sub, ts=ts, event_id=eid, **wire))


@st.composite
def paid_events(draw: st.DrawFn) -> Ev:
    sub, ts = draw(subs), draw(times)
    start, end = PERIODS[draw(st.integers(1, 2))]
    eid = f"p{next(_ids)}"
    raw = paid(sub, SUBS[sub], start=start, end=end, ts=ts, event_id=eid)
    return Ev("paid", eid, micros(ts), sub, {"period": (micros(start), micros(end))}, raw)


@st.composite
def failed_events(draw: st.DrawFn) -> Ev:
    sub, ts = draw(subs), draw(times)
    eid = f"f{next(_ids)}"
    return Ev("failed", eid, micros(ts), sub, {}, payment_failed(sub, SUBS[sub], ts=ts, event_id=eid))


policy_ids = st.sampled_from(["p1", "p2", "p3"])
policies = st.builds(
    lambda pid, priority, expression, targets: (pid, priority, expression, "failover", targets),
    policy_ids,
    st.sampled_from([1, 2]),  # ties are frequent: broken by id
    st.sampled_from(sorted(EXPRESSIONS)),
    st.sampled_from([(("a", 1, 0),), (("b", 2, 5), ("a", 1, 0))]),
)


@st.composite
def policy_events(draw: st.DrawFn) -> Ev:
    """An upsert or a delete of a policy, at one of a few times (so often out of order),
    each a distinct microsecond."""
    ts = draw(times) + timedelta(microseconds=next(_ticks))
    eid = f"r{next(_ids)}"
    if draw(st.booleans()):
        policy: Policy | None = draw(policies)
        assert policy is not None
        pid, priority, expression, strategy, targets = policy
        data: dict[str, Any] = {
            "id": pid, "priority": priority, "match_expression": expression, "strategy": strategy,
            "targets": [{"name": n, "weight": w, "cost": c} for n, w, c in targets],
        }  # fmt: skip
        raw = event("routing_policy.upserted", data, ts=ts, event_id=eid)
    else:
        pid, policy = draw(policy_ids), None
        raw = event("routing_policy.deleted", {"policy_id": pid}, ts=ts, event_id=eid)
    return Ev("policy", eid, micros(ts), pid, {"policy": policy}, raw)


any_event = st.one_of(created_events(), updated_events(), paid_events(), failed_events(), policy_events())


class GatewayMachine(RuleBasedStateMachine):
    applied = Bundle("applied")
    holds = Bundle("holds")

    def __init__(self) -> None:
        super().__init__()
        self.model = Model(now=micros(NOW))
        self.gw = pin(Gateway(grace_period_s=GRACE_S))

    @rule(target=applied, ev=any_event)
    def apply(self, ev: Ev) -> Ev:
        assert self.gw.apply(ev.raw) == self.model.apply(ev)
        return ev

    @rule(ev=applied)
    def apply_again(self, ev: Ev) -> None:
        assert self.gw.apply(ev.raw) == self.model.apply(ev) == ApplyOutcome.DUPLICATE

    @rule(
        tenant=st.sampled_from(TENANTS),
        amount=st.integers(0, 60).map(lambda u: u * 1_000_000),
        how=st.sampled_from(["try_spend", "spend", "check"]),
    )
    def spend(self, tenant: str, amount: int, how: str) -> None:
        allowed, reason, remaining = self.model.admit(tenant, amount, None if how == "check" else "spend")
        if how == "try_spend":
            assert self.gw.try_spend(tenant, amount) is allowed
            return
        d = self.gw.check(tenant, amount) if how == "check" else self.gw.spend(tenant, amount)
        assert (d.allowed, d.reason, d.remaining, d.reservation_id) == (
            allowed,
            reason,
            remaining,
            None,
        )

    @rule(
        target=holds,
        tenant=st.sampled_from(TENANTS),
        amount=st.integers(0, 30).map(lambda u: u * 1_000_000),
        ttl_s=st.sampled_from([1, 30, 3600]),
    )
    def reserve(self, tenant: str, amount: int, ttl_s: int) -> Any:
        allowed, reason, remaining = self.model.admit(tenant, amount, "hold")
        d = self.gw.reserve(tenant, amount, ttl_s=ttl_s)
        assert (d.allowed, d.reason, d.remaining) == (allowed, reason, remaining)
        if d.reservation_id is None:
            return multiple()
        self.model.reservations[d.reservation_id] = (
            tenant,
            amount,
            self.model.now + ttl_s * 1_000_000,
        )
        return d.reservation_id

    @rule(rid=consumes(holds), fraction=st.sampled_from([0, 0.5, 1, 2]))
    def commit(self, rid: int, fraction: float) -> None:
        held = self.model.reservations.get(rid)
        actual = int((held[1] if held else 1_000_000) * fraction)
        self.resolves_as_modelled(rid, actual)

    @rule(rid=holds)
    def release(self, rid: int) -> None:
        self.resolves_as_modelled(rid, None)

    def resolves_as_modelled(self, rid: int, actual: int | None) -> None:
        def resolve() -> None:
            if actual is None:
                self.gw.release(rid)
            else:
                self.gw.commit(rid, actual)

        expected = self.model.resolve(rid, actual)
        if expected is None:
            resolve()
            return
        error, reason = expected
        with pytest.raises(error) as raised:
            resolve()
        if isinstance(raised.value, UnknownReservation):
            assert raised.value.reason == reason

    @rule(seconds=st.sampled_from([0, 1, 20, 1800, 86_400, 20 * 86_400]))
    def advance(self, seconds: int) -> None:
        self.model.now += seconds * 1_000_000
        self.gw._set_clock(self.model.now)

    @rule()
    def drain(self) -> None:
        got = sorted(
            (u.tenant_id, u.subscription_id, micros(u.period_start), u.amount) for u in self.gw.drain_usage()
        )
        assert got == self.model.drain()

    @rule(local=st.lists(policies, max_size=3, unique_by=lambda p: p[0]))
    def set_policies(self, local: list[Policy]) -> None:
        self.gw.set_policies(
            RoutingPolicy(pid, prio, expr, strategy, tuple(Target(*t) for t in targets))
            for pid, prio, expr, strategy, targets in local
        )
        self.model.local = local
        self.model.dirty = True  # local policies are in snapshots

    @rule(
        tenant=st.sampled_from([None, *TENANTS]),
        attrs=st.fixed_dictionaries(
            {}, optional={"model": st.sampled_from(["a", "b"]), "tokens": st.just(500)}
        ),
    )
    def route(self, tenant: str | None, attrs: dict[str, Any]) -> None:
        found = self.gw.route(tenant, attrs)
        got = None if found is None else (found.policy_id, found.target, found.fallbacks)
        assert got == self.model.route(tenant, attrs)

    @rule(cursor=st.integers(0, 2**63 - 1))
    def snapshot_restore(self, cursor: int) -> None:
        self.gw = Gateway.restore(self.gw.snapshot(cursor))
        self.model.snapshot()
        self.model.fates.clear()  # a restored gateway remembers no resolution
        assert self.gw.cursor == cursor
        assert not self.gw.dirty
        self.gw._set_clock(self.model.now)

    @rule()
    def snapshot(self) -> None:
        self.gw.snapshot()
        self.model.dirty = False

    @invariant()
    def table_matches_model(self) -> None:
        assert [view(b) for b in self.gw.budgets()] == self.model.budgets()
        assert len(self.gw) == len(self.model.rows)
        assert self.gw.dirty == self.model.dirty
        assert [policy_view(p) for p in self.gw.policies()] == self.model.policies()


GatewayMachine.TestCase.settings = settings(
    max_examples=400,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestGatewayModel = GatewayMachine.TestCase
