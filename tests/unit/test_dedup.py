"""The dedup memory: exact inside its horizon, per store, bounded, and stored as immutable runs."""

from __future__ import annotations

import hashlib
import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.core.dedup import Dedup, Run, key_of

MIN = 60_000
HOUR = 60 * MIN
H = 24 * HOUR
BUCKET = 15 * MIN
T0 = 1_780_000_000_000 - 1_780_000_000_000 % BUCKET


def test_the_same_event_id_in_two_stores_is_two_events() -> None:
    dedup = Dedup(H)
    assert dedup.first_time("store-001", "t-1", T0)
    assert dedup.first_time("store-015", "t-1", T0)  # another store's till numbers the same way
    assert not dedup.first_time("store-001", "t-1", T0)
    assert not dedup.first_time("store-015", "t-1", T0)


def test_store_and_event_id_cannot_be_shifted_into_each_other() -> None:
    assert key_of("s1", "2-x") != key_of("s1-2", "x")
    assert key_of("a", "\ud800") != key_of("a", "x")  # lone surrogates do not crash the hash


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32), st.integers(200, 2_000))
def test_repeats_at_any_distance_up_to_the_horizon_are_ignored(seed: int, n: int) -> None:
    """Events over 3 days of event time; each is repeated later at a random distance from the clock
    up to H: every repeat is ignored, and every first copy counts."""
    rng = random.Random(seed)
    dedup = Dedup(H)
    span = 3 * 24 * HOUR
    events = sorted((T0 + rng.randrange(span), f"s{rng.randrange(5)}", f"e{i}") for i in range(n))
    seen: list[tuple[int, str, str]] = []
    for ts, store, eid in events:
        assert dedup.first_time(store, eid, ts)
        seen.append((ts, store, eid))
        clock = dedup.clock_ms
        for _ in range(2):  # repeats of random earlier events still within H of the clock
            old = seen[rng.randrange(len(seen))]
            if clock - old[0] <= H:
                assert not dedup.first_time(old[1], old[2], old[0])
    assert dedup.beyond_horizon == 0


def test_exactly_at_the_horizon_and_just_past_it() -> None:
    dedup = Dedup(H, max_ahead_ms=2 * H)  # let the clock jump here (see the next tests for the guard)
    dedup.first_time("s", "old", T0)
    dedup.first_time("s", "now", T0 + H)  # the clock is now exactly H after "old"
    assert not dedup.first_time("s", "old", T0)  # at H: still remembered
    # The bucket holding T0 goes once the clock is more than H past the bucket's end.
    dedup.first_time("s", "later", T0 + BUCKET + H)
    assert dedup.first_time("s", "old", T0)  # beyond H: forgotten, counts again (documented)
    assert dedup.beyond_horizon == 1
    assert dedup.first_time("s", "old", T0)  # and is not remembered either
    assert min(dedup.buckets()) * BUCKET > T0


def test_memory_is_bounded_by_the_horizon() -> None:
    dedup = Dedup(H)
    for minute in range(4 * 24 * 60):  # four days, one event a minute
        dedup.first_time("s", f"e{minute}", T0 + minute * MIN)
    assert len(dedup.buckets()) <= H // BUCKET + 2
    assert len(dedup) <= (H + 2 * BUCKET) // MIN
    hot = [b for b in dedup.buckets().values() if not b.sealed]
    assert len(hot) <= 2  # older buckets are sealed into one sorted run each
    assert all(len(b.runs) <= 1 and b.hot is None for b in dedup.buckets().values() if b.sealed)


def test_one_clock_far_ahead_does_not_expire_the_memory() -> None:
    dedup = Dedup(H, ahead_quorum=10)
    dedup.first_time("s", "a", T0)
    assert dedup.first_time("bad-clock", "x", T0 + 365 * 24 * HOUR)
    assert dedup.clock_ms == T0
    assert not dedup.first_time("s", "a", T0)  # still remembered
    assert not dedup.first_time("bad-clock", "x", T0 + 365 * 24 * HOUR)  # and so is the odd one
    for i in range(10):  # many events agree that time moved on: the clock follows
        dedup.first_time("s", f"b{i}", T0 + 3 * 24 * HOUR + i)
    assert dedup.clock_ms >= T0 + 3 * 24 * HOUR
    assert dedup.first_time("s", "a", T0)  # now beyond the horizon


