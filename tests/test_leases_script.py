"""The leases' Lua script against a real Redis: grants, fair shares, last-writer-wins
totals, idempotent retries, expiry in both modes, incarnations, and the fence."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from billing_gateway.leases.script import MAX_AMOUNT, SCRIPT, Answer, Call, budget_key, epoch_key, fence_key

TTL_MS = 400
PERIOD = 1_700_000_000_000_000


class Script:
    """The script on one tenant and period, with a prefix of its own."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self.epoch = False
        """Whether calls name the epoch key (a single Redis) or not (Redis Cluster)."""
        self.run = client.register_script(SCRIPT)
        self.seqs: dict[str, int] = {}

    def keys(self, period: int = PERIOD, tenant: str = "cus_1") -> list[str]:
        epoch = [epoch_key(self.prefix)] if self.epoch else []
        return [budget_key(self.prefix, tenant, period), fence_key(self.prefix, tenant), *epoch]

    def call(self, replica: str, *, period: int = PERIOD, seq: int | None = None, **fields: Any) -> Call:
        if seq is None:
            seq = self.seqs.get(replica, 0) + 1
        self.seqs[replica] = max(self.seqs.get(replica, 0), seq)
        base: dict[str, Any] = {
            "replica": replica, "incarnation": "i1", "seq": seq, "mode": "strict",
            "total": 1_000, "total_ts": 1, "held": 0, "used": 0, "need": 0, "want": 0,
            "ttl_ms": TTL_MS, "keep_ms": 60_000,
        }  # fmt: skip
        return Call(**{**base, **fields})

    def send(self, call: Call, period: int = PERIOD, tenant: str = "cus_1") -> Answer | None:
        return Answer.parse(self.run(keys=self.keys(period, tenant), args=call.args()))

    def grant(self, replica: str, **fields: Any) -> Answer:
        answer = self.send(self.call(replica, **fields))
        assert answer is not None
        return answer

    def field(self, name: str, period: int = PERIOD) -> int | None:
        value = self.client.hget(self.keys(period)[0], name)
        return None if value is None else int(value)  # type: ignore[arg-type]

    def learned(self) -> None:
        """Ends the learning period of fresh state (as if it was created a TTL ago)."""
        self.client.set(self.keys()[1], 0)


@pytest.fixture
def script(redis_url: str) -> Iterator[Script]:
    client = redis.Redis.from_url(redis_url)
    prefix = f"bgt{uuid.uuid4().hex[:12]}"
    yield Script(client, prefix)
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def test_keys_carry_the_tenant_hash_tag() -> None:
    assert budget_key("bg", "cus_1", 5) == "bg:{cus_1}:5"
    assert fence_key("bg", "cus_1") == "bg:{cus_1}:fence"


def test_fresh_state_learns_for_one_ttl_then_grants(script: Script) -> None:
    first = script.grant("a", want=300)
    assert (first.granted, first.available) == (0, 1_000)
    assert 0 < first.learning_ms <= TTL_MS
    deadline = time.monotonic() + 10
    while script.grant("a", want=300).learning_ms and time.monotonic() < deadline:
        time.sleep(0.05)
    answer = script.grant("a", want=300)
    assert (answer.granted, answer.available, answer.learning_ms) == (300, 700, 0)


def test_with_an_epoch_only_state_created_within_a_ttl_of_it_learns(script: Script) -> None:
    """A single Redis: the epoch tells a new tenant (granted at once) from one whose state
    a Redis that lost its data forgot (it learns, as does every tenant, the epoch lost too)."""
    script.epoch = True
    first = script.send(script.call("a", want=300))
    assert first is not None and first.learning_ms > 0, "the epoch is new: this may be lost state"
    assert script.client.get(epoch_key(script.prefix)) is not None
    script.client.set(epoch_key(script.prefix), 0)  # as if created long ago
    new = script.send(script.call("a", want=300), tenant="cus_2")
    assert new is not None and (new.granted, new.learning_ms) == (300, 0), "a new tenant: at once"
    script.client.delete(*script.keys(tenant="cus_2"))  # the Redis lost everything
    lost = script.send(script.call("a", held=300, used=100, want=300), tenant="cus_2")
    assert lost is not None and lost.learning_ms > 0 and lost.granted == 300, "re-registers, learns"


def test_grants_are_fair_shares_of_what_is_left_and_never_exceed_the_total(script: Script) -> None:
    script.learned()
    a = script.grant("a", want=10_000)
    assert (a.granted, a.available, a.live) == (1_000, 0, 1), "alone, all of it"
    a = script.grant("a", held=400, used=400, want=0)  # gives 600 back
    assert (a.granted, a.available) == (400, 600)
    b = script.grant("b", want=10_000)
    assert (b.granted, b.available, b.live) == (300, 300, 2), "half of what is left"
    b = script.grant("b", held=300, used=300, need=250, want=10_000)
    assert b.granted == 550, "its fair share (150) is less than it needs now (250 more)"
    b = script.grant("b", held=550, used=550, need=1_000, want=10_000)
    assert (b.granted, b.available) == (600, 0), "never more than is left"
    assert script.field("consumed") == 0


