"""The per-shard limiter: in any one second of a simulated clock, no shard gets more than its limits."""

from __future__ import annotations

import asyncio
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foundation.aws.lineage import ShardInfo, hash_key
from producers.kinesis_writer import KinesisWriter, OutRecord
from producers.rate_limit import WINDOW_S, RateLimitHook, ShardLimiter, ShardMap, ShardSend

MAX_HASH = 2**128 - 1

sends = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=0.7, allow_nan=False),  # gap before the attempt
        st.sampled_from(["s0", "s1", "s2"]),
        st.integers(min_value=1, max_value=40),  # records
        st.integers(min_value=1, max_value=900),  # bytes
    ),
    min_size=1,
    max_size=200,
)


@given(sends)
@settings(max_examples=200, deadline=None)
def test_no_window_of_one_second_exceeds_the_limits(attempts: list[tuple[float, str, int, int]]) -> None:
    limiter = ShardLimiter(records_per_s=50, bytes_per_s=1000)
    now = 0.0
    admitted: list[tuple[float, str, int, int]] = []
    for gap, shard, records, size in attempts:
        now += gap
        while True:  # a producer that waits as told, on the simulated clock
            wait = limiter.try_acquire({shard: ShardSend(records, size)}, now)
            if wait == 0.0:
                admitted.append((now, shard, records, size))
                break
            assert wait > 0.0
            now += wait
    # Every closed window [t, t + 1 s] starting at an admitted send holds at most the limits.
    for start, shard, _, _ in admitted:
        inside = [a for a in admitted if a[1] == shard and start <= a[0] <= start + WINDOW_S]
        assert sum(a[2] for a in inside) <= 50
        assert sum(a[3] for a in inside) <= 1000
    assert len(admitted) == len(attempts)  # nothing refused for good: waiting always ends


@given(st.lists(st.integers(min_value=1, max_value=25), min_size=10, max_size=60))
@settings(max_examples=50, deadline=None)
def test_a_saturating_producer_gets_close_to_the_limit(batches: list[int]) -> None:
    limiter = ShardLimiter(records_per_s=100, bytes_per_s=10**9)
    now = 0.0
    sent = 0
    for n in batches * 20:
        while (wait := limiter.try_acquire({"s": ShardSend(n, n)}, now)) > 0.0:
            now += wait
        sent += n
    # Whenever it waits, the last second holds more than limit - largest batch (100 - 25), so every whole
    # second before the last send carries at least that much: the limiter never idles a shard.
    assert sent >= 75 * math.floor(now)
    assert sent > 0


def test_a_send_over_the_limit_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="exceeds the per-shard limit"):
        ShardLimiter(records_per_s=10).try_acquire({"s": ShardSend(11, 1)}, 0.0)


def test_all_shards_of_a_send_must_have_room_or_nothing_is_taken() -> None:
    limiter = ShardLimiter(records_per_s=10)
    assert limiter.try_acquire({"a": ShardSend(10, 1)}, 0.0) == 0.0
    assert limiter.try_acquire({"a": ShardSend(1, 1), "b": ShardSend(5, 1)}, 0.5) > 0.0
    # b took nothing from the refused send: it still has its whole second.
    assert limiter.try_acquire({"b": ShardSend(10, 1)}, 0.5) == 0.0


@given(st.text(min_size=1, max_size=30))
def test_shard_map_routes_a_key_to_the_shard_owning_its_hash(key: str) -> None:
    half = MAX_HASH // 2
    shards = [ShardInfo("shard-1", (), half + 1, MAX_HASH), ShardInfo("shard-0", (), 0, half)]
    expected = "shard-0" if hash_key(key) <= half else "shard-1"
    assert ShardMap(shards).shard_of(key) == expected


def test_shard_map_skips_closed_shards_from_list_shards() -> None:
    answer = [
        {
            "ShardId": "old",
            "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": str(MAX_HASH)},
            "SequenceNumberRange": {"StartingSequenceNumber": "1", "EndingSequenceNumber": "9"},
        },
        {
            "ShardId": "new",
            "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": str(MAX_HASH)},
            "SequenceNumberRange": {"StartingSequenceNumber": "10"},
        },
    ]
    assert ShardMap.from_list_shards(answer).shard_ids == ["new"]


class _Recorder:
    def __init__(self, clock: list[float]) -> None:
        self.clock = clock
        self.calls: list[tuple[float, list[str]]] = []

    async def put_records(self, StreamName: str, Records: list[dict[str, object]]) -> dict[str, object]:
        self.calls.append((self.clock[0], [str(r["PartitionKey"]) for r in Records]))
        return {"Records": [{"SequenceNumber": "1", "ShardId": "x"} for _ in Records]}


async def test_hook_holds_writer_batches_to_the_shard_limit() -> None:
    from config import Settings

    clock = [0.0]

    async def fake_sleep(seconds: float) -> None:
        clock[0] += seconds
        await asyncio.sleep(0)

    shard_map = ShardMap([ShardInfo("only", (), 0, MAX_HASH)])
    hook = RateLimitHook(shard_map, ShardLimiter(records_per_s=20), clock=lambda: clock[0], sleep=fake_sleep)
    client = _Recorder(clock)
    records, _ = hook.max_batch()
    writer = KinesisWriter(
        client, "s", Settings(), linger_s=0.0, before_send=hook, max_batch_records=records, rng=None
    )
    for i in range(100):
        await writer.put(b"x" * 10, f"store-{i % 7}")
    await writer.close()
    assert writer.stats.records_sent == 100
    assert hook.waits > 0
    for start, _ in client.calls:
        inside = sum(len(keys) for at, keys in client.calls if start <= at <= start + WINDOW_S)
        assert inside <= 20
    assert hook.per_shard([OutRecord(b"ab", "k")]) == {"only": ShardSend(1, 3)}
