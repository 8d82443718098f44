"""How big a slice a replica asks for, and when: sized by its recent demand.

Like Google's Doorman (leases of a few lease periods, refreshed well before they end,
shares proportional to demand), adapted to money: a replica asks for what it expects
to spend over ``horizon_s`` at its recent rate (an exponentially weighted moving
average of its spend per second), asks again when less than half of that is left,
and gives back what it holds beyond its use once it has been idle for a while, so
nothing is stranded on idle replicas. The script caps every grant at a fair share of
what is left (``available / live leases``), so one busy replica cannot take it all.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Demand", "SlicePolicy"]


@dataclass(frozen=True)
class SlicePolicy:
    """``horizon_s``: the spend a slice should cover; ``half_life_s``: how fast the rate
    estimate forgets; ``idle_s``: how long without spend before the slice goes back;
    ``min_slice``: the smallest slice asked for (micro-units), the first one included."""

    horizon_s: float
    half_life_s: float
    idle_s: float
    min_slice: int = 1_000

    def slice_for(self, rate: float, need: int) -> int:
        """The headroom to ask for at ``rate`` µ/s when ``need`` is wanted right now: room
        for the horizon's spend, and for a second request like this one (so a replica
        whose rate is not known yet does not pay a round trip per request)."""
        return max(2 * need, self.min_slice, int(rate * self.horizon_s))

    def runs_low(self, headroom: int, rate: float) -> bool:
        """Whether the headroom left is under half of what the horizon would spend."""
        return rate > 0 and headroom < rate * self.horizon_s / 2


@dataclass
class Demand:
    """A replica's spend rate on one tenant, from its used counter sampled over time."""

    used: int
    at: float
    rate: float = 0.0
    last_spend_at: float = 0.0

    def __post_init__(self) -> None:
        self.last_spend_at = self.at

    def sample(self, used: int, now: float, half_life_s: float) -> None:
        elapsed = now - self.at
        if elapsed <= 0:
            return
        spent = max(used - self.used, 0)
        weight = 0.5 ** (elapsed / half_life_s)
        self.rate = self.rate * weight + (spent / elapsed) * (1 - weight)
        if spent:
            self.last_spend_at = now
        self.used, self.at = used, now

    def idle(self, now: float, idle_s: float) -> bool:
        """Whether nothing was spent for ``idle_s``."""
        return now - self.last_spend_at >= idle_s
