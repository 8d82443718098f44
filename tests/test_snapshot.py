"""Snapshots: a whole, versioned copy of the state that restores exactly, and nothing else."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from billing_gateway import ApplyOutcome, Gateway, InvalidArgument, InvalidSnapshot, to_micros

from .conftest import NOW, created, micros, paid, pin, updated


def busy_gateway() -> Gateway:
    gw = pin(Gateway(grace_period_s=3600, unknown_tenant="allow", max_parked=7))
    gw.apply(created(event_id="evt_created"))
    gw.apply(created("sub_2", "cus_2", total="5"))
    gw.apply(created("sub_0", "cus_1", ts=NOW - timedelta(days=90)))  # superseded at birth
    gw.apply(updated("sub_parked", new_total_budget="1", event_id="evt_parked"))
    gw.try_spend("cus_1", to_micros(10))
    gw.apply(paid(start=NOW + timedelta(days=16)))  # journals the 10 spent so far
    gw.try_spend("cus_1", 3)
    return gw


def test_round_trip_with_reservations_dedupe_parked_and_journal() -> None:
    gw = busy_gateway()
    held = gw.reserve("cus_1", 20, ttl_s=30)
    held_unknown = gw.reserve("someone", 4)
    data = gw.snapshot(cursor=1234)
    restored = pin(Gateway.restore(data))
    assert restored.cursor == 1234
    assert Gateway().cursor == 0
    assert restored.budgets() == gw.budgets()
    assert len(restored) == len(gw) == 2
    # Dedupe state survived.
    assert restored.apply(created(event_id="evt_created")) is ApplyOutcome.DUPLICATE
    assert restored.apply(updated("sub_parked", event_id="evt_parked")) is ApplyOutcome.DUPLICATE
    # Superseded subscriptions are still known as such.
    assert restored.apply(updated("sub_0", new_total_budget="1")) is ApplyOutcome.STALE
    # Parked events survived, and apply when their subscription arrives.
    assert restored.apply(created("sub_parked", "cus_3", ts=NOW - timedelta(days=1))) is ApplyOutcome.APPLIED
    assert restored.budget("cus_3").total == to_micros(1)  # type: ignore[union-attr]
    # Reservations survived, with their ids and expiries.
    assert held.reservation_id is not None and held_unknown.reservation_id is not None
    restored.commit(held.reservation_id, 15)
    restored.release(held_unknown.reservation_id)
    new_id = restored.reserve("cus_1", 1).reservation_id
    assert new_id is not None and new_id > held.reservation_id, "ids are never reused"
    pin(restored, NOW + timedelta(seconds=31))
    # Config survived: unknown tenants allowed, one hour of grace, max_parked 7.
    assert restored.try_spend("stranger", 1)
    # Journal and undrained spend survived.
    usage = {(u.subscription_id, u.amount) for u in restored.drain_usage()}
    assert usage == {("sub_1", to_micros(10)), ("sub_1", 18)}


def test_expired_reservations_are_not_restored() -> None:
    gw = busy_gateway()
    rid = gw.reserve("cus_1", 20, ttl_s=1).reservation_id
    assert rid is not None
    pin(gw, NOW + timedelta(seconds=2))
    restored = pin(Gateway.restore(gw.snapshot()), NOW + timedelta(seconds=2))
    assert restored.budget("cus_1").reserved == 0  # type: ignore[union-attr]


def test_snapshot_is_stable_and_bytes_like_inputs_restore() -> None:
    gw = busy_gateway()
    data = gw.snapshot(5)
    assert isinstance(data, bytes)
    for form in (bytearray(data), memoryview(data)):
        assert Gateway.restore(form).budgets() == Gateway.restore(data).budgets()


def test_empty_gateway_round_trip() -> None:
    assert len(Gateway.restore(Gateway().snapshot())) == 0


@pytest.mark.parametrize("cursor", [-1])
def test_bad_cursor(cursor: int) -> None:
    with pytest.raises(InvalidArgument):
        Gateway().snapshot(cursor)


def test_garbage_and_truncated_snapshots_are_rejected() -> None:
    data = busy_gateway().snapshot(9)
    candidates: list[object] = [
        b"",
        b"garbage",
        b"BGWSNAP\x00",
        data[:-1],
        data[: len(data) // 2],
        data + b"\x00",
        data[:8] + b"\x04\x00\x00\x00" + data[12:],  # a future format version
        "a string",
        None,
        12,
    ]
    rng = random.Random(7)
    for _ in range(200):
        flipped = bytearray(data)
        flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        candidates.append(bytes(flipped))
    for cut in range(0, len(data), max(1, len(data) // 50)):
        candidates.append(data[:cut])
    for bad in candidates:
        with pytest.raises(InvalidSnapshot):
            Gateway.restore(bad)  # type: ignore[arg-type]


def test_version_error_says_so() -> None:
    data = Gateway().snapshot()
    with pytest.raises(InvalidSnapshot, match="version 4"):
        Gateway.restore(data[:8] + b"\x04\x00\x00\x00" + data[12:])


def test_restore_uses_the_system_clock_again() -> None:
    gw = Gateway()
    gw.apply(created(start=NOW - timedelta(days=999), end=NOW + timedelta(days=9999)))
    restored = Gateway.restore(gw.snapshot())
    assert restored.try_spend("cus_1", 1)
    assert micros(restored.budget("cus_1").period_start) < micros(NOW)  # type: ignore[union-attr]
