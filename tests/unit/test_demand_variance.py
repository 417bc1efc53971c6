"""The forecast's safety stock from what varies: hours that swing from week to week, and lead times."""

from __future__ import annotations

import datetime as dt

from processors.core.demand import HOUR_MS, DemandForecast, RestockConfig

MONDAY = int(dt.datetime(2026, 8, 3, tzinfo=dt.UTC).timestamp() * 1000)
DAY = 24 * HOUR_MS
SWING_HOUR = 10  # Mondays 10:00-11:00


def three_weeks(swing: bool) -> DemandForecast:
    """One product selling 40 units an hour, 08:00-20:00 every day; with `swing`, its Monday 10:00 hour
    sells 10, 70, 10, ... in turn (the same 40 on average)."""
    forecast = DemandForecast(RestockConfig())
    for day in range(21):
        for hour in range(8, 20):
            units = 40
            if swing and day % 7 == 0 and hour == SWING_HOUR:
                units = 10 if (day // 7) % 2 == 0 else 70
            base = MONDAY + day * DAY + hour * HOUR_MS
            for i in range(units):
                forecast.sale("s", "p", 1, base + i * (HOUR_MS // units), 10**6)
    end = MONDAY + 21 * DAY
    forecast.sale("s", "p", 1, end, 10**6)  # closes the last hour
    return forecast


def test_an_hour_that_swings_from_week_to_week_learns_its_variance_and_a_steady_one_none() -> None:
    swinging, steady = three_weeks(True).stores["s"], three_weeks(False).stores["s"]
    monday_10 = MONDAY + 21 * DAY + SWING_HOUR * HOUR_MS  # the fourth Monday
    assert swinging.relative_variance(monday_10, monday_10 + HOUR_MS) > 0.1
    assert steady.relative_variance(monday_10, monday_10 + HOUR_MS) == 0.0
    # another hour of the same store is as steady as ever
    assert swinging.relative_variance(monday_10 + 4 * HOUR_MS, monday_10 + 5 * HOUR_MS) == 0.0


def test_the_reorder_point_before_a_swinging_hour_holds_more_safety_stock() -> None:
    before = MONDAY + 21 * DAY + SWING_HOUR * HOUR_MS - 20 * 60_000  # 09:40, the hour ahead swings
    points = []
    for swing in (False, True):
        forecast = three_weeks(swing)
        plan = forecast.plan("s", "p", before)
        assert plan is not None
        points.append(plan.reorder_point)
    assert points[1] > points[0] + 3


def test_a_lead_time_that_varies_needs_more_safety_stock() -> None:
    points = []
    for leads in ((4 * HOUR_MS,) * 6, (HOUR_MS, 7 * HOUR_MS) * 3):  # the same mean, 4 h
        forecast = three_weeks(False)
        for lead in leads:
            forecast.delivered("s", lead)
        plan = forecast.plan("s", "p", MONDAY + 22 * DAY + 9 * HOUR_MS)
        assert plan is not None
        points.append(plan.reorder_point)
    assert points[1] > points[0] + 5
