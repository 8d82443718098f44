"""The slice policy: slices sized by demand, refills before they run dry, idleness."""

from __future__ import annotations

import pytest
from billing_gateway.leases.policy import Demand, SlicePolicy

POLICY = SlicePolicy(horizon_s=2.0, half_life_s=0.5, idle_s=1.0, min_slice=1_000)


def test_a_slice_covers_the_horizon_at_the_rate_and_two_requests() -> None:
    assert POLICY.slice_for(rate=0.0, need=0) == 1_000, "the smallest slice"
    assert POLICY.slice_for(rate=0.0, need=5_000) == 10_000, "a new tenant: room for two requests"
    assert POLICY.slice_for(rate=50_000.0, need=5_000) == 100_000, "the horizon's spend"


def test_a_slice_runs_low_under_half_the_horizon() -> None:
    assert not POLICY.runs_low(headroom=60_000, rate=50_000.0)
    assert POLICY.runs_low(headroom=40_000, rate=50_000.0)
    assert not POLICY.runs_low(headroom=0, rate=0.0), "no demand, no refill"


def test_the_rate_follows_demand_and_forgets_it() -> None:
    d = Demand(used=0, at=0.0)
    for second in range(1, 6):
        d.sample(used=second * 10_000, now=float(second), half_life_s=0.5)
    assert d.rate == pytest.approx(10_000, rel=0.01)
    assert not d.idle(now=5.5, idle_s=1.0)
    d.sample(used=50_000, now=7.0, half_life_s=0.5)
    assert d.rate < 10_000 * 0.2, "two idle seconds: four half-lives"
    assert d.idle(now=7.0, idle_s=1.0)
    d.sample(used=49_000, now=8.0, half_life_s=0.5)  # a released hold: no negative spend
    assert d.rate >= 0
