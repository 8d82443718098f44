"""One definition of each vocabulary the Rust core and Python share: reasons, apply
outcomes, subscription statuses and ``UnknownReservation`` reasons are spelled once in
Rust and once in Python, and must name the same things, both ways."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import get_args

from billing_gateway import ApplyOutcome, Reason, _core, events
from billing_gateway.billing import domain
from billing_gateway.errors import UnknownReservationReason


def test_every_reason_and_outcome_is_defined_on_both_sides() -> None:
    assert sorted(_core.REASONS) == sorted(r.value for r in Reason)
    assert sorted(_core.OUTCOMES) == sorted(o.value for o in ApplyOutcome)
    assert len(set(_core.REASONS)) == len(_core.REASONS)
    assert len(set(_core.OUTCOMES)) == len(_core.OUTCOMES)


def test_unknown_reservation_reasons_are_the_cores() -> None:
    assert sorted(_core.UNKNOWN_RESERVATION_REASONS) == sorted(get_args(UnknownReservationReason))


def test_subscription_statuses_agree_across_events_the_core_and_billing() -> None:
    assert sorted(_core.STATUSES) == sorted(get_args(events.Status))
    assert set(domain.STATUSES) <= set(_core.STATUSES), "billing's statuses are ones events carry"
    assert set(domain.LIVE_STATUSES) == set(_core.SPENDING_STATUSES), (
        "billing's live subscriptions are exactly those a gateway lets spend"
    )


def test_a_python_enum_missing_a_member_fails_the_import() -> None:
    """The bindings look every member up by value when ``_core`` is imported."""
    script = textwrap.dedent(
        """
        import importlib.util, sys
        from enum import StrEnum
        (package,) = importlib.util.find_spec("billing_gateway").submodule_search_locations
        spec = importlib.util.spec_from_file_location("billing_gateway.models", package + "/models.py")
        models = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(models)
        models.Reason = StrEnum("Reason", {"OK": "ok", "INSUFFICIENT_BUDGET": "insufficient_budget"})
        sys.modules["billing_gateway.models"] = models
        import billing_gateway._core
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert "ImportError: billing_gateway.models.Reason has no member with the value" in run.stderr
    assert "'unknown_tenant'" in run.stderr or '"unknown_tenant"' in run.stderr
