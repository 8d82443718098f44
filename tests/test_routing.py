"""The Routing section of the API contract, through the Python API of ``Gateway``."""

from __future__ import annotations

import collections
import itertools
import random
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from billing_gateway import (
    ApplyOutcome,
    Gateway,
    InvalidEvent,
    InvalidPolicy,
    Route,
    RoutingPolicy,
    Target,
)

from .conftest import NOW, created, event, pin


def policy(
    pid: str,
    expression: str = "true",
    *targets: str | Target,
    priority: int = 0,
    strategy: str = "failover",
) -> RoutingPolicy:
    ts = tuple(t if isinstance(t, Target) else Target(t) for t in (targets or ("a",)))
    return RoutingPolicy(pid, priority, expression, strategy, ts)  # type: ignore[arg-type]


def upserted(p: RoutingPolicy, *, ts: Any = NOW, event_id: str | None = None) -> bytes:
    data = {
        "id": p.id,
        "priority": p.priority,
        "match_expression": p.match_expression,
        "strategy": p.strategy,
        "targets": [{"name": t.name, "weight": t.weight, "cost": t.cost} for t in p.targets],
    }
    return event("routing_policy.upserted", data, ts=ts, event_id=event_id)


def deleted(pid: str, *, ts: Any = NOW, event_id: str | None = None) -> bytes:
    return event("routing_policy.deleted", {"policy_id": pid}, ts=ts, event_id=event_id)


def test_the_first_matching_policy_in_priority_order_answers() -> None:
    gw = Gateway()
    gw.set_policies(
        [
            policy("b-cheap", "request.model == 'gpt-4o'", "cheap", priority=5),
            policy("a-fast", "request.model == 'gpt-4o'", "fast", priority=5),
            policy("first", "request.tier == 'gold'", "gold", priority=-1),
            policy("catch-all", "true", "default", priority=100),
        ]
    )
    assert [p.id for p in gw.policies()] == ["first", "a-fast", "b-cheap", "catch-all"]
    assert gw.route(None, {"model": "gpt-4o"}) == Route("a-fast", "fast", ())
    assert gw.route(None, {"model": "gpt-4o", "tier": "gold"}) == Route("first", "gold", ())
    assert gw.route(None, {"model": "o1"}) == Route("catch-all", "default", ())
    gw.set_policies([policy("only", "request.model == 'x'")])
    assert gw.route(None, {"model": "o1"}) is None
    assert gw.routing_counters()["no_match"] == 1


def test_route_is_a_frozen_comparable_value() -> None:
    r = Route("p", "a", ("b", "c"))
    assert (r.policy_id, r.target, r.fallbacks) == ("p", "a", ("b", "c"))
    assert r == Route("p", "a", ["b", "c"]) and r != Route("p", "a", ("c", "b"))
    assert hash(r) == hash(Route("p", "a", ("b", "c")))
    assert repr(r) == 'Route(policy_id="p", target="a", fallbacks=("b", "c"))'
    with pytest.raises(AttributeError):
        r.target = "b"  # type: ignore[misc]
    gw = Gateway()
    gw.set_policies([policy("p", "true", "a", "b", "c")])
    assert gw.route("cus_1", {}) == r
    assert gw.policies() == [policy("p", "true", "a", "b", "c")]


def test_failover_takes_the_first_healthy_target_and_the_rest_fall_back_in_order() -> None:
    gw = Gateway()
    gw.set_policies([policy("p", "true", "a", "b", "c")])
    gw.mark_down("a", 60)
    assert gw.route(None, {}) == Route("p", "b", ("c",))
    gw.mark_down("c", 60)
    assert gw.route(None, {}) == Route("p", "b", ())
    gw.mark_up("a")
    assert gw.route(None, {}) == Route("p", "a", ("b",))


