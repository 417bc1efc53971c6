"""Simulated stores in several time zones, and the demo's injected incident."""

from __future__ import annotations

from collections import Counter

import pytest

from foundation.contract import Sale, Store, decode_event
from producers.simulator import DAY_MS, HOUR_MS
from producers.zoned import ZonedSimulator, renamed, zone_offset_ms
from shelfstream.demo import DemoOptions, demo_incident, trading_day_start_ms

MONDAY = 1_772_409_600_000  # 2026-03-02T00:00:00Z
FULL = (10**6, 10**6)  # shelves that never run empty: the test is about hours, not stock


def test_each_store_announces_its_zone_and_trades_in_local_time() -> None:
    sim = ZonedSimulator(
        7, 3, 8, MONDAY, baskets_per_hour=200, zones=("Europe/Berlin", "Asia/Tokyo"), initial_stock=FULL
    )
    events = sim.events_until(MONDAY + DAY_MS)
    first = {}
    hours: dict[str, Counter[int]] = {}
    for e in events:
        ev = decode_event(e.data)
        first.setdefault(e.store_id, ev)
        if isinstance(ev, Sale):
            hours.setdefault(e.store_id, Counter())[(e.ts_ms % DAY_MS) // HOUR_MS] += 1
    assert isinstance(first["store-001"], Store)
    assert first["store-001"].timezone == "Europe/Berlin"
    assert isinstance(first["store-002"], Store)
    assert first["store-002"].timezone == "Asia/Tokyo"
    assert first["store-003"].timezone == "Europe/Berlin"  # round robin
    # Open 07:00-22:00 local: Berlin (UTC+1 in March) from 06:00 UTC, Tokyo (UTC+9) from 22:00 UTC.
    assert min(hours["store-001"]) == 6
    assert max(hours["store-001"]) == 20
    assert set(hours["store-002"]) <= set(range(22, 24)) | set(range(13))


def test_an_outage_stops_one_stores_sales_and_nothing_else() -> None:
    outage = (MONDAY + 10 * HOUR_MS, MONDAY + 11 * HOUR_MS)
    sim = ZonedSimulator(
        7,
        2,
        8,
        MONDAY,
        baskets_per_hour=300,
        zones=("UTC",),
        outages={"store-001": outage},
        initial_stock=FULL,
    )
    events = sim.events_until(MONDAY + DAY_MS)
    during = Counter(e.store_id for e in events if outage[0] <= e.ts_ms < outage[1] and b'"sale"' in e.data)
    assert during["store-001"] == 0
    assert during["store-002"] > 50


def test_an_unknown_zone_is_refused_up_front() -> None:
    with pytest.raises(Exception, match="Mars"):
        ZonedSimulator(7, 1, 4, MONDAY, zones=("Mars/Base",))


def test_history_gets_its_own_event_ids() -> None:
    sim = ZonedSimulator(7, 1, 4, MONDAY, zones=("UTC",), run_id="r1")
    events = sim.events_until(MONDAY + HOUR_MS)
    again = renamed(events, "h")
    assert all(b'"event_id":"hstore-001-' in e.data for e in again)
    assert [decode_event(e.data).event_id for e in again][:2] == ["hstore-001-r1-1", "hstore-001-r1-2"]


def test_zone_offsets_follow_daylight_saving() -> None:
    assert zone_offset_ms("Europe/Berlin", MONDAY) == HOUR_MS
    assert zone_offset_ms("Europe/Berlin", MONDAY + 30 * DAY_MS) == 2 * HOUR_MS  # after 29 March


@pytest.mark.parametrize("offset_days", range(7))
def test_the_demo_day_has_two_weekdays_of_history_before_it(offset_days: int) -> None:
    start = trading_day_start_ms(MONDAY + offset_days * DAY_MS + 10 * HOUR_MS)
    assert start % DAY_MS == 10 * HOUR_MS
    assert start <= MONDAY + offset_days * DAY_MS + 10 * HOUR_MS
    weekday = (start // DAY_MS + 3) % 7
    assert weekday in (2, 3, 4)
    incident = demo_incident(DemoOptions(), start)
    assert incident is not None
    assert incident.start_ms > start
    assert demo_incident(DemoOptions(history_days=0), start) is None
