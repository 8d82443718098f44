"""Budgets shared by replicas: Redis leases (``BudgetLeases``), spent at in-process speed.

``script`` is the one Lua script (grant, renew, report, return), ``policy`` sizes the
slices by demand, ``service`` runs them for a gateway, ``stats`` counts what they did.
Needs the ``redis`` package (the ``[daemon]`` extra).
"""

from __future__ import annotations

from .service import MODES, BudgetLeases
from .stats import LeaseStats

__all__ = ["MODES", "BudgetLeases", "LeaseStats"]
