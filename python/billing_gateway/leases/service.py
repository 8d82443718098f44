"""``BudgetLeases``: one budget across replicas, spent locally at in-process speed.

Each replica's table bounds every tenant by an allowance (``min(total, allowance)``):
the slices Redis granted it this period, and in strict mode no further than a window
beyond its last report (a third of its unspent slice), so that Redis knows the most a
crashed replica may have used and gives the rest of its slice back when its lease
expires. A background task keeps the slices sized to demand (``policy``), reports
before the window runs out, renews them before they run dry or expire, gives idle ones
back, and stops a tenant's spending when its lease passes its local deadline unrenewed
(a monotonic clock, with a margin for clock drift). Every call is the one script
(``script``), idempotent, so a call whose answer was lost is simply sent again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from billing_gateway.gateway import Decision, Gateway
from billing_gateway.models import Reason

from .names import MODES, checked_key_prefix, checked_lease_ttl, checked_replica_id
from .policy import Demand, SlicePolicy
from .script import MAX_AMOUNT, SCRIPT, Answer, Call, budget_key, epoch_key, fence_key
from .stats import LeaseStats

__all__ = ["BudgetLeases"]

log = logging.getLogger(__name__)

DRIFT: Final = 0.1
"""The share of a lease TTL kept as a margin against clock drift and scheduling delay:
a replica stops spending a slice at 90% of the TTL after the renewal was sent."""
KEEP_MS: Final = 45 * 86_400 * 1000
"""How long a tenant's shared state outlives its last call (longer than a period)."""

CONNECTIONS: Final = 8
"""Redis connections per replica (calls beyond them wait for one)."""

T = TypeVar("T")