def test_keys_sharing_their_first_64_bits_stay_apart() -> None:
    dedup = Dedup(H)
    assert dedup.first_time_key(7, 1, T0)
    assert dedup.first_time_key(7, 2, T0)  # same hi, other lo: a different pair
    assert not dedup.first_time_key(7, 1, T0)
    assert not dedup.first_time_key(7, 2, T0)
    dedup.cut()
    assert dedup.first_time_key(7, 3, T0)
    assert not dedup.first_time_key(7, 2, T0)
    run = Run.build("r", np.array([7, 7, 7, 9], dtype=np.uint64), np.array([3, 1, 2, 1], dtype=np.uint32))
    found = run.member(np.array([7, 7, 9, 9, 8], dtype=np.uint64), np.array([2, 4, 1, 2, 1], dtype=np.uint32))
    assert found.tolist() == [True, False, True, False, False]


def test_runs_round_trip_and_restore_from_the_manifest() -> None:
    dedup = Dedup(H)
    for i in range(5_000):
        dedup.first_time(f"s{i % 3}", f"e{i}", T0 + i * 30_000)
    dedup.cut()
    runs = {name: Run.from_bytes(name, run.to_bytes()) for name, run in dedup.runs().items()}
    restored = Dedup.from_manifest(dedup.manifest(), runs)
    assert len(restored) == len(dedup)
    clock = dedup.clock_ms
    for i in range(5_000):
        ts = T0 + i * 30_000
        if ts >= clock - H:
            assert not restored.first_time(f"s{i % 3}", f"e{i}", ts)
        elif ts < clock - H - BUCKET:
            assert restored.first_time(f"s{i % 3}", f"e{i}", ts)
    assert restored.first_time("s0", "new", dedup.clock_ms)


def test_a_cut_names_new_runs_only() -> None:
    dedup = Dedup(H)
    dedup.first_time("s", "a", T0)
    dedup.cut()
    first = set(dedup.runs())
    dedup.cut()
    assert set(dedup.runs()) == first  # nothing new: nothing to write
    dedup.first_time("s", "b", T0)
    dedup.cut()
    assert first < set(dedup.runs())


def test_many_at_once_matches_one_by_one() -> None:
    rng = np.random.default_rng(3)
    one, many = Dedup(H), Dedup(H)
    prev_hi = np.zeros(0, dtype=np.uint64)
    prev_lo = np.zeros(0, dtype=np.uint32)
    for minute in range(200):
        ts = T0 + minute * MIN
        hi = rng.integers(0, 2**64 - 1, size=50, dtype=np.uint64)
        lo = rng.integers(0, 2**32 - 1, size=50, dtype=np.uint32)
        hi[6], lo[6] = hi[7], lo[7]  # a repeat inside the batch
        got = many.add_many(hi, lo, ts).tolist()
        expected = [one.first_time_key(int(h), int(w), ts) for h, w in zip(hi, lo, strict=True)]
        assert got == expected
        if prev_hi.size:  # repeats of the previous minute's keys, at their own event time
            assert not many.add_many(prev_hi[:5], prev_lo[:5], ts - MIN).any()
            assert not any(
                one.first_time_key(int(h), int(w), ts - MIN)
                for h, w in zip(prev_hi[:5], prev_lo[:5], strict=True)
            )
        prev_hi, prev_lo = hi.copy(), lo.copy()
    assert len(one) == len(many)


def test_merge_is_the_union_with_names_that_do_not_clash() -> None:
    a, b = Dedup(H), Dedup(H)
    a.first_time("s1", "x", T0)
    b.first_time("s2", "y", T0 + MIN)
    a.cut()
    b.cut()
    a.merge(b)
    assert not a.first_time("s1", "x", T0)
    assert not a.first_time("s2", "y", T0 + MIN)
    names = [r.name for bucket in a.buckets().values() for r in bucket.runs]
    assert len(names) == len(set(names))


def test_the_hot_path_keys_a_pair_as_key_of_does() -> None:
    """Keys made on the hot path are the keys of checkpointed runs (`key_of`): one hash, however made."""
    dedup = Dedup(24 * 3600_000)
    for store, event in [("s1", "e1"), ("store-002", "sim-abc-000001"), ("a", "\ud800")]:
        assert dedup.first_time(store, event, T0)
        assert not dedup.first_time_key(*key_of(store, event), T0)
    # and the digest itself: BLAKE2b of "store\x1fevent", 12 bytes, big-endian
    hi, lo = key_of("s1", "e1")
    assert (hi << 32) | lo == int.from_bytes(hashlib.blake2b(b"s1\x1fe1", digest_size=12).digest(), "big")
