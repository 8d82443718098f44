"""What a replica's leases did, for ``/metrics`` (counters only grow)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from billing_gateway.models import Reason

__all__ = ["LeaseStats"]


@dataclass
class LeaseStats:
    """``grants``: calls that raised an allowance (``granted`` micro-units in all);
    ``returns``: slices given back (``returned`` micro-units); ``round_trips``: script
    calls sent (retries included); ``errors``: calls that failed (Redis unreachable);
    ``expired``: times a lease passed its local deadline unrenewed and spending stopped;
    ``refusals``: refused ``spend``/``reserve`` calls through the leases, by reason, and
    slices found used up by the table's own spends (``lease_exhausted``)."""

    grants: int = 0
    granted: int = 0
    returns: int = 0
    returned: int = 0
    round_trips: int = 0
    errors: int = 0
    expired: int = 0
    refusals: Counter[Reason] = field(default_factory=Counter)
