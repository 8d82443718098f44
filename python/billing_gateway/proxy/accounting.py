"""A request's hold on the tenant's budget: reserved before forwarding, then settled
exactly once — committed at what the response cost, or released."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from billing_gateway.errors import UnknownReservation
from billing_gateway.gateway import Gateway

from .config import TargetConfig
from .pricing import cost

__all__ = ["Hold", "Usage"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


class Hold:
    """``amount`` micro-units reserved for ``tenant_id`` at ``target``'s prices."""

    __slots__ = (
        "amount",
        "gateway",
        "left",
        "prompt_estimate",
        "reservation_id",
        "settled",
        "target",
        "tenant_id",
    )

    def __init__(
        self, gateway: Gateway, tenant_id: str, target: TargetConfig, reservation_id: int, amount: int,
        prompt_estimate: int, left: int,
    ) -> None:  # fmt: skip
        self.gateway = gateway
        self.tenant_id = tenant_id
        self.target = target
        self.reservation_id = reservation_id
        self.amount = amount
        self.prompt_estimate = prompt_estimate
        self.settled = False
        self.left = left
        """The tenant's remaining budget as this request saw it: after the hold, then after
        its settlement (without a second look at the table)."""

    def commit(self, usage: Usage | None) -> int:
        """Charges what ``usage`` costs (the whole hold for None: a response that did not
        say; never more than the hold, an overage the upstream produced beyond it is
        logged), releases the rest; returns the amount charged."""
        if self.settled:
            return 0
        self.settled = True
        charged = (
            self.amount if usage is None else cost(self.target, usage.prompt_tokens, usage.completion_tokens)
        )
        if charged > self.amount:
            log.warning(
                "upstream %s reported usage costing %d micro-units over a hold of %d for %s; "
                "charging the hold",
                self.target.name,
                charged,
                self.amount,
                self.tenant_id,
            )
            charged = self.amount
        try:
            self.gateway.commit(self.reservation_id, charged)
        except UnknownReservation:
            log.error("hold %d of %s expired before its commit: nothing charged", self.reservation_id,
                      self.tenant_id)  # fmt: skip
            return 0
        self.left += self.amount - charged
        return charged

    def release(self) -> None:
        if self.settled:
            return
        self.settled = True
        with contextlib.suppress(UnknownReservation):  # it expired: released already
            self.gateway.release(self.reservation_id)
        self.left += self.amount
