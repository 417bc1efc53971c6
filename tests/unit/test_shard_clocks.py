"""The pure rules of shard clocks: which time a quiet shard follows, and a shard's own time."""

from __future__ import annotations

import logging

import pytest

from processors.shard_clocks import OwnTime, follow, middle

log = logging.getLogger("tests.shard_clocks")


def test_follow_takes_the_middle_of_the_shards_still_trading_else_of_all() -> None:
    assert middle([]) is None
    assert middle([5, 1, 9]) == 5
    assert middle([4, 8]) == 4  # the lower middle: a wild clock ahead does not win a tie
    assert follow([(10, False), (20, True), (30, True), (1_000, True)]) == 30
    assert follow([(10, False), (20, False), (30, False)]) == 20  # nobody trading: all of them
    assert follow([]) is None


def test_own_time_is_not_the_time_the_shard_moved_to_with_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="tests.shard_clocks")
    time = OwnTime(log)
    assert time.own_ms is None
    time.read(None)  # records, but none that moved the windows yet
    assert time.own_ms is None
    time.read(100)
    assert (time.own_ms, time.following) == (100, False)
    time.followed("shard-1", 100, 500)
    time.followed("shard-1", 500, 600)  # still the same quiet spell
    assert time.following
    assert time.own_ms == 100
    said = [r for r in caplog.records if r.getMessage() == "quiet shard follows the other shards' event time"]
    assert [(r.shard_id, r.own_event_ms, r.to_event_ms) for r in said] == [("shard-1", 100, 500)]  # type: ignore[attr-defined]
    time.read(600)  # a late batch of its own: the windows stay at the followed time
    assert (time.own_ms, time.following) == (100, False)
    time.read(700)  # its own trade moved past it
    assert time.own_ms == 700
    time.followed("shard-1", 700, 900)  # a new quiet spell is said again
    assert len([r for r in caplog.records if r.getMessage().startswith("quiet shard")]) == 2
    assert OwnTime(log, 42).own_ms == 42  # a restored core's time, to begin with
