"""Spending: decisions, two-phase reservations, period ends, and concurrency."""

from __future__ import annotations

import pickle
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from billing_gateway import (
    Decision,
    Gateway,
    InvalidAmount,
    InvalidArgument,
    Reason,
    UnknownReservation,
    to_micros,
)

from .conftest import END, NOW, created, micros, pin, updated

HUNDRED = to_micros(100)


def test_try_spend_spend_and_check(gw: Gateway) -> None:
    assert gw.try_spend("cus_1", to_micros(60)) is True
    d = gw.check("cus_1", to_micros(40))
    assert d == Decision(True, Reason.OK, to_micros(40))
    assert gw.budget("cus_1").spent == to_micros(60)  # type: ignore[union-attr]
    d = gw.spend("cus_1", to_micros(41))
    assert (d.allowed, d.reason, d.remaining, d.reservation_id) == (
        False,
        Reason.INSUFFICIENT_BUDGET,
        to_micros(40),
        None,
    )
    assert not d
    d = gw.spend("cus_1", to_micros(40))
    assert d and d.reason is Reason.OK and d.remaining == 0
    assert gw.try_spend("cus_1", 0), "a zero spend fits a full budget"
    assert not gw.try_spend("cus_1", 1)


def test_decision_is_frozen_comparable_and_hashable(gw: Gateway) -> None:
    d = gw.check("cus_1", 1)
    assert d == gw.check("cus_1", 1)
    assert d != gw.check("cus_1", HUNDRED + 1)
    assert len({d, gw.check("cus_1", 1)}) == 1
    with pytest.raises(AttributeError):
        d.allowed = False  # type: ignore[misc]
    assert "Reason.OK" in repr(d)
    with pytest.raises(TypeError):
        Decision(True, "ok", 1)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["deny", "allow"])
def test_unknown_tenant(mode: str) -> None:
    gw = pin(Gateway(unknown_tenant=mode))
    allowed = mode == "allow"
    assert gw.try_spend("nobody", 5) is allowed
    for d in (gw.spend("nobody", 5), gw.check("nobody", 5)):
        assert (d.allowed, d.reason, d.remaining) == (allowed, Reason.UNKNOWN_TENANT, 0)
    r = gw.reserve("nobody", 5)
    assert r.allowed is allowed
    assert (r.reservation_id is not None) is allowed
    if r.reservation_id is not None:
        gw.commit(r.reservation_id, 3)
    assert len(gw) == 0