@dataclass
class _Tenant:
    """What a replica tracks of one tenant in one period."""

    period_start: int
    base: int
    """What the table had used in that period before leases were attached (not shared)."""
    demand: Demand
    granted: int | None = None
    """The slices Redis granted this period, base included (None: what the table allows)."""
    window: int = 0
    """Strict mode: how far beyond its last report the table was allowed to run."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    deadline: float = -math.inf
    renewed_at: float = -math.inf
    wanted: int = 0
    """An amount a spend found missing (0: none)."""
    exhausted: bool = False
    """The last answer said the shared budget had no room left: wait for the renewal."""
    starved: bool = False
    """The last refill could not cover the request: what the slice holds is a fragment
    too small to use, given back so that fragments held by replicas add up again."""


class BudgetLeases:
    """Shares ``gateway``'s budgets with the other replicas through Redis at ``redis_url``.

    ``mode="strict"`` (the default): committed spend plus holds across replicas never
    exceed a budget; a crashed replica's slice comes back when its lease expires, but
    for its window (what it may have spent since its last report, at most a third of its
    unspent slice, stranded until the period ends). ``mode="fast"``: a crashed
    replica's unused slice returns when its lease expires, which may overspend by what
    it spent after its last report (at most one slice per replica); slices are sized for
    a longer horizon and kept longer (fewer round trips)."""

    def __init__(
        self,
        gw: Gateway,
        redis_url: str,
        *,
        replica_id: str | None = None,
        mode: str = "strict",
        lease_ttl_s: float = 10.0,
        key_prefix: str = "bg",
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be 'strict' or 'fast', got {mode!r}")
        lease_ttl_s = checked_lease_ttl(lease_ttl_s)
        key_prefix = checked_key_prefix(key_prefix)
        if replica_id is not None:
            replica_id = checked_replica_id(replica_id)
        self.gateway = gw
        self.redis_url = redis_url
        self.replica_id = replica_id or uuid.uuid4().hex
        self.mode = mode
        self.lease_ttl_s = float(lease_ttl_s)
        self.key_prefix = key_prefix
        self.stats = LeaseStats()
        renew = self.lease_ttl_s / 3
        scale = 1 if mode == "strict" else 2
        self.policy = SlicePolicy(horizon_s=2 * renew * scale, half_life_s=renew / 2, idle_s=renew * scale)
        self.renew_every_s = renew
        self.tick_s = min(self.lease_ttl_s / 20, 0.05)
        self._incarnation = uuid.uuid4().hex
        self._seq = 0
        self._tenants: dict[str, _Tenant] = {}
        self._bases: dict[str, tuple[int, int]] = {}
        self._redis: aioredis.Redis | None = None
        self._script: Any = None
        self._down_since: float | None = None
        """When lease calls started failing (None: Redis answers)."""
        self._epoch: list[str] | None = None
        """The epoch key, or none on Redis Cluster; None until the server was asked."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._thread: threading.Thread | None = None

    # ---- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Attaches the leases to the gateway and renews them in the running loop."""
        if self._task is not None:
            raise RuntimeError("BudgetLeases already started")
        self._loop = asyncio.get_running_loop()
        self._stopping, self._stopped = asyncio.Event(), asyncio.Event()
        # A few connections, waited for: a round renewing many tenants queues its calls.
        pool = aioredis.BlockingConnectionPool.from_url(
            self.redis_url,
            max_connections=CONNECTIONS,
            timeout=self.lease_ttl_s / 4,
            socket_timeout=self.lease_ttl_s / 4,
        )
        self._redis = aioredis.Redis.from_pool(pool)
        self._script = self._redis.register_script(SCRIPT)
        for b in self.gateway.budgets():
            state = self.gateway._lease_state(b.tenant_id)
            if state is not None:
                self._bases[b.tenant_id] = (state[2], state[3] + state[4])
        self.gateway._attach_leases()
        self._task = asyncio.create_task(self._run(), name=f"leases-{self.replica_id}")

    def start_in_thread(self) -> None:
        """Runs the leases in an event loop of their own, on a daemon thread; returns once
        they are attached. ``stop()`` may then be awaited from any loop."""
        started: concurrent.futures.Future[None] = concurrent.futures.Future()

        def main() -> None:
            loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(self._serve_thread(started))
            finally:
                loop.close()

        self._thread = threading.Thread(target=main, name=f"leases-{self.replica_id}", daemon=True)
        self._thread.start()
        started.result()

    async def _serve_thread(self, started: concurrent.futures.Future[None]) -> None:
        try:
            await self.start()
        except BaseException as exc:
            started.set_exception(exc)
            raise
        started.set_result(None)
        await self._stopped.wait()
        await self._close()

    async def stop(self) -> None:
        """Gives every unspent slice back and stops renewing. The gateway stays bounded
        by what it used: it spends nothing more through its table."""
        await self._in_own_loop(self._stop)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)

    async def _stop(self) -> None:
        if self._task is None:
            return
        self._stopping.set()
        await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.gather(*(self._give_back(t) for t in list(self._tenants)), return_exceptions=True)
        self._task = None
        self._stopped.set()
        if self._thread is None:
            await self._close()

    async def _close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    def held(self) -> tuple[int, int]:
        """How many tenants hold an unspent slice, and how many micro-units in all."""
        slices = micros = 0
        for tenant_id, t in list(self._tenants.items()):
            state = self.gateway._lease_state(tenant_id)
            unspent = 0 if state is None else self._granted(t, state) - state[3] - state[4]
            if unspent > 0:
                slices += 1
                micros += unspent
        return slices, micros

    @staticmethod
    def _granted(t: _Tenant, state: tuple[int, int, int, int, int, int]) -> int:
        """What the replica holds in Redis for the tenant, base included."""
        return state[5] if t.granted is None else t.granted

    # ---- spending -------------------------------------------------------------------

    async def spend(self, tenant_id: str, amount: int) -> Decision:
        """``gateway.spend``; on a used-up slice, one round trip for more, then again."""
        return await self._with_refill(tenant_id, amount, lambda: self.gateway.spend(tenant_id, amount))

    async def reserve(self, tenant_id: str, amount: int, *, ttl_s: float = 60.0) -> Decision:
        """``gateway.reserve``; on a used-up slice, one round trip for more, then again."""
        return await self._with_refill(
            tenant_id, amount, lambda: self.gateway.reserve(tenant_id, amount, ttl_s=ttl_s)
        )

    async def _with_refill(self, tenant_id: str, amount: int, attempt: Callable[[], Decision]) -> Decision:
        decision = attempt()
        if decision.reason is Reason.LEASE_EXHAUSTED:
            await self._in_own_loop(lambda: self._refill(tenant_id, amount))
            decision = attempt()
        if not decision.allowed:
            self.stats.refusals[decision.reason] += 1
        return decision

    async def _in_own_loop(self, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Runs ``work()`` in the leases' loop (the caller's may be another thread's)."""
        loop = self._loop
        if loop is None or loop is asyncio.get_running_loop() or loop.is_closed():
            return await work()
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(work(), loop))

    # ---- the background task --------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._tick(time.monotonic())
            except Exception:  # a bug must not stop the renewals of every other tenant
                log.exception("lease renewal round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.tick_s)

    async def _tick(self, now: float) -> None:
        for tenant_id in self.gateway._take_lease_wants():
            self.stats.refusals[Reason.LEASE_EXHAUSTED] += 1
            t = self._track(tenant_id)
            t.wanted = max(t.wanted, 1)
        jobs: list[Awaitable[None]] = []
        for tenant_id in list(self._tenants):
            job = self._due(tenant_id, now)
            if job is not None:
                jobs.append(job)
        if jobs:
            await asyncio.gather(*jobs)

    def _due(self, tenant_id: str, now: float) -> Awaitable[None] | None:
        """What the tenant needs now: a refill, a return, a renewal, or nothing."""
        state = self.gateway._lease_state(tenant_id)
        if state is None:
            del self._tenants[tenant_id]
            return None
        t = self._current(tenant_id, state[2])
        if t.lock.locked():
            return None
        used = state[3] + state[4] - t.base
        headroom = self._granted(t, state) - state[3] - state[4]
        room = state[5] - state[3] - state[4]
        t.demand.sample(used, now, self.policy.half_life_s)
        rate = t.demand.rate
        if now >= t.deadline and headroom > 0 and t.renewed_at > -math.inf:
            self.stats.expired += 1
            log.warning("lease on %r not renewed in time: spending stops until Redis answers", tenant_id)
            self._shrink(tenant_id, t, state[3] + state[4])
            return self._sync(tenant_id, need=0, want=0)
        if t.starved and headroom > 0:
            return self._give_back(tenant_id)
        if t.wanted or (not t.exhausted and self.policy.runs_low(headroom, rate)):
            return self._sync(tenant_id, need=t.wanted, want=self.policy.slice_for(rate, t.wanted))
        if headroom > room and 2 * room < t.window:
            return self._sync(tenant_id, need=0, want=0)  # a report: the window moves on
        if headroom > 0 and t.demand.idle(now, self.policy.idle_s):
            return self._give_back(tenant_id)
        if now - t.renewed_at >= self.renew_every_s:
            # Renewing; when the shared budget was found exhausted, asking whether
            # slices came back meanwhile.
            want = self.policy.slice_for(t.demand.rate, 0) if t.exhausted else 0
            return self._sync(tenant_id, need=0, want=want)
        return None

    def _track(self, tenant_id: str) -> _Tenant:
        state = self.gateway._lease_state(tenant_id)
        return self._current(tenant_id, state[2] if state else 0)

    def _current(self, tenant_id: str, period_start: int) -> _Tenant:
        """The tenant's record for ``period_start`` (a new period starts a new one)."""
        t = self._tenants.get(tenant_id)
        if t is None or t.period_start != period_start:
            start, used = self._bases.get(tenant_id, (None, 0))
            base = used if start == period_start else 0
            rate = t.demand.rate if t is not None else 0.0
            t = _Tenant(period_start, base, Demand(0, time.monotonic(), rate))
            self._tenants[tenant_id] = t
        return t

    async def _refill(self, tenant_id: str, amount: int) -> None:
        t = self._track(tenant_id)
        want = self.policy.slice_for(t.demand.rate, amount)
        await self._sync(tenant_id, need=amount, want=want)

    async def _give_back(self, tenant_id: str) -> None:
        """Returns what the tenant's slice holds beyond its use."""
        await self._sync(tenant_id, need=0, want=0, give_back=True)

    async def _sync(self, tenant_id: str, *, need: int, want: int, give_back: bool = False) -> None:
        """One script call for the tenant: report, renew, and grant or return."""
        t = self._track(tenant_id)
        async with t.lock:
            state = self.gateway._lease_state(tenant_id)
            if state is None or state[2] != t.period_start:
                return
            total, total_ts, period, spent, reserved, allowance = state
            held = self._granted(t, state)
            if give_back:
                kept = self._shrink(tenant_id, t, spent + reserved)
                if kept is None:
                    return
                if held > kept:
                    self.stats.returns += 1
                    self.stats.returned += held - kept
                held = allowance = kept
            used = max(spent + reserved - t.base, 0)
            self._seq += 1
            call = Call(
                replica=self.replica_id,
                incarnation=self._incarnation,
                seq=self._seq,
                mode=self.mode,
                total=total,
                total_ts=total_ts,
                held=held - t.base,
                used=used,
                need=min(need, MAX_AMOUNT),
                want=min(want, MAX_AMOUNT),
                ttl_ms=math.ceil(self.lease_ttl_s * 1000),
                keep_ms=KEEP_MS,
                cap=used + max(2 * need, allowance - spent - reserved),
            )
            sent = time.monotonic()
            answer = await self._call(tenant_id, period, call)
            if answer is None:
                return
            t.wanted = 0
            t.renewed_at = sent
            t.deadline = sent + self.lease_ttl_s * (1 - DRIFT)
            granted = answer.granted + t.base
            t.granted = granted
            # Strict: the table may run up to the cap Redis now holds, and no further.
            allows = granted if self.mode == "fast" else min(granted, answer.cap + t.base)
            t.window = allows - spent - reserved
            exhausted = answer.available == 0 and answer.learning_ms == 0
            t.exhausted = exhausted
            t.starved = need > 0 and allows - spent - reserved < need
            moved_on = not self.gateway._grant_allowance(
                tenant_id, period, allows, exhausted and allows == granted
            )
            if not moved_on and granted > held:
                self.stats.grants += 1
                self.stats.granted += granted - held

    def _shrink(self, tenant_id: str, t: _Tenant, to: int) -> int | None:
        """Lowers the tenant's allowance, and what the replica holds, to ``to`` (or what
        is used, if more); what it still holds, or None if the period moved on."""
        kept = self.gateway._shrink_allowance(tenant_id, t.period_start, to)
        if kept is not None:
            t.granted = kept
        return kept

    async def _epoch_keys(self) -> list[str]:
        """The epoch key on a single Redis; none on Redis Cluster (no key spans slots)."""
        assert self._redis is not None
        self.stats.round_trips += 1
        cluster = await self._redis.info("cluster")
        return [] if cluster.get("cluster_enabled") else [epoch_key(self.key_prefix)]

    async def _call(self, tenant_id: str, period: int, call: Call) -> Answer | None:
        """Sends ``call``, once more if the connection failed (the script makes the retry
        a no-op if the first one ran). None when Redis cannot be reached or the answer
        was overtaken by a later call."""
        keys = [budget_key(self.key_prefix, tenant_id, period), fence_key(self.key_prefix, tenant_id)]
        for attempt in (1, 2):
            self.stats.round_trips += 1
            sent = time.monotonic()
            try:
                if self._epoch is None:
                    self._epoch = await self._epoch_keys()
                reply = await self._script(keys=keys + self._epoch, args=call.args())
            except (RedisError, OSError) as exc:
                self.stats.errors += 1
                if attempt == 2:
                    self._unreachable(exc)
            else:
                if self._down_since is not None and sent > self._down_since:  # not one sent before
                    log.info(
                        "Redis reachable again after %.1f s: leases renew",
                        time.monotonic() - self._down_since,
                    )
                    self._down_since = None
                return Answer.parse(reply)
        return None

    def _unreachable(self, exc: Exception) -> None:
        """Says once (until Redis answers again) that lease calls fail, and what it means."""
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning(
                "Redis unreachable (%s): spending only what the slices hold, then %s until it answers",
                " ".join(str(exc).split()) or type(exc).__name__, Reason.LEASE_EXHAUSTED.value,
            )  # fmt: skip