def test_least_cost_takes_the_cheapest_healthy_target_ties_in_list_order() -> None:
    gw = Gateway()
    targets = [Target("x", cost=30), Target("y", cost=10), Target("z", cost=10), Target("w", cost=20)]
    gw.set_policies([policy("p", "true", *targets, strategy="least_cost")])
    assert gw.route(None, {}) == Route("p", "y", ("z", "w", "x"))
    gw.mark_down("y", 60)
    assert gw.route(None, {}) == Route("p", "z", ("w", "x"))


def test_weighted_picks_in_proportion_to_weight_and_never_weight_zero() -> None:
    gw = Gateway()
    targets = [Target("a", weight=1), Target("b", weight=3), Target("never", weight=0)]
    gw.set_policies([policy("p", "true", *targets, strategy="weighted")])
    n = 20_000
    picks = collections.Counter()
    for _ in range(n):
        r = gw.route(None, {})
        assert r is not None
        picks[r.target] += 1
        assert sorted((r.target, *r.fallbacks)) == ["a", "b"]
    assert picks["never"] == 0
    # 3:1 within five standard deviations (sd of the share of b: sqrt(.75 * .25 / n) ~ 0.003).
    assert abs(picks["b"] / n - 0.75) < 0.016
    gw.mark_down("b", 60)
    assert {gw.route(None, {}) for _ in range(50)} == {Route("p", "a", ())}
    gw.mark_down("a", 60)
    assert gw.route(None, {}) is None, "weight 0 is never picked, even as the last one"


def test_a_policy_whose_targets_are_all_down_falls_through_and_targets_come_back() -> None:
    gw = Gateway()
    gw.set_policies(
        [
            policy("primary", "request.model == 'gpt-4o'", "a", "b", priority=1),
            policy("backup", "request.model == 'gpt-4o'", "c", priority=2),
        ]
    )
    gw.mark_down("a", 0.3)
    gw.mark_down("b", 60)
    assert gw.route(None, {"model": "gpt-4o"}) == Route("backup", "c", ())
    deadline = time.monotonic() + 30
    while (r := gw.route(None, {"model": "gpt-4o"})) != Route("primary", "a", ()):
        assert time.monotonic() < deadline, r
        time.sleep(0.05)
    gw.mark_down("c", 60)
    gw.mark_down("a", 60)
    assert gw.route(None, {"model": "gpt-4o"}) is None


def test_budget_aware_steering_moves_a_tenant_to_a_cheaper_target_as_it_spends() -> None:
    gw = pin(Gateway())
    gw.apply(created(total="100"))
    gw.set_policies(
        [
            policy("low-budget", "budget.remaining_fraction < 0.2", "cheap", priority=1),
            policy("default", "true", "premium", priority=2),
        ]
    )
    seen = []
    for _ in range(10):
        route = gw.route("cus_1", {"model": "gpt-4o"})
        assert route is not None
        seen.append(route.target)
        assert gw.try_spend("cus_1", 10_000_000)
    assert seen == ["premium"] * 9 + ["cheap"]
    assert gw.route("cus_1", {}) == Route("low-budget", "cheap", ())


def test_budget_fields_and_an_unknown_tenant_or_none_has_no_budget() -> None:
    gw = pin(Gateway())
    gw.apply(created(total="100"))
    assert gw.try_spend("cus_1", 25_000_000)
    gw.set_policies(
        [
            policy(
                "fields",
                "budget.total == 100000000 && budget.spent == 25000000 && budget.reserved == 0"
                " && budget.remaining == 75000000 && budget.remaining_fraction == 0.75"
                " && budget.plan_id == 'plan_pro' && budget.status == 'active'"
                " && budget.currency == 'USD' && budget.plan_name.size() > 0",
                "known",
                priority=1,
            ),
            policy("no-budget", "!has(budget.total)", "anonymous", priority=2),
        ]
    )
    assert gw.route("cus_1", {}) == Route("fields", "known", ())
    assert gw.route("cus_unknown", {}) == Route("no-budget", "anonymous", ())
    assert gw.route(None, {}) == Route("no-budget", "anonymous", ())
    errors = gw.routing_counters()["evaluation_errors"]
    assert errors == 2, "budget.total of no budget is an evaluation error, counted"


