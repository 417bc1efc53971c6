"""What a young store's detector learns from its first days: a spike does not widen its spread, an odd
day does not loosen every later day, and a first weekend day is judged for drops (docs/detection.md)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from foundation.timeunits import DAY_MS
from processors.core.detectors import DetectorConfig, SeasonalDetector
from processors.core.detectors.base import PeerDayShape, Spread
from processors.core.detectors.seasonal import _DayLevel
from processors.core.windows import WindowResult, WindowSpec
from tests.unit import stored

SLOT = 15 * 60_000
SHORT = WindowSpec(SLOT, SLOT)
MONDAY = 20_003 * DAY_MS  # 00:00 UTC
OPEN, CLOSE = 32, 80  # 08:00 to 20:00


def window(start_ms: int, sales: int) -> WindowResult:
    return WindowResult(
        "s-1", SHORT, start_ms, start_ms + SLOT, sales, sales, sales, 3.0 * sales, 0, 0, 0, 0.0
    )


def test_a_spike_among_a_young_stores_first_windows_does_not_widen_its_spread() -> None:
    spread = Spread(0.01, True, 0.03)
    for observed in (18.0, 22.0, 20.0, 19.0, 21.0):
        spread.learn(observed, 20.0, 10.0)
    before = spread.factor
    spread.learn(64.0, 20.7, 34.0)  # three times the rate, 5 standard deviations out
    assert spread.factor <= before
    assert spread.variance(28.0, 60.0) < 28.0 + 60.0 + 0.05 * 28.0**2


def test_one_odd_day_does_not_loosen_every_later_days_level() -> None:
    level = _DayLevel(0.15, 0.1)
    for ratio in (1.0, 1.05, 0.95, 1.0):
        level.learn(1000.0 * ratio, 1000.0)
        level.end_day()
    steady = level._prior_var()
    level.learn(2500.0, 1000.0)  # a day at 2.5 times (an incident, or a rough young estimate)
    level.end_day()
    assert level._prior_var() < 0.01  # 10% at most; learned whole it would have been over 20%
    assert level._prior_var() >= steady  # it still counts


def _detector(**settings: Any) -> SeasonalDetector:
    det = SeasonalDetector(dataclasses.replace(DetectorConfig(), **settings), SLOT, 4)
    det.first_ms = MONDAY - DAY_MS
    return det


def _peers() -> PeerDayShape:
    """Peers that all trade 08:00 to 20:00 on every kind of day."""
    fleet = PeerDayShape(96)
    shape = [1.0 if OPEN <= i < CLOSE else 0.0 for i in range(96)]
    for _ in range(3):
        for kind in (0, 1, 2):
            fleet.learn(kind, shape, 48.0)
    return fleet


def _first_saturday(saturday: dict[int, int], offset_ms: int = 0) -> list[tuple[int, str]]:
    """Monday to Friday at 20 sales a window from 08:00 to 20:00 local time (UTC + offset_ms), then a
    first Saturday at the same rate except for the slots in `saturday`: the Saturday's findings as
    (local slot, direction)."""
    det, fleet = _detector(), _peers()
    det.first_ms = MONDAY - DAY_MS - offset_ms

    def at(day: int, slot: int, sales: int) -> WindowResult:
        return window(MONDAY + day * DAY_MS + slot * SLOT - offset_ms, sales)

    for day in range(5):
        for slot in range(96):
            det.observe(at(day, slot, 20 * (OPEN <= slot < CLOSE)), offset_ms, fleet)
    found = []
    for slot in range(96):
        sales = saturday.get(slot, 20 * (OPEN <= slot < CLOSE))
        verdict = det.observe(at(5, slot, sales), offset_ms, fleet)
        found += [(slot, f.direction) for f in verdict.findings]
    assert det.profile_seen[1][OPEN] == 1  # it was the store's first Saturday
    return found


HOUR = 3_600_000


@pytest.mark.parametrize("offset_ms", [0, -5 * HOUR, 9 * HOUR, 5 * HOUR + HOUR // 2])
def test_a_collapse_on_a_first_saturday_is_caught(offset_ms: int) -> None:
    # In UTC, New York (winter), Tokyo and India: the slots are the store's local ones
    collapse = {slot: 2 for slot in range(52, 60)}  # a tenth of the rate from 13:00 to 15:00
    found = _first_saturday(collapse, offset_ms)
    assert any(52 <= slot < 60 and direction == "low" for slot, direction in found), found
    assert _first_saturday({}, offset_ms) == []  # an ordinary first Saturday raises nothing


def test_a_first_saturday_that_closes_early_is_not_an_outage() -> None:
    # The store closes at 13:00 while its peers and its weekdays trade until 20:00: nothing sold may
    # be a closing, which a first Saturday cannot tell from an outage.
    assert _first_saturday({slot: 0 for slot in range(52, CLOSE)}) == []


def test_a_first_saturday_survives_a_checkpoint_mid_day() -> None:
    det, fleet = _detector(), _peers()
    for day in range(5):
        for slot in range(96):
            det.observe(window(MONDAY + day * DAY_MS + slot * SLOT, 20 * (OPEN <= slot < CLOSE)), 0, fleet)
    saturday = MONDAY + 5 * DAY_MS
    for slot in range(52):
        det.observe(window(saturday + slot * SLOT, 20 * (slot >= OPEN)), 0, fleet)
    copy = stored.detector(det)
    assert det.open_day[1] > 0.0  # the day since opening is kept
    assert copy.open_day == det.open_day
    assert list(copy.guess_recent) == list(det.guess_recent)
    for slot in range(52, 60):  # then a collapse, judged alike by both
        w = window(saturday + slot * SLOT, 2)
        assert copy.observe(w, 0, fleet) == det.observe(w, 0, fleet)
    assert det.suspicion > 0.0


def _refunds(start_ms: int, sales: int, refunds: int) -> WindowResult:
    return WindowResult(
        "s-1",
        SHORT,
        start_ms,
        start_ms + SLOT,
        sales,
        sales,
        sales,
        3.0 * sales,
        refunds,
        refunds,
        refunds,
        9.0,
    )


@pytest.mark.parametrize(("refunds", "alerted"), [(4, False), (12, True)])
def test_a_first_sunday_against_peers_that_open_later_judges_refunds_by_the_sales_made(
    refunds: int, alerted: bool
) -> None:
    """Peers that trade Sundays from 12:00 only say nothing about a store selling at 10:00 on its
    first Sunday: four refunds on ten sales there are ordinary for a store refunding one sale in
    ten, not "4 against 0-0 expected"; twelve are still a burst."""
    fleet = PeerDayShape(96)
    sunday = [0.0] * 96
    weekday = [0.0] * 96
    for slot in range(48, 64):
        sunday[slot] = 5.0
    for slot in range(OPEN, CLOSE):
        weekday[slot] = 2.0
    for _ in range(3):
        fleet.learn(2, sunday, 96.0)
        fleet.learn(0, weekday, 96.0)
    det = _detector()
    for day in range(2):  # a Monday and a Tuesday: ten sales and one refund every 15 minutes
        for slot in range(96):
            start = MONDAY + day * DAY_MS + slot * SLOT
            trading = OPEN <= slot < CLOSE
            det.observe(_refunds(start, 10 if trading else 0, 1 if trading else 0), 0, fleet)
    first_sunday = MONDAY + 6 * DAY_MS
    for slot in range(OPEN, 40):
        det.observe(_refunds(first_sunday + slot * SLOT, 10, 1), 0, fleet)
    verdict = det.observe(_refunds(first_sunday + 40 * SLOT, 10, refunds), 0, fleet)
    assert any(f.metric == "refunds" for f in verdict.findings) is alerted
