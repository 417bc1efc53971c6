"""A whole stream gone quiet is the feed's outage, said once: never a store's alert, never said for
a quiet spell the stores' histories expected (a fleet closed for the night)."""

from __future__ import annotations

import logging

import orjson
import pytest

from foundation.contract import format_ts
from processors.core import CoreConfig, ShardCore
from processors.stream_silence import StreamSilence

HOUR = 3_600_000
MONDAY = 1_785_715_200_000  # 2026-08-03T00:00:00Z, a Monday
log = logging.getLogger("test.silence")


def spell(expected: float) -> tuple[StreamSilence, list[tuple[int, int]]]:
    asked: list[tuple[int, int]] = []

    def sales(a: int, b: int) -> float:
        asked.append((a, b))
        return expected

    silence = StreamSilence(quiet_after_s=300.0, min_expected_sales=20.0, log=log)
    silence.check(1000.0, [990.0, 995.0], MONDAY, sales)
    return silence, asked


def test_a_short_pause_is_not_quiet() -> None:
    silence, asked = spell(500.0)
    assert not silence.state.quiet
    assert asked == []  # nothing to weigh yet


def test_every_shard_silent_while_the_stores_would_trade_is_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    silence = StreamSilence(quiet_after_s=300.0, min_expected_sales=20.0, log=log)
    asked: list[tuple[int, int]] = []

    def sales(a: int, b: int) -> float:
        asked.append((a, b))
        return 150.0

    with caplog.at_level(logging.INFO, logger="test.silence"):
        for now in (1400.0, 1500.0, 1600.0):
            assert silence.check(now, [1000.0, 900.0], MONDAY, sales).quiet
        assert not silence.check(1601.0, [1600.0, 900.0], MONDAY + HOUR, sales).quiet  # a shard reads
        assert silence.check(2000.0, [1600.0, 900.0], MONDAY + HOUR, sales).quiet  # a new spell
    said = [r.getMessage() for r in caplog.records]
    assert sum("the whole stream is quiet" in m for m in said) == 2  # once per spell
    assert sum("trading again" in m for m in said) == 1
    # The spell is laid from the newest event time on, as long as it has lasted in wall clock.
    assert asked[0] == (MONDAY, MONDAY + 400_000)
    assert silence.state.expected_sales == 150.0
    assert silence.state.silent_s == 400.0


def test_a_quiet_spell_the_stores_expected_is_not_an_outage(caplog: pytest.LogCaptureFixture) -> None:
    silence = StreamSilence(quiet_after_s=300.0, min_expected_sales=20.0, log=log)
    with caplog.at_level(logging.INFO, logger="test.silence"):
        state = silence.check(10_000.0, [1000.0], MONDAY, lambda a, b: 3.0)  # the fleet's night
    assert not state.quiet
    assert caplog.records == []


def test_the_expectation_looks_at_most_two_hours_ahead() -> None:
    silence = StreamSilence(quiet_after_s=60.0, min_expected_sales=1.0, log=log)
    asked: list[tuple[int, int]] = []
    silence.check(100_000.0, [0.0], MONDAY, lambda a, b: asked.append((a, b)) or 5.0)
    assert asked == [(MONDAY, MONDAY + 2 * HOUR)]


def test_off_with_no_shards_or_no_event_time() -> None:
    assert not StreamSilence(0.0, 1.0, log).check(1e9, [0.0], MONDAY, lambda a, b: 1e6).quiet
    assert not StreamSilence(60.0, 1.0, log).check(1e9, [], MONDAY, lambda a, b: 1e6).quiet
    assert not StreamSilence(60.0, 1.0, log).check(1e9, [0.0], None, lambda a, b: 1e6).quiet


def _sale(store: str, i: int, ts_ms: int) -> bytes:
    return orjson.dumps(
        {
            "type": "sale",
            "event_id": f"{store}-{i}",
            "store_id": store,
            "ts": format_ts(ts_ms),
            "product_id": "p1",
            "quantity": 1,
            "unit_price": 2.0,
        }
    )


def test_the_core_expects_what_its_stores_histories_say() -> None:
    """Two stores selling every 5 minutes from 09:00 to 17:00 for three days: the fourth day's
    10:00-11:00 expects about 2 x 12 sales, its 03:00-04:00 none."""
    core = ShardCore(CoreConfig(archive=False))
    i = 0
    for day in range(3):
        for minute in range(9 * 60, 17 * 60, 5):
            for store in ("a", "b"):
                i += 1
                core.apply(_sale(store, i, MONDAY + day * 24 * HOUR + minute * 60_000))
    core.advance_watermark(MONDAY + 3 * 24 * HOUR)
    core.drain()
    day4 = MONDAY + 3 * 24 * HOUR
    assert core.expected_sales(day4 + 10 * HOUR, day4 + 11 * HOUR) == pytest.approx(24.0, rel=0.2)
    assert core.expected_sales(day4 + 3 * HOUR, day4 + 4 * HOUR) == pytest.approx(0.0, abs=0.5)
    assert ShardCore(CoreConfig(archive=False)).expected_sales(day4, day4 + HOUR) == 0.0
