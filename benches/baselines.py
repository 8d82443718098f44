"""The peers every benchmark is measured against, in the same run.

Each implements the same check-and-debit (``spent + reserved + amount <= total``) so
that the ratios compare like with like; ``tests/test_baselines.py`` checks that they
grant exactly what the Gateway grants.
"""

from __future__ import annotations

import threading

import redis
from limits import RateLimitItemPerDay
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter


class DictLockBudgets:
    """The straightforward pure-Python table: a dict of rows behind a threading.Lock.

    Each method is written out in full, as such code usually is: routing them through a
    shared helper would add a Python call to the baseline and flatter the ratios.
    """

    def __init__(self) -> None:
        self._rows: dict[str, list[int]] = {}  # tenant -> [spent, reserved, total]
        self._lock = threading.Lock()

    def set_total(self, tenant_id: str, total: int) -> None:
        with self._lock:
            self._rows[tenant_id] = [0, 0, total]

    def try_spend(self, tenant_id: str, amount: int) -> bool:
        with self._lock:
            row = self._rows.get(tenant_id)
            if row is None or row[0] + row[1] + amount > row[2]:
                return False
            row[0] += amount
            return True

    def reserve(self, tenant_id: str, amount: int) -> bool:
        with self._lock:
            row = self._rows.get(tenant_id)
            if row is None or row[0] + row[1] + amount > row[2]:
                return False
            row[1] += amount
            return True

    def commit(self, tenant_id: str, held: int, actual: int) -> None:
        with self._lock:
            row = self._rows[tenant_id]
            row[0] += actual
            row[1] -= held

    def spent(self, tenant_id: str) -> int:
        with self._lock:
            return self._rows[tenant_id][0]


CHECK_AND_DEBIT_LUA = """
local row = redis.call('HMGET', KEYS[1], 'spent', 'reserved', 'total')
if not row[3] then return -1 end
local amount = tonumber(ARGV[1])
if tonumber(row[1]) + tonumber(row[2]) + amount > tonumber(row[3]) then return 0 end
redis.call('HINCRBY', KEYS[1], 'spent', amount)
return 1
"""


class RedisLuaBudgets:
    """Budgets in Redis, checked and debited atomically by one EVALSHA of a Lua script."""

    def __init__(self, url: str, prefix: str = "bgw:bench:") -> None:
        self.client = redis.Redis.from_url(url)
        self.prefix = prefix
        self.sha = self.client.script_load(CHECK_AND_DEBIT_LUA)

    def set_total(self, tenant_id: str, total: int) -> None:
        self.client.hset(self.prefix + tenant_id, mapping={"spent": 0, "reserved": 0, "total": total})

    def try_spend(self, tenant_id: str, amount: int) -> bool:
        return self.client.evalsha(self.sha, 1, self.prefix + tenant_id, amount) == 1  # type: ignore[no-untyped-call]

    def spent(self, tenant_id: str) -> int:
        return int(self.client.hget(self.prefix + tenant_id, "spent") or 0)  # type: ignore[arg-type]

    def close(self) -> None:
        keys = list(self.client.scan_iter(self.prefix + "*"))
        if keys:
            self.client.delete(*keys)
        self.client.close()


class LimitsBudgets:
    """The `limits` library's in-memory fixed window, used as a budget counter (cost = amount)."""

    def __init__(self) -> None:
        self._limiter = FixedWindowRateLimiter(MemoryStorage())
        self._items: dict[str, RateLimitItemPerDay] = {}

    def set_total(self, tenant_id: str, total: int) -> None:
        self._items[tenant_id] = RateLimitItemPerDay(total)

    def try_spend(self, tenant_id: str, amount: int) -> bool:
        item = self._items.get(tenant_id)
        return item is not None and self._limiter.hit(item, tenant_id, cost=amount)
