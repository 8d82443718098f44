"""Routing benchmarks (``make bench``): ``Gateway.route`` from Python over ten policies, when
the first matches and when only the last does. Baselines measured in the same run: a no-op
PyO3 method taking the same ``(str, dict)`` arguments (the floor; targets at most 3x and
8x of it), ``cel-python`` evaluating the same expressions in the same order, and a plain
Python function doing the same first-match selection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import celpy
import pytest
from billing_gateway import Gateway, Route, RoutingPolicy, Target
from billing_gateway._core import NoOp

from tests.conftest import created, pin

from .test_bench_gateway import hot

TENANT = "cus_00042"
POLICIES = 10


def expression(i: int) -> str:
    """Policy ``i``'s rule: a model, a region list and a budget fraction, as routing rules go."""
    return (
        f"request.model == 'model-{i}' && request.region in ['eu', 'us'] && budget.remaining_fraction > 0.1"
    )


def attrs(i: int) -> dict[str, Any]:
    """A request only policy ``i`` matches."""
    return {"model": f"model-{i}", "region": "eu", "tokens": 1200, "stream": True}


@pytest.fixture(scope="module")
def gw() -> Gateway:
    g = pin(Gateway())
    g.apply(created("sub_42", TENANT, total="100"))
    g.set_policies(
        RoutingPolicy(f"p{i}", i, expression(i), "failover", (Target(f"t{i}a"), Target(f"t{i}b")))
        for i in range(POLICIES)
    )
    return g


class CelPython:
    """The same policies compiled once with ``cel-python``, tried in order on each request."""

    def __init__(self, remaining_fraction: float) -> None:
        env = celpy.Environment()
        self.programs = [(f"p{i}", env.program(env.compile(expression(i)))) for i in range(POLICIES)]
        self.budget = celpy.json_to_cel({"remaining_fraction": remaining_fraction})

    def route(self, tenant_id: str, request: dict[str, Any]) -> str | None:
        activation = {"request": celpy.json_to_cel(request), "budget": self.budget}
        for policy_id, program in self.programs:
            result = program.evaluate(activation)
            if isinstance(result, celpy.celtypes.BoolType) and result:
                return policy_id
        return None


def plain_python(remaining_fraction: float) -> Callable[[str, dict[str, Any]], str | None]:
    """The same first-match selection hand-written in Python: what the rules would cost
    without an expression language."""
    rules = [(f"p{i}", f"model-{i}") for i in range(POLICIES)]

    def route(tenant_id: str, request: dict[str, Any]) -> str | None:
        for policy_id, model in rules:
            if (
                request.get("model") == model
                and request.get("region") in ("eu", "us")
                and remaining_fraction > 0.1
            ):
                return policy_id
        return None

    return route


@pytest.mark.parametrize("which", [0, POLICIES - 1], ids=["first", "last"])
def test_the_peers_agree(gw: Gateway, which: int) -> None:
    """Each peer picks the policy the gateway picks, so the ratios compare like with like."""
    fraction = gw.budget(TENANT).remaining_fraction  # type: ignore[union-attr]
    found = gw.route(TENANT, attrs(which))
    assert isinstance(found, Route) and found.policy_id == f"p{which}"
    assert CelPython(fraction).route(TENANT, attrs(which)) == f"p{which}"
    assert plain_python(fraction)(TENANT, attrs(which)) == f"p{which}"


def _measure(benchmark: Any, role: str, gw: Gateway, which: int) -> None:
    request = attrs(which)
    fraction = gw.budget(TENANT).remaining_fraction  # type: ignore[union-attr]
    if role == "baseline_noop":
        hot(benchmark, NoOp().route, TENANT, request)
    elif role == "gateway":
        assert hot(benchmark, gw.route, TENANT, request) is not None
    elif role == "cel_python":
        assert hot(benchmark, CelPython(fraction).route, TENANT, request, rounds=20, iterations=5)
    else:
        assert hot(benchmark, plain_python(fraction), TENANT, request)


def _benchmark(group: str, role: str, which: int) -> Callable[[Any, Gateway], None]:
    @pytest.mark.benchmark(group=group)
    def measure(benchmark: Any, gw: Gateway) -> None:
        _measure(benchmark, role, gw, which)

    return measure


# test_route_first__baseline_noop, test_route_first__gateway, ..., test_route_last__plain_python
for _group, _which in (("route_first", 0), ("route_last", POLICIES - 1)):
    for _role in ("baseline_noop", "gateway", "cel_python", "plain_python"):
        globals()[f"test_{_group}__{_role}"] = _benchmark(_group, _role, _which)
