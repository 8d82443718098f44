"""Budgets shared by replicas: Redis leases (``BudgetLeases``), spent at in-process speed.

``script`` is the one Lua script (grant, renew, report, return), ``policy`` sizes the
slices by demand, ``service`` runs them for a gateway, ``stats`` counts what they did,
``names`` checks the settings. ``BudgetLeases`` needs the ``redis`` package (the
``[daemon]`` extra) and is imported on first use, so the rest loads without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .names import MODES, checked_key_prefix, checked_lease_ttl, checked_replica_id
from .stats import LeaseStats

if TYPE_CHECKING:
    from .service import BudgetLeases

__all__ = [
    "MODES",
    "BudgetLeases",
    "LeaseStats",
    "checked_key_prefix",
    "checked_lease_ttl",
    "checked_replica_id",
]


def __getattr__(name: str) -> object:
    if name == "BudgetLeases":
        from .service import BudgetLeases

        return BudgetLeases
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
