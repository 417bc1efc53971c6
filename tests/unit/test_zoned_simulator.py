"""Simulated stores in several time zones, and the demo's injected incident."""

from __future__ import annotations

from collections import Counter

import pytest

from foundation.contract import Sale, Store, decode_event
from foundation.timeunits import DAY_MS, HOUR_MS
from producers.zoned import (
    LIVE_BASKETS_PER_HOUR,
    ZonedSimulator,
    live_simulator,
    renamed,
    zone_offset_ms,
    zones_trading_at,
)
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


# --- `simulate` run live: its stores trade now, whatever the hour -------------------------------------

START_DATES = ("2026-12-07", "2026-03-29", "2026-06-21", "2026-10-25")  # winter, two DST changes, summer


def _starts() -> list[int]:
    import datetime as dt

    out = []
    for date in START_DATES:
        midnight = int(dt.datetime.fromisoformat(f"{date}T00:00:00+00:00").timestamp() * 1000)
        out.extend(midnight + hour * HOUR_MS + 30 * 60_000 for hour in range(24))
    return out


def _sales(sim: ZonedSimulator, start_ms: int, seconds: int) -> int:
    events = sim.events_until(start_ms + seconds * 1000)
    return sum(1 for e in events if isinstance(decode_event(e.data), Sale))


def test_live_stores_are_put_in_zones_where_it_is_trading_time() -> None:
    for start in _starts():
        for count in (1, 3, 10):
            zones = zones_trading_at(start, count)
            assert len(zones) == count
            for zone in zones:
                local_hour = ((start + zone_offset_ms(zone, start)) % DAY_MS) / HOUR_MS
                assert 8 <= local_hour <= 20, (start, zone, local_hour)


@pytest.mark.parametrize(("stores", "seconds"), [(3, 20), (10, 60)])
def test_the_first_live_run_of_the_readme_sells_at_any_hour(stores: int, seconds: int) -> None:
    """`shelfstream simulate --stores 3 --duration 20` at speed 1, the README's first live run, must
    show trade at any hour of the year: stores placed in their night would put only their catalogs and
    stock takes, and alerts and the report would have nothing to show."""
    for start in _starts():
        assert _sales(live_simulator(7, stores, 20, start), start, seconds) >= 5, start


def test_named_zones_are_kept_for_a_live_run() -> None:
    sim = live_simulator(7, 2, 4, MONDAY, zones=("Asia/Tokyo",))
    assert {sim.zone_of(s) for s in sim.store_ids} == {"Asia/Tokyo"}


def test_simulate_takes_zones_and_rejects_unknown_ones(capsys: pytest.CaptureFixture[str]) -> None:
    from shelfstream.cli import build_parser

    args = build_parser().parse_args(["simulate", "--zones", "Asia/Tokyo, Europe/Berlin"])
    assert args.zones == ("Asia/Tokyo", "Europe/Berlin")
    assert args.baskets_per_hour == LIVE_BASKETS_PER_HOUR
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["simulate", "--zones", "Mars/Base"])
    assert exit_.value.code == 2
    assert "'Mars/Base' is not an IANA time zone" in capsys.readouterr().err