def test_a_retried_call_is_a_no_op_and_an_overtaken_one_answers_nothing(script: Script) -> None:
    script.learned()
    call = script.call("a", want=100)
    first = script.send(call)
    again = script.send(call)
    assert first is not None and again is not None
    assert (again.granted, again.available, again.replayed) == (first.granted, first.available, True)
    assert script.field("g:a") == 100, "granted once"
    later = script.call("a", held=100, used=50, want=200)
    assert script.send(later) is not None
    assert script.send(call) is None, "the first call, delivered late, changes nothing"
    assert script.field("g:a") == 250


def test_the_total_is_last_writer_wins_by_event_timestamp(script: Script) -> None:
    script.learned()
    assert script.grant("a", total=1_000, total_ts=10).available == 1_000
    assert script.grant("b", total=500, total_ts=20).available == 500
    assert script.grant("a", total=1_000, total_ts=10).available == 500, "older: ignored"
    assert script.grant("c", total=500, total_ts=20).available == 500, "the same event: once"
    assert script.grant("a", total=2_000, total_ts=30).available == 2_000
    assert script.field("total") == 2_000 and script.field("total_ts") == 30


def test_an_answer_replayed_from_before_caps_has_the_slice_as_its_cap() -> None:
    answer = Answer.parse([2, 600, 400, 0, 1])
    assert answer is not None and answer.cap == 600 and answer.replayed


def test_amounts_beyond_doubles_are_capped_not_rounded() -> None:
    call = Call("r", "i", 1, "strict", 2**60, 1, 0, 0, 0, 0, 1, 1)
    assert call.args()[4] == MAX_AMOUNT


@pytest.mark.parametrize(
    ("mode", "floor", "settled"),
    [("strict", 0, 334), ("strict", 500, 500), ("strict", MAX_AMOUNT, 600), ("fast", 0, 200)],
    ids=[
        "strict-a-third-of-the-unspent-slice",
        "strict-the-replicas-floor",
        "strict-at-most-the-slice",
        "fast",
    ],
)
def test_an_expired_lease_is_settled_by_its_mode(script: Script, mode: str, floor: int, settled: int) -> None:
    """Strict: at the most the replica may have used, its cap: its last report plus a
    third of its unspent slice (rounded up), or the floor it asked for if more, never above the slice; the
    rest of the slice comes back. Fast: at its last report."""
    script.learned()
    script.grant("dead", mode=mode, want=600)
    last = script.grant("dead", mode=mode, held=600, used=200, want=0, cap=floor)  # its last report
    assert last.cap == max(floor, 334)
    time.sleep(TTL_MS / 1000 + 0.1)
    alive = script.grant("b", want=10_000)
    assert alive.live == 1, "the dead lease is no longer live"
    assert script.field("consumed") == settled
    assert script.field("s:dead") == settled
    assert alive.granted == 1_000 - settled, "the slice beyond what it may have used came back"


def test_a_replica_back_after_its_lease_was_settled_replaces_the_tombstone(script: Script) -> None:
    script.learned()
    script.grant("a", want=600)
    time.sleep(TTL_MS / 1000 + 0.1)
    script.grant("b")  # settles a's lease at 600
    assert script.field("consumed") == 600
    back = script.grant("a", held=600, used=500, want=0)
    assert (back.granted, back.available) == (600, 400)
    assert script.field("consumed") == 0 and script.field("s:a") is None


def test_a_replica_back_after_its_lease_was_settled_at_its_cap_holds_no_more(script: Script) -> None:
    """Back late (stopped past its deadline, say) and still claiming its whole slice, it
    gets what it was settled at: the rest went back to the others meanwhile."""
    script.learned()
    script.grant("a", want=600, cap=0)  # its cap: a third of 600
    time.sleep(TTL_MS / 1000 + 0.1)
    other = script.grant("b", want=10_000)  # settles a at 200; b gets the rest
    assert script.field("s:a") == 200 and other.granted == 800
    back = script.grant("a", held=600, used=100, want=0)
    assert back.granted == 200 and script.field("consumed") == 0


def test_a_new_incarnation_settles_the_old_one(script: Script) -> None:
    script.learned()
    script.grant("a", want=600)
    fresh = script.grant("a", incarnation="i2", seq=1, want=100)
    assert script.field("consumed") == 600, "the old incarnation's slice counts as spent"
    assert (fresh.granted, fresh.available) == (100, 300)


def test_a_lost_state_relearns_and_replicas_re_register_what_they_hold(script: Script) -> None:
    script.learned()
    script.grant("a", want=700)
    script.client.delete(*script.keys())  # Redis lost its data
    a = script.grant("a", held=700, used=100, want=1_000)
    assert (a.granted, a.available) == (700, 300), "re-registered, nothing new while learning"
    assert a.learning_ms > 0
    b = script.grant("b", want=1_000)
    assert b.granted == 0, "a newcomer gets nothing while the state learns"


def test_periods_are_separate_budgets(script: Script) -> None:
    script.learned()
    script.grant("a", want=1_000)
    nxt = PERIOD + 1
    answer = script.send(script.call("a", period=nxt, want=400), period=nxt)
    assert answer is not None and (answer.granted, answer.available) == (400, 600)
    assert script.field("g:a") == 1_000 and script.field("g:a", nxt) == 400
