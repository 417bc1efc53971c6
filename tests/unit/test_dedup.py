"""The dedup memory forgets only ids older than its horizon, in bulk and cheaply."""

from __future__ import annotations

from processors.core.dedup import Dedup


def test_ids_within_the_horizon_are_remembered_and_old_ones_forgotten() -> None:
    dedup = Dedup(horizon_ms=1_000)
    for i in range(60_000):  # crosses the bulk-prune point
        assert dedup.first_time(f"e{i}", i)
    assert not dedup.first_time("e59500", 59_500)  # recent: still a repeat
    assert len(dedup) < 60_000  # old ids were dropped
    assert dedup.first_time("e10", 10)  # forgotten: beyond the horizon


def test_merge_unions_two_memories() -> None:
    a, b = Dedup(1_000), Dedup(1_000)
    a.first_time("x", 5)
    b.first_time("y", 7)
    a.merge(b)
    assert not a.first_time("x", 5)
    assert not a.first_time("y", 7)