@pytest.mark.parametrize(
    "attrs",
    [
        {},
        {"model": 5},
        {"model": None},
        {"model": ["gpt-4o"]},
        {"model": {"name": "gpt-4o"}},
        {"model": {1, 2}},
        {"model": 2**70},
        {"model": "gpt-4o", "tokens": "many"},
        {"model": "gpt-4o", "tokens": 2**63 - 1},
    ],
)
def test_evaluation_errors_are_no_match_never_raised(attrs: dict[str, object]) -> None:
    gw = Gateway()
    gw.set_policies(
        [
            policy("p", "request.model.startsWith('gpt') && request.tokens + 1 > 10", "a", priority=1),
            policy("fallback", "true", "b", priority=2),
        ]
    )
    assert gw.route("cus_1", attrs) == Route("fallback", "b", ())


def test_request_values_of_every_kind() -> None:
    gw = Gateway()
    gw.set_policies(
        [
            policy(
                "p",
                "request.meta.team == 'ml' && request.tags[1] == 'b' && 'x' in request.tags"
                " && request.ratio > 0.25 && request.stream && request.user == null"
                " && request['max-tokens'] in [100, 200] && request.tags.size() == 3"
                " && request.model.matches('^gpt-4(o|-turbo)$')",
            )
        ]
    )
    attrs = {
        "meta": {"team": "ml", "nested": {"deep": [1, 2.5, None]}},
        "tags": ("a", "b", "x"),
        "ratio": 0.5,
        "stream": True,
        "user": None,
        "max-tokens": 200,
        "model": "gpt-4-turbo",
        "unread": object(),
    }
    assert gw.route(None, attrs) is not None
    assert gw.routing_counters()["evaluation_errors"] == 0
    assert gw.route(None, attrs | {"model": "gpt-4"}) is None


def test_string_attributes_beyond_those_lent_and_str_subclasses_compare_as_strings() -> None:
    keys = [f"k{i}" for i in range(12)]
    gw = Gateway()
    gw.set_policies(
        [
            policy("miss", " && ".join(f"request.{k} == '{k}'" for k in keys) + " && false", "a", priority=1),
            policy("all", " && ".join(f"request.{k} == '{k}'" for k in reversed(keys)), "b", priority=2),
        ]
    )

    class Name(str):
        pass

    attrs: dict[str, object] = {k: "".join(k) for k in keys} | {"k11": Name("k11")}
    assert gw.route(None, attrs) == Route("all", "b", ())
    assert gw.route(None, attrs | {"k0": "other"}) is None
    assert gw.routing_counters()["evaluation_errors"] == 0


def test_a_string_read_stays_valid_when_a_key_comparison_empties_the_mapping() -> None:
    """A key whose ``__eq__`` clears the dict during a lookup frees nothing read before."""
    gw = Gateway()
    gw.set_policies(
        [
            policy("both", "request.region == 'eu' && request.model == 'x'", "a", priority=1),
            policy("region", "request.region == 'eu'", "b", priority=2),
        ]
    )
    attrs: dict[object, object] = {}

    class Clearing:
        def __hash__(self) -> int:
            return hash("model")

        def __eq__(self, other: object) -> bool:
            attrs.clear()
            return False

    attrs.update({"region": "".join(["e", "u"]), Clearing(): 1})
    assert gw.route(None, attrs) == Route("region", "b", ())
    assert gw.routing_counters()["evaluation_errors"] == 1


