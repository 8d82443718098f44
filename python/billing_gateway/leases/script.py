"""The one Lua script that grants, renews, reports and returns a replica's lease.

Redis holds, per tenant and period, one hash (``{prefix}:{<tenant>}:<period_start>``):
``total`` and ``total_ts`` (last-writer-wins by event timestamp), ``consumed`` (what
ended leases used) and, per replica ``r``, its lease: ``g:r`` granted (its slice),
``u:r`` used (its last report), ``c:r`` its cap (the most it may have used before its
next report lands: its last report plus its window, a third of its unspent slice),
``x:r`` expiry (Redis ``TIME``, ms), ``m:r`` mode, and the idempotency guard ``i:r``
(incarnation), ``q:r`` (last sequence number) and ``a:r`` (the answer it got). ``s:r``
is a tombstone: what an expired lease of ``r`` was settled at, taken back if ``r``
returns. An expired lease is settled at what it may have used: in strict mode its cap
(at most its slice), so at least two thirds of its unspent slice come back; in fast mode its
last report.

A second key per tenant (``{prefix}:{<tenant>}:fence``) is the fence: created with the
first state, it holds the end of a learning period of one lease TTL. State created
afresh in a Redis that lost its data grants nothing new while it learns: replicas only
re-register what they hold, so a restart that lost state never hands the budget out
twice. Both keys carry the ``{tenant}`` hash tag (Redis Cluster).

On a single Redis a third key, the epoch (``{prefix}:epoch``), tells a new tenant from a
lost one: created with the first state of all, it holds when that was (Redis ``TIME``).
A tenant's state created within a TTL of the epoch learns until one TTL after it;
later, all live replicas have re-registered everything they hold, so a tenant without
state is new and is granted at once. A Redis that lost its data lost the epoch too,
and every tenant learns again. On Redis Cluster (no key may span slots) there is no
epoch: every tenant's first state learns for one TTL.

Amounts are integer micro-units; Lua numbers are doubles, exact below 2**53, so amounts
are capped there by the caller (``MAX_AMOUNT``) and written back with ``%d``.
"""

from __future__ import annotations

from typing import Final

import msgspec

__all__ = ["MAX_AMOUNT", "SCRIPT", "Answer", "Call", "budget_key", "epoch_key", "fence_key"]

MAX_AMOUNT: Final = 2**53 - 1
"""The largest amount the script handles exactly (Lua numbers are doubles)."""