def test_bad_constructor_arguments() -> None:
    for kwargs in (
        {"unknown_tenant": "maybe"},
        {"grace_period_s": -1.0},
        {"grace_period_s": float("nan")},
        {"max_parked": -1},
    ):
        with pytest.raises(InvalidArgument):
            Gateway(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Gateway(86400)  # type: ignore[misc]


@pytest.mark.parametrize("status", ["canceled", "unpaid", "paused", "incomplete", "incomplete_expired"])
def test_inactive_statuses_refuse(gw: Gateway, status: str) -> None:
    gw.apply(updated(status=status))
    d = gw.spend("cus_1", 1)
    assert (d.allowed, d.reason, d.remaining) == (False, Reason.INACTIVE, HUNDRED)
    assert gw.reserve("cus_1", 1).reason is Reason.INACTIVE


@pytest.mark.parametrize("status", ["active", "trialing", "past_due"])
def test_active_statuses_spend(gw: Gateway, status: str) -> None:
    gw.apply(updated(status=status))
    assert gw.try_spend("cus_1", 1)


def test_period_end_with_the_default_grace(gw: Gateway) -> None:
    pin(gw, END + timedelta(hours=23, minutes=59))
    assert gw.try_spend("cus_1", 1), "the old budget applies during the grace period"
    pin(gw, END + timedelta(days=1))
    d = gw.check("cus_1", 1)
    assert (d.allowed, d.reason) == (False, Reason.PERIOD_ENDED)
    assert gw.reserve("cus_1", 1).reason is Reason.PERIOD_ENDED


def test_period_end_without_grace() -> None:
    gw = pin(Gateway(grace_period_s=0), END - timedelta(microseconds=1))
    gw.apply(created())
    assert gw.try_spend("cus_1", 1)
    pin(gw, END)
    assert gw.spend("cus_1", 1).reason is Reason.PERIOD_ENDED


def test_invoice_paid_reopens_an_ended_period(gw: Gateway) -> None:
    from .conftest import paid

    pin(gw, END + timedelta(days=2))
    assert gw.spend("cus_1", 1).reason is Reason.PERIOD_ENDED
    gw.apply(paid(start=END))
    assert gw.try_spend("cus_1", 1)


def test_reserve_commit_partial(gw: Gateway) -> None:
    d = gw.reserve("cus_1", to_micros(30))
    assert d.allowed and d.reason is Reason.OK and d.remaining == to_micros(70)
    assert isinstance(d.reservation_id, int)
    b = gw.budget("cus_1")
    assert b is not None and (b.spent, b.reserved, b.remaining) == (0, to_micros(30), to_micros(70))
    assert not gw.try_spend("cus_1", to_micros(71)), "the hold counts against the budget"
    gw.commit(d.reservation_id, to_micros(12))
    b = gw.budget("cus_1")
    assert b is not None and (b.spent, b.reserved, b.remaining) == (to_micros(12), 0, to_micros(88))


def test_commit_the_whole_and_zero(gw: Gateway) -> None:
    a = gw.reserve("cus_1", 10).reservation_id
    z = gw.reserve("cus_1", 10).reservation_id
    assert a is not None and z is not None and a != z
    gw.commit(a, 10)
    gw.commit(z, 0)
    b = gw.budget("cus_1")
    assert b is not None and (b.spent, b.reserved) == (10, 0)


def test_release(gw: Gateway) -> None:
    rid = gw.reserve("cus_1", HUNDRED).reservation_id
    assert rid is not None
    assert not gw.try_spend("cus_1", 1)
    gw.release(rid)
    assert gw.budget("cus_1").reserved == 0  # type: ignore[union-attr]
    assert gw.try_spend("cus_1", HUNDRED)


def test_double_commit_and_release_after_commit(gw: Gateway) -> None:
    rid = gw.reserve("cus_1", 10).reservation_id
    assert rid is not None
    gw.commit(rid, 5)
    with pytest.raises(UnknownReservation):
        gw.commit(rid, 5)
    with pytest.raises(UnknownReservation):
        gw.release(rid)
    with pytest.raises(KeyError):
        gw.release(987_654)
    with pytest.raises(UnknownReservation):
        gw.commit(-1, 0)
    assert gw.budget("cus_1").spent == 5  # type: ignore[union-attr]


def test_commit_more_than_reserved_keeps_the_hold(gw: Gateway) -> None:
    rid = gw.reserve("cus_1", 10).reservation_id
    assert rid is not None
    with pytest.raises(InvalidAmount, match="exceeds"):
        gw.commit(rid, 11)
    gw.commit(rid, 10)  # still there, still committable
    assert gw.budget("cus_1").spent == 10  # type: ignore[union-attr]


def test_reservation_expiry_with_a_pinned_clock(gw: Gateway) -> None:
    rid = gw.reserve("cus_1", HUNDRED, ttl_s=5).reservation_id
    assert rid is not None
    pin(gw, NOW + timedelta(seconds=4.999))
    assert not gw.try_spend("cus_1", 1)
    pin(gw, NOW + timedelta(seconds=5))
    assert gw.try_spend("cus_1", 1), "the expired hold released itself"
    with pytest.raises(UnknownReservation, match=r"expired|unknown"):
        gw.commit(rid, 1)
    assert gw.budget("cus_1").reserved == 0  # type: ignore[union-attr]


def test_commit_of_an_expired_reservation_releases_it(gw: Gateway) -> None:
    rid = gw.reserve("cus_1", 50, ttl_s=1).reservation_id
    assert rid is not None
    pin(gw, NOW + timedelta(seconds=2))
    with pytest.raises(UnknownReservation, match="expired"):
        gw.commit(rid, 10)
    assert gw.budget("cus_1").reserved == 0  # type: ignore[union-attr]
    assert gw.budget("cus_1").spent == 0  # type: ignore[union-attr]


def test_reservation_expiry_on_the_system_clock() -> None:
    gw = Gateway()
    gw.apply(created(start=NOW - timedelta(days=400), end=NOW + timedelta(days=3650)))
    rid = gw.reserve("cus_1", HUNDRED, ttl_s=0.05).reservation_id
    assert rid is not None
    assert not gw.try_spend("cus_1", 1)
    time.sleep(0.1)
    assert gw.try_spend("cus_1", 1)
    with pytest.raises(UnknownReservation):
        gw.release(rid)


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), float("inf")])
def test_bad_ttl(gw: Gateway, ttl: float) -> None:
    with pytest.raises(InvalidArgument, match="ttl_s"):
        gw.reserve("cus_1", 1, ttl_s=ttl)
    assert gw.budget("cus_1").reserved == 0  # type: ignore[union-attr]