@pytest.mark.parametrize(
    ("bad", "problem", "position"),
    [
        (policy("p", "request.model =="), "match_expression: ", 16),
        (policy("p", "request.model == 'a' && foo"), 'unknown variable "foo"', 24),
        (policy("p", "request.tokens + 1"), "not boolean (it is arithmetic)", 15),
        (policy("p", "'gpt'"), "not boolean (it is string)", 0),
        (policy("p", "budget.limit > 1"), 'budget has no field "limit"', None),
        (policy("p", "request.model.matches('(')"), "invalid regular expression", 22),
        (policy("p", "request.tags.exists(t, t == 'a')"), "not supported", None),
        (policy("p", strategy="random"), 'unknown strategy "random"', None),
        (RoutingPolicy("p", 0, "true", "failover", ()), "targets: must name at least one", None),
        (policy("p", "true", Target("a", weight=-1)), "targets[0].weight: must be >= 0", None),
        (policy("p", "true", Target("a", cost=-5)), "targets[0].cost: must be >= 0", None),
        (policy("p", "true", "a", "a"), 'targets[1].name: repeats target "a"', None),
        (policy("", "true"), "id: must not be empty", None),
        (RoutingPolicy("p", "1", "true", "failover", (Target("a"),)), "priority: must be an int", None),  # type: ignore[arg-type]
        (RoutingPolicy("p", 0, "true", "failover", "ab"), "targets[0]", None),  # type: ignore[arg-type]
    ],
)
def test_a_bad_policy_is_refused_naming_it_and_the_set_in_force_stays(
    bad: RoutingPolicy, problem: str, position: int | None
) -> None:
    gw = Gateway()
    good = [policy("good", "true", "a")]
    gw.set_policies(good)
    with pytest.raises(InvalidPolicy) as raised:
        gw.set_policies([policy("other", "true", "b"), bad])
    err = raised.value
    assert isinstance(err, ValueError)
    assert err.policy_id == bad.id or (bad.id == "" and err.policy_id == "")
    assert problem in err.problem, err.problem
    assert problem in str(err)
    if position is not None:
        assert err.position == position, err
    assert gw.policies() == good


def test_set_policies_makes_the_next_snapshot_due() -> None:
    gw = Gateway()
    gw.snapshot()
    assert not gw.dirty
    gw.set_policies([])
    assert gw.dirty, "local policies are in snapshots"
    gw.snapshot()
    with pytest.raises(InvalidPolicy):
        gw.set_policies([policy("p"), policy("p")])
    assert not gw.dirty, "a refused set changes nothing"
    gw.mark_down("a", 60)
    assert not gw.dirty, "health is not in snapshots"


def test_a_repeated_id_is_refused() -> None:
    gw = Gateway()
    with pytest.raises(InvalidPolicy, match="repeats the id") as raised:
        gw.set_policies([policy("p"), policy("q"), policy("p", "false")])
    assert raised.value.policy_id == "p"
    assert gw.policies() == []


def test_positions_count_characters() -> None:
    with pytest.raises(InvalidPolicy) as raised:
        Gateway().set_policies([policy("p", "request.m == 'éé' && nope")])
    assert raised.value.position == 21


def test_policy_events_converge_whatever_the_order_and_duplicates() -> None:
    p1 = policy("p", "request.model == 'a'", "v1", priority=1)
    p2 = policy("p", "request.model == 'a'", "v2", priority=1)
    q = policy("q", "true", "q", priority=2)
    t0 = NOW
    events = [
        upserted(p1, ts=t0, event_id="e1"),
        upserted(p2, ts=t0 + timedelta(seconds=1), event_id="e2"),
        upserted(q, ts=t0, event_id="e3"),
        deleted("q", ts=t0 + timedelta(seconds=2), event_id="e4"),
        upserted(q, ts=t0 + timedelta(seconds=1), event_id="e5"),
    ]
    expected = [p2]
    rng = random.Random(7)
    for _ in range(30):
        order = events + rng.sample(events, 3)
        rng.shuffle(order)
        gw = Gateway()
        outcomes = [gw.apply(e) for e in order]
        assert gw.policies() == expected
        assert outcomes.count(ApplyOutcome.DUPLICATE) == 3
        assert gw.route(None, {"model": "a"}) == Route("p", "v2", ())