SCRIPT: Final = r"""
local H, F = KEYS[1], KEYS[2]
local rep, inc, seq, mode = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local total, total_ts = ARGV[5], tonumber(ARGV[6])
local held, used = tonumber(ARGV[7]), tonumber(ARGV[8])
local need, want = tonumber(ARGV[9]), tonumber(ARGV[10])
local ttl, keep = tonumber(ARGV[11]), tonumber(ARGV[12])
local floor = math.max(tonumber(ARGV[13]), used)

local function int(x) return string.format('%d', x) end

local state = {}
local flat = redis.call('HGETALL', H)
for i = 1, #flat, 2 do state[flat[i]] = flat[i + 1] end

-- A retried call gets the answer of the first; an older one (overtaken) gets none.
if state['i:' .. rep] == inc and state['q:' .. rep] then
  local last = tonumber(state['q:' .. rep])
  if seq == last then
    local out = {2}
    for v in string.gmatch(state['a:' .. rep], '%S+') do out[#out + 1] = tonumber(v) end
    return out
  end
  if seq < last then return {0} end
end

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

-- The fence: state created afresh learns until one lease TTL after the epoch (without
-- one, after now).
local learn_until = tonumber(redis.call('GET', F))
if not learn_until then
  local born = now
  if KEYS[3] then
    born = tonumber(redis.call('GET', KEYS[3]))
    if not born then
      born = now
      redis.call('SET', KEYS[3], int(born))
    end
  end
  learn_until = born + ttl
  redis.call('SET', F, int(learn_until))
end
redis.call('PEXPIRE', F, keep)
local learning = now < learn_until

-- The budget total: last writer wins by event timestamp.
if not state['total_ts'] or total_ts > tonumber(state['total_ts']) then
  state['total'] = total
  redis.call('HSET', H, 'total', total, 'total_ts', ARGV[6])
end
local limit = tonumber(state['total'])

-- What a lease ending now counts: strict, the most it may have used (its cap, at most
-- its slice); fast, what it reported.
local function settled(who)
  if state['m:' .. who] == 'fast' then return tonumber(state['u:' .. who]) end
  return math.min(tonumber(state['g:' .. who]), tonumber(state['c:' .. who] or state['g:' .. who]))
end

local consumed = tonumber(state['consumed'] or '0')
local others, live = 0, 1
for f, v in pairs(state) do
  if string.sub(f, 1, 2) == 'x:' then
    local who = string.sub(f, 3)
    if who ~= rep then
      if tonumber(v) <= now then
        local amount = settled(who)
        consumed = consumed + amount
        redis.call('HDEL', H, 'g:' .. who, 'u:' .. who, 'c:' .. who, 'x:' .. who, 'm:' .. who, 'q:' .. who,
          'a:' .. who)
        redis.call('HSET', H, 's:' .. who, int(amount))
      else
        others = others + tonumber(state['g:' .. who])
        live = live + 1
      end
    end
  end
end

-- This replica: back after its lease was settled, it takes the place of the tombstone;
-- a new incarnation settles the old one's lease and keeps its tombstone counted.
-- It takes back no more than its lease was settled at: it cannot have used more, and the
-- rest of its slice may have gone to others meanwhile.
if state['i:' .. rep] == inc then
  if state['s:' .. rep] then
    consumed = consumed - tonumber(state['s:' .. rep])
    held = math.min(held, tonumber(state['s:' .. rep]))
  end
elseif state['i:' .. rep] and state['x:' .. rep] then
  consumed = consumed + settled(rep)
end
redis.call('HDEL', H, 's:' .. rep)

-- It holds what it says it holds (it lowers its own allowance before it gives any back);
-- it gets more if it wants more, up to a fair share of what is left, never while learning.
local granted = held
local available = limit - consumed - others - granted
local short = used + want - granted
if short > 0 and available > 0 and not learning then
  local needed = math.max(used + need - granted, 0)
  local extra = math.min(available, short, math.max(needed, math.ceil(available / live)))
  granted = granted + extra
  available = available - extra
end

-- Its cap: the table may run a third of the unspent slice beyond this report (and at least
-- as far as the replica asks: what it allows already, room for the request at hand).
local cap = math.max(floor, used + math.ceil((granted - used) / 3))

local left = 0
if learning then left = learn_until - now end
local answer = int(granted) .. ' ' .. int(math.max(available, 0)) .. ' ' .. int(left) .. ' ' .. int(live)
  .. ' ' .. int(cap)
redis.call('HSET', H, 'g:' .. rep, int(granted), 'u:' .. rep, int(used), 'c:' .. rep, int(cap),
  'x:' .. rep, int(now + ttl),
  'm:' .. rep, mode, 'i:' .. rep, inc, 'q:' .. rep, int(seq), 'a:' .. rep, answer, 'consumed', int(consumed))
redis.call('PEXPIRE', H, keep)
return {1, granted, math.max(available, 0), left, live, cap}
"""


def _tag(tenant_id: str) -> str:
    return "{" + tenant_id + "}"


def budget_key(prefix: str, tenant_id: str, period_start: int) -> str:
    """The hash of one tenant's shared budget in one period (``period_start`` in µs)."""
    return f"{prefix}:{_tag(tenant_id)}:{period_start}"


def fence_key(prefix: str, tenant_id: str) -> str:
    return f"{prefix}:{_tag(tenant_id)}:fence"


def epoch_key(prefix: str) -> str:
    """When the shared state of all tenants was first created (single Redis only)."""
    return f"{prefix}:epoch"


class Call(msgspec.Struct, frozen=True):
    """One call of the script by one replica (``seq`` orders them; a retry repeats it)."""

    replica: str
    incarnation: str
    seq: int
    mode: str
    total: int
    total_ts: int
    held: int
    used: int
    need: int
    want: int
    ttl_ms: int
    keep_ms: int
    cap: int = MAX_AMOUNT
    """The least cap the replica needs (``used`` plus what its table allows already, or
    room for the request at hand); the script raises it to a third of the unspent slice."""

    def args(self) -> list[str | int]:
        return [
            self.replica,
            self.incarnation,
            self.seq,
            self.mode,
            min(self.total, MAX_AMOUNT),
            self.total_ts,
            self.held,
            self.used,
            self.need,
            self.want,
            self.ttl_ms,
            self.keep_ms,
            min(self.cap, MAX_AMOUNT),
        ]


class Answer(msgspec.Struct, frozen=True):
    """The script's answer: what the replica now holds, what is left for anyone,
    how long the state still learns (ms; grants wait), how many leases are live, and
    the replica's cap (the most its table may have used before its next report lands)."""

    granted: int
    available: int
    learning_ms: int
    live: int
    cap: int
    replayed: bool = False

    @classmethod
    def parse(cls, reply: list[int]) -> Answer | None:
        """None for a call that a later one overtook (its answer no longer applies)."""
        status = int(reply[0])
        if status == 0:
            return None
        granted, available, learning_ms, live = (int(v) for v in reply[1:5])
        # An answer replayed from before caps were kept has none: the slice was the cap.
        cap = int(reply[5]) if len(reply) > 5 else granted
        return cls(granted, available, learning_ms, live, cap, replayed=status == 2)