@pytest.mark.parametrize("method", ["try_spend", "spend", "check", "reserve"])
def test_amount_validation(gw: Gateway, method: str) -> None:
    fn = getattr(gw, method)
    with pytest.raises(InvalidAmount):
        fn("cus_1", -1)
    with pytest.raises(InvalidAmount):
        fn("cus_1", 2**64)
    for bad in (1.5, "5", None, to_micros("0.5") * 1.0):
        with pytest.raises(TypeError):
            fn("cus_1", bad)
    with pytest.raises(TypeError):
        fn(5, 1)
    assert gw.budget("cus_1").spent == 0  # type: ignore[union-attr]


def test_commit_argument_validation(gw: Gateway) -> None:
    rid = gw.reserve("cus_1", 10).reservation_id
    assert rid is not None
    with pytest.raises(InvalidAmount):
        gw.commit(rid, -1)
    with pytest.raises(TypeError):
        gw.commit(rid, 1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        gw.commit(None, 1)  # type: ignore[arg-type]
    gw.commit(rid, 10)


def test_budget_total_lowered_below_spend(gw: Gateway) -> None:
    gw.try_spend("cus_1", to_micros(80))
    gw.apply(updated(new_total_budget="50"))
    d = gw.check("cus_1", 0)
    assert (d.allowed, d.remaining) == (False, 0)
    assert gw.budget("cus_1").remaining == 0  # type: ignore[union-attr]


# ---- concurrency --------------------------------------------------------------------


def test_threads_never_overspend() -> None:
    gw = pin(Gateway())
    gw.apply(created(total="1"))  # 1_000_000 micros
    amount, threads, tries = 7, 8, 40_000
    barrier = threading.Barrier(threads)

    def worker(i: int) -> int:
        barrier.wait()
        granted = 0
        for _ in range(tries):
            if i % 3 == 0:
                d = gw.reserve("cus_1", amount)
                if d.reservation_id is not None:
                    gw.commit(d.reservation_id, amount)
                    granted += 1
            elif gw.try_spend("cus_1", amount):
                granted += 1
        return granted

    with ThreadPoolExecutor(threads) as pool:
        total_granted = sum(pool.map(worker, range(threads)))
    b = gw.budget("cus_1")
    assert b is not None
    assert total_granted == to_micros(1) // amount, "exactly as many grants as fit"
    assert (b.spent, b.reserved) == (total_granted * amount, 0)
    assert b.spent <= b.total


def test_threads_apply_while_spending() -> None:
    gw = pin(Gateway())
    gw.apply(created(total="1000"))
    stop = threading.Event()
    spent = [0]

    def spender() -> None:
        while not stop.is_set():
            if gw.try_spend("cus_1", 3):
                spent[0] += 3

    t = threading.Thread(target=spender)
    t.start()
    for i in range(200):
        gw.apply(updated(new_plan_name=f"n{i}", ts=NOW + timedelta(seconds=i)))
    stop.set()
    t.join()
    b = gw.budget("cus_1")
    assert b is not None and b.spent == spent[0] and b.plan_name == "n199"
    assert micros(b.period_start) < micros(b.period_end)


# ---- arguments: bool is not an int, and every bad argument is one of the package's errors ---------


@pytest.mark.parametrize("flag", [True, False])
def test_a_bool_is_not_an_amount_or_a_reservation_id(gw: Gateway, flag: bool) -> None:
    rid = gw.reserve("cus_1", 10).reservation_id
    assert rid == 1
    for call in (
        lambda: gw.try_spend("cus_1", flag),
        lambda: gw.spend("cus_1", flag),
        lambda: gw.check("cus_1", flag),
        lambda: gw.reserve("cus_1", flag),
        lambda: gw.commit(flag, 0),  # True used to commit reservation 1
        lambda: gw.commit(rid, flag),
        lambda: gw.release(flag),
    ):
        with pytest.raises(TypeError, match="bool"):
            call()
    b = gw.budget("cus_1")
    assert b is not None and (b.spent, b.reserved) == (0, 10)
    gw.commit(rid, 10)


def test_int_subclasses_other_than_bool_are_ints(gw: Gateway) -> None:
    class Micros(int):
        pass

    assert gw.try_spend("cus_1", Micros(5))
    rid = gw.reserve("cus_1", Micros(5)).reservation_id
    assert rid is not None
    gw.commit(Micros(rid), Micros(5))
    assert gw.budget("cus_1").spent == 10  # type: ignore[union-attr]


LONE_SURROGATE = "\ud800"


def test_a_tenant_id_that_is_not_unicode_is_an_invalid_argument(gw: Gateway) -> None:
    for call in (
        lambda: gw.try_spend(LONE_SURROGATE, 1),
        lambda: gw.spend("cus_1" + LONE_SURROGATE, 1),
        lambda: gw.check(LONE_SURROGATE, 1),
        lambda: gw.reserve(LONE_SURROGATE, 1),
        lambda: gw.budget(LONE_SURROGATE),
    ):
        with pytest.raises(InvalidArgument, match="tenant_id"):
            call()
    with pytest.raises(TypeError, match="tenant_id"):
        gw.try_spend(b"cus_1", 1)  # type: ignore[arg-type]
    # An unknown but valid tenant keeps its behaviour.
    assert gw.spend("\u00e9" * 300, 1).reason is Reason.UNKNOWN_TENANT
    assert gw.budget("") is None


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_parked": 2**64}, InvalidArgument),
        ({"max_parked": True}, TypeError),
        ({"max_parked": 1.0}, TypeError),
        ({"dedupe_window": 2**70}, InvalidArgument),
        ({"dedupe_window": -(2**70)}, InvalidArgument),
        ({"max_parked_bytes": -1}, InvalidArgument),
        ({"max_parked_bytes": 2**64}, InvalidArgument),
        ({"grace_period_s": 10**400}, InvalidArgument),
        ({"grace_period_s": 1e300}, InvalidArgument),
        ({"grace_period_s": True}, TypeError),
        ({"grace_period_s": "5"}, TypeError),
        ({"unknown_tenant": LONE_SURROGATE}, InvalidArgument),
    ],
)
def test_out_of_range_constructor_arguments(kwargs: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        Gateway(**kwargs)  # type: ignore[arg-type]


def test_out_of_range_arguments_are_the_package_errors(gw: Gateway) -> None:
    for ttl in (10**400, 1e300, -(10**400)):
        with pytest.raises(InvalidArgument, match="ttl_s"):
            gw.reserve("cus_1", 1, ttl_s=ttl)
    with pytest.raises(TypeError, match="ttl_s"):
        gw.reserve("cus_1", 1, ttl_s=True)
    for cursor in (2**64, -(2**70), -1):
        with pytest.raises(InvalidArgument, match="cursor"):
            gw.snapshot(cursor)
    with pytest.raises(TypeError, match="cursor"):
        gw.snapshot(True)
    with pytest.raises(UnknownReservation):
        gw.commit(2**64, 0)
    with pytest.raises(UnknownReservation):
        gw.release(-(2**70))
    with pytest.raises(InvalidAmount):
        gw.commit(1, 2**64)
    for remaining in (-1, 2**64):
        with pytest.raises(InvalidAmount):
            Decision(True, Reason.OK, remaining)
    with pytest.raises(TypeError):
        Decision(True, Reason.OK, True)
    with pytest.raises(InvalidArgument):
        Decision(True, Reason.OK, 1, 2**64)
    with pytest.raises(InvalidArgument):
        gw._set_clock(2**64)
    assert gw.budget("cus_1").reserved == 0  # type: ignore[union-attr]


def test_unknown_reservation_says_which_case_it_is(gw: Gateway) -> None:
    def reason(call: Callable[..., None], *args: int) -> str:
        with pytest.raises(UnknownReservation) as raised:
            call(*args)
        assert isinstance(raised.value, KeyError)
        return raised.value.reason

    holds = [gw.reserve("cus_1", 10, ttl_s=ttl).reservation_id for ttl in (60, 60, 1, 1)]
    committed, released, expired, swept = (rid for rid in holds if rid is not None)
    gw.commit(committed, 4)
    gw.release(released)
    pin(gw, NOW + timedelta(seconds=1))
    assert reason(gw.commit, expired, 1) == "expired"
    assert gw.try_spend("cus_1", 0), "expires the other short hold"
    for rid, fate in [
        (committed, "committed"),
        (released, "released"),
        (expired, "expired"),
        (swept, "expired"),
    ]:
        assert reason(gw.commit, rid, 0) == fate
        assert reason(gw.release, rid) == fate
    for never_issued in (swept + 1, 0, -1, 2**64, -(2**70)):
        assert reason(gw.release, never_issued) == "unknown"
    with pytest.raises(UnknownReservation, match=f"reservation {committed} was already committed"):
        gw.commit(committed, 1)
    b = gw.budget("cus_1")
    assert b is not None and (b.spent, b.reserved) == (4, 0), "late calls change nothing"
    restored = Gateway.restore(gw.snapshot())
    assert reason(restored.release, committed) == "unknown", "a restored gateway remembers none"


def test_resolutions_are_remembered_for_65536_later_reservations(gw: Gateway) -> None:
    first = gw.reserve("cus_1", 1).reservation_id
    assert first is not None
    gw.release(first)
    for _ in range(65_535):
        rid = gw.reserve("cus_1", 1).reservation_id
        assert rid is not None
        gw.commit(rid, 0)
    with pytest.raises(UnknownReservation) as raised:
        gw.release(first)
    assert raised.value.reason == "released"
    last = gw.reserve("cus_1", 1).reservation_id
    assert last is not None
    gw.commit(last, 0)
    with pytest.raises(UnknownReservation) as raised:
        gw.release(first)
    assert raised.value.reason == "unknown"


def test_unknown_reservation_keeps_its_reason_through_pickle() -> None:
    error = UnknownReservation("reservation 7 was already released", "released")
    again = pickle.loads(pickle.dumps(error))
    assert (type(again), str(again), again.reason) == (UnknownReservation, str(error), "released")
    assert UnknownReservation("gone").reason == "unknown"


def test_racing_commits_and_releases_resolve_each_hold_once(gw: Gateway) -> None:
    rids = [rid for _ in range(2_000) if (rid := gw.reserve("cus_1", 1).reservation_id) is not None]
    barrier = threading.Barrier(4)

    def resolve_all(k: int) -> list[str | None]:
        barrier.wait()
        told: list[str | None] = []
        for rid in rids:
            try:
                gw.commit(rid, 1) if k % 2 == 0 else gw.release(rid)
                told.append(None)
            except UnknownReservation as e:
                told.append(e.reason)
        return told

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(resolve_all, range(4)))
    committed = 0
    for i, rid in enumerate(rids):
        winners = [k for k in range(4) if results[k][i] is None]
        assert len(winners) == 1, f"reservation {rid} resolved by {winners}"
        fate = "committed" if winners[0] % 2 == 0 else "released"
        committed += fate == "committed"
        assert {results[k][i] for k in range(4)} - {None} <= {fate, "unknown"}
        with pytest.raises(UnknownReservation) as raised:
            gw.release(rid)
        assert raised.value.reason == fate
    b = gw.budget("cus_1")
    assert b is not None and (b.spent, b.reserved) == (committed, 0)