def test_events_win_over_local_policies_with_the_same_id() -> None:
    gw = Gateway()
    gw.set_policies([policy("shared", "true", "local", priority=1), policy("mine", "true", "m", priority=2)])
    assert gw.apply(upserted(policy("shared", "true", "billing", priority=3))) == ApplyOutcome.APPLIED
    assert [(p.id, p.targets[0].name) for p in gw.policies()] == [("mine", "m"), ("shared", "billing")]
    assert gw.apply(deleted("shared", ts=NOW + timedelta(seconds=1))) == ApplyOutcome.APPLIED
    assert [p.id for p in gw.policies()] == ["mine"]
    assert gw.apply(upserted(policy("shared"), ts=NOW)) == ApplyOutcome.STALE


def test_a_policy_event_that_does_not_compile_is_invalid_and_changes_nothing() -> None:
    gw = Gateway()
    gw.apply(upserted(policy("p", "true", "a")))
    for bad, field in [
        (policy("p", "request.model ==", "b"), "data.match_expression"),
        (policy("p", "size(request.x)", "b"), "data.match_expression"),
        (policy("p", "true", "b", strategy="nope"), "data.strategy"),
    ]:
        with pytest.raises(InvalidEvent, match=field):
            gw.apply(upserted(bad, ts=NOW + timedelta(seconds=1)))
    assert gw.policies() == [policy("p", "true", "a")]


def test_snapshots_keep_policies_and_tombstones() -> None:
    gw = Gateway()
    gw.set_policies([policy("local", "request.x == 1", "l", priority=1)])
    gw.apply(upserted(policy("kept", "true", Target("k", weight=2, cost=7), priority=2)))
    gw.apply(deleted("gone", ts=NOW + timedelta(seconds=5)))
    restored = Gateway.restore(gw.snapshot(42))
    assert restored.cursor == 42
    assert restored.policies() == gw.policies()
    assert restored.route(None, {"x": 1}) == Route("local", "l", ())
    # The tombstone outlives the restore: an older upsert of "gone" stays dead.
    assert restored.apply(upserted(policy("gone"), ts=NOW)) == ApplyOutcome.STALE
    assert [p.id for p in restored.policies()] == ["local", "kept"]


def test_set_policies_while_eight_threads_route() -> None:
    """Readers always see one whole set (both policies of a generation agree) and are
    never blocked by the writer."""
    gw = Gateway()

    def generation(n: int) -> list[RoutingPolicy]:
        return [
            policy("a", f"request.n >= 0 && {n} >= 0", f"t{n}", priority=1),
            policy("b", "true", f"u{n}", priority=2),
        ]

    gw.set_policies(generation(0))
    stop = threading.Event()
    failures: list[str] = []
    counts = [0] * 8

    def reader(k: int) -> None:
        while not stop.is_set():
            r = gw.route(None, {"n": k})
            if r is None or not r.target.startswith("t"):
                failures.append(repr(r))
            policies = gw.policies()
            gens = {p.targets[0].name[1:] for p in policies}
            if len(gens) != 1:
                failures.append(f"torn set {gens}")
            counts[k] += 1

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for n in itertools.count(1):
        gw.set_policies(generation(n))
        if n >= 300 and min(counts) >= 100:
            break
        time.sleep(0.001)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert failures == []
    assert min(counts) >= 100


def test_mark_down_arguments_are_checked() -> None:
    gw = Gateway()
    with pytest.raises(ValueError, match="for_s"):
        gw.mark_down("a", -1)
    with pytest.raises(TypeError):
        gw.mark_down(1, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="attrs must be a mapping"):
        gw.route(None, ["model"])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        gw.route(5, {})  # type: ignore[arg-type]
