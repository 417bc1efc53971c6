"""Anomaly detection in a store's own local time, from its second day (issue: time zones, new stores).

Stores trade in local time (opening hours, closed days); the events go through the whole core
(`ShardCore`), so the `store` event, the zone, the fleet's shape, the checkpoint and the alert
contributors are all exercised as the processor runs them.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass, field

import msgspec
import numpy as np
import orjson
import pytest

from foundation.contract import Anomaly, Rejection, Store, decode_event, format_ts, parse_ts
from processors.core import CoreConfig, ShardCore
from processors.core.detectors import DetectorConfig, SeasonalDetector
from processors.core.monitor import AnomalyMonitor
from tests.unit import stored

MIN = 60_000
HOUR = 60 * MIN
CATEGORIES = ("grocery", "household", "tech")


@dataclass(frozen=True)
class Incident:
    day: int  # day of the store's history (0 = its first)
    start: float  # local hour
    end: float
    kind: str  # "collapse", "spike", "refunds"
    size: float  # collapse: share left; spike: multiplier; refunds: extra per hour


@dataclass
class Shop:
    store_id: str
    zone: str
    first: dt.date  # first local day of trading
    days: int
    tx_per_day: float = 600.0
    closed: frozenset[int] = frozenset({6})  # weekdays closed (Monday = 0)
    hours: tuple[float, float] = (8.0, 20.0)
    incidents: tuple[Incident, ...] = ()
    zone_events: dict[int, str] = field(default_factory=dict)  # day -> a new zone from that day


def _shape(hours: tuple[float, float]) -> np.ndarray:
    t = np.arange(1440) / 60.0
    shape = 0.4 + 1.2 * np.exp(-0.5 * ((t - 12.5) / 0.8) ** 2) + 0.8 * np.exp(-0.5 * ((t - 17.5) / 1.0) ** 2)
    shape *= np.clip(0.3 + 0.7 * (t - hours[0]) / 0.75, 0.3, 1.0)
    shape[(t < hours[0]) | (t >= hours[1])] = 0.0
    normalised: np.ndarray = shape / shape.sum()
    return normalised


def _local_ms(zone: str, day: dt.date, minute: int) -> int:
    """UTC epoch ms of a local minute of a day (opening hours keep local time across DST)."""
    when = dt.datetime(day.year, day.month, day.day, tzinfo=zoneinfo.ZoneInfo(zone)) + dt.timedelta(
        minutes=minute
    )
    # Adding minutes to an aware datetime is wall-clock arithmetic: exactly local time.
    return int(when.timestamp() * 1000)


def trade(shop: Shop, seed: int) -> list[tuple[int, bytes]]:
    """(event time, raw event) of a shop's history, with a `store` event first."""
    rng = np.random.default_rng(seed)
    sid = shop.store_id
    out: list[tuple[int, bytes]] = []
    n = 0

    def emit(ts_ms: int, body: str) -> None:
        nonlocal n
        n += 1
        raw = f'{{"event_id":"{sid}-{n}","store_id":"{sid}","ts":"{format_ts(ts_ms)}",{body}}}'
        out.append((ts_ms, raw.encode()))

    start = _local_ms(shop.zone, shop.first, 5 * 60)
    emit(start, f'"type":"store","timezone":"{shop.zone}"')
    for p in range(12):
        emit(start + 1000, f'"type":"product","product_id":"p-{p}","category":"{CATEGORIES[p % 3]}"')
    popularity = 1.0 / np.arange(1, 13)
    popularity /= popularity.sum()
    shape = _shape(shop.hours)
    zone = shop.zone
    for d in range(shop.days):
        day = shop.first + dt.timedelta(days=d)
        if d in shop.zone_events:
            zone = shop.zone_events[d]
            emit(_local_ms(zone, day, 4 * 60), f'"type":"store","timezone":"{zone}"')
        if day.weekday() in shop.closed:
            continue
        level = shop.tx_per_day * (1.3 if day.weekday() == 5 else 1.0) * float(np.exp(rng.normal(0, 0.05)))
        sales = shape * level
        refunds = sales * 0.015
        bad = int(rng.integers(0, 12))
        extra = np.zeros(1440)
        for inc in shop.incidents:
            if inc.day == d:
                span = slice(int(inc.start * 60), int(inc.end * 60))
                if inc.kind == "refunds":
                    refunds[span] += inc.size / 60.0
                elif inc.kind == "spike":
                    extra[span] = sales[span] * (inc.size - 1.0)
                else:
                    sales[span] *= inc.size
        for kind, lam in (("sale", sales), ("spike", extra), ("refund", refunds)):
            counts = rng.poisson(lam)
            for minute in np.nonzero(counts)[0].tolist():
                for _ in range(int(counts[minute])):
                    ts = _local_ms(zone, day, minute) + int(rng.integers(0, MIN))
                    p = (
                        bad
                        if kind == "spike" or (kind == "refund" and lam is refunds and extra.any())
                        else None
                    )
                    product = p if p is not None else int(rng.choice(12, p=popularity))
                    if kind == "refund":
                        body = f'"type":"refund","product_id":"p-{product}","quantity":1,"unit_price":3.0'
                    else:
                        body = f'"type":"sale","product_id":"p-{product}","quantity":1,"unit_price":3.0'
                    emit(ts, body)
    return out


def run(
    shops: Iterable[Shop], seed: int = 1, core: ShardCore | None = None
) -> tuple[ShardCore, list[Anomaly]]:
    events = sorted((e for i, s in enumerate(shops) for e in trade(s, seed + i)), key=lambda e: e[0])
    core = core or ShardCore(CoreConfig(archive=False))
    for _, raw in events:
        core.apply(raw)
    core.finish()
    alerts = [a for a in core.drain().alerts if isinstance(a, Anomaly)]
    return core, alerts


def during(alerts: list[Anomaly], shop: Shop, day: int, start: float, end: float) -> list[Anomaly]:
    date = shop.first + dt.timedelta(days=day)
    lo = _local_ms(shop.zone, date, int(start * 60))
    hi = _local_ms(shop.zone, date, int(end * 60))
    return [a for a in alerts if a.store_id == shop.store_id and parse_ts(a.window_start) < hi
            and parse_ts(a.window_end) > lo]  # fmt: skip


def of(alerts: list[Anomaly], shop: Shop) -> list[Anomaly]:
    return [a for a in alerts if a.store_id == shop.store_id]


# --- the contract ------------------------------------------------------------------------------


def test_a_store_event_carries_an_iana_zone_and_defaults_to_utc() -> None:
    raw = (
        b'{"type":"store","event_id":"s1","store_id":"b-1","ts":"2026-03-01T08:00:00Z",'
        b'"timezone":"Europe/Berlin"}'
    )
    event = decode_event(raw)
    assert isinstance(event, Store)
    assert event.timezone == "Europe/Berlin"
    plain = decode_event(b'{"type":"store","event_id":"s2","store_id":"b-1","ts":"2026-03-01T08:00:00Z"}')
    assert isinstance(plain, Store)
    assert plain.timezone == "UTC"


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "Europe/Berlinn", "../etc/passwd", "CET+1"])
def test_an_unknown_zone_is_rejected_with_a_reason(zone: str) -> None:
    raw = (
        b'{"type":"store","event_id":"s1","store_id":"b-1","ts":"2026-03-01T08:00:00Z","timezone":"'
        + zone.encode()
        + b'"}'
    )
    result = decode_event(raw)
    assert isinstance(result, Rejection)
    assert "unknown time zone" in result.reason
    assert zone in result.reason
    core = ShardCore()
    assert core.apply(raw, "line-1") is False
    (rejected,) = core.drain().rejected
    assert "unknown time zone" in rejected.reason
    assert rejected.record == raw  # kept as it came


# --- local time ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "first", "change"),
    [
        ("Europe/Berlin", dt.date(2026, 3, 9), 20),  # spring forward on Sunday 29 March
        ("America/New_York", dt.date(2026, 10, 19), 13),  # fall back on Sunday 1 November
        ("Australia/Sydney", dt.date(2026, 3, 23), 13),  # fall back on Sunday 5 April (southern autumn)
    ],
)
def test_a_daylight_saving_change_raises_no_alert(zone: str, first: dt.date, change: int) -> None:
    shop = Shop("dst-1", zone, first, days=28)
    core, alerts = run([shop])
    # Sales in the week around the change (the Monday before to the Sunday after) are ordinary:
    # the store's hours moved in UTC, not in its local time. (Chance may still page once in four
    # weeks, e.g. four refunds in a quarter hour: `make bench-detect` measures how often.)
    for day in range(change - 6, change + 8):
        assert [a for a in during(alerts, shop, day, 0.0, 24.0) if a.metric == "sales"] == [], day
    assert len(alerts) <= 1
    monitor = core.state.monitor
    assert monitor is not None
    assert monitor.zone("dst-1") == zone
    det = monitor.detectors["dst-1"]
    assert isinstance(det, SeasonalDetector)
    # Opening hours stayed in the same local slots: nothing was learned at 06:00-07:45 local.
    assert max(det.profile[0][24:32]) == 0.0
    assert min(det.profile[0][40:72]) > 0.0  # 10:00-18:00 local, every weekday slot


def test_the_explanation_names_local_time_and_the_zone() -> None:
    shop = Shop("tokyo-1", "Asia/Tokyo", dt.date(2026, 5, 4), days=3,
                incidents=(Incident(1, 13.5, 15.5, "collapse", 0.0),))  # fmt: skip
    _, alerts = run([shop])
    (alert,) = during(alerts, shop, 1, 13.5, 15.5)
    assert alert.metric == "sales"
    text = alert.explanation
    assert "(Asia/Tokyo)" in text
    assert "on Tuesday 2026-05-05" in text
    local = dt.datetime.fromtimestamp(parse_ts(alert.window_start) / 1000, zoneinfo.ZoneInfo("Asia/Tokyo"))
    assert f"between {local:%H:%M} and " in text
    assert 13 <= local.hour < 16


def test_a_later_store_event_changes_the_zone() -> None:
    # A store moves its tills' clock from UTC to New York on day 8: hours stay 8-20 in local time.
    shop = Shop("moved-1", "UTC", dt.date(2026, 6, 1), days=14, zone_events={7: "America/New_York"})
    core, alerts = run([shop])
    monitor = core.state.monitor
    assert monitor is not None
    assert monitor.zone("moved-1") == "America/New_York"
    # The day of the move itself is a new day of trade at new hours; past it, nothing is raised.
    later = [
        a
        for a in alerts
        if parse_ts(a.window_start) >= _local_ms("America/New_York", dt.date(2026, 6, 10), 0)
    ]
    assert later == []
    moved = _local_ms("America/New_York", dt.date(2026, 6, 8), 0)
    assert all(
        "(America/New_York)" in a.explanation for a in of(alerts, shop) if parse_ts(a.window_start) >= moved
    )


def test_window_records_carry_the_zone_of_a_store_outside_utc() -> None:
    """The dashboard draws a store's windows in its local time from the zone on its window records."""
    from processors.core import ShardCore

    core = ShardCore(CoreConfig(archive=False))
    sale = (
        '{{"event_id":"{i}-{s}","type":"sale","store_id":"{s}","ts":"2026-06-01T{h:02d}:00:00.000Z",'
        '"product_id":"p1","quantity":1,"unit_price":2.0}}'
    )
    core.apply(
        b'{"event_id":"z","type":"store","store_id":"tokyo-1","ts":"2026-06-01T00:00:00.000Z",'
        b'"timezone":"Asia/Tokyo"}'
    )
    for i, hour in enumerate(range(1, 5)):
        for store in ("tokyo-1", "utc-1"):
            core.apply(sale.format(i=i, s=store, h=hour).encode())
    core.finish()
    records = [msgspec.json.decode(w) for w in core.drain().windows]
    zones = {(r["store_id"], r.get("timezone")) for r in records}
    assert zones == {("tokyo-1", "Asia/Tokyo"), ("utc-1", None)}  # UTC: the field is left out


def test_old_inputs_without_a_store_event_are_utc() -> None:
    monitor = AnomalyMonitor(DetectorConfig(), CoreConfig().window_specs())
    assert monitor.zone("never-said") == "UTC"
    assert monitor.offset_ms("never-said", 1_772_409_600_000) == 0
    monitor.set_zone("b-1", "Europe/Berlin")
    assert monitor.offset_ms("b-1", parse_ts("2026-01-15T12:00:00Z")) == HOUR
    assert monitor.offset_ms("b-1", parse_ts("2026-07-15T12:00:00Z")) == 2 * HOUR


# --- from the second day -------------------------------------------------------------------------


def test_an_incident_on_the_second_day_is_caught_and_explained_by_its_product() -> None:
    fleet = [
        Shop(f"peer-{i}", "Europe/Berlin", dt.date(2026, 4, 6), days=3, tx_per_day=500 + 80 * i)
        for i in range(3)
    ]
    shop = Shop("new-1", "Europe/Berlin", dt.date(2026, 4, 6), days=3,
                incidents=(Incident(1, 11.0, 12.5, "refunds", 20.0),))  # fmt: skip
    _, alerts = run([*fleet, shop])
    hits = during(alerts, shop, 1, 11.0, 12.5)
    assert len(hits) == 1
    (alert,) = hits
    assert alert.metric == "refunds"
    assert alert.contributors, "every anomaly alert names the products behind it"
    top = alert.contributors[0]
    assert top.category in CATEGORIES
    assert 0.0 < top.share <= 1.0
    assert sum(c.share for c in alert.contributors) <= 1.0 + 1e-6
    assert f"mostly {top.product_id} ({top.category}) ({top.observed} of " in alert.explanation
    assert during(alerts, shop, 0, 0.0, 24.0) == []  # nothing on its first day
    assert [a for a in alerts if a.store_id != "new-1"] == []


def test_a_spike_names_the_product_sold_at_the_wrong_price() -> None:
    shop = Shop(
        "spike-1", "UTC", dt.date(2026, 4, 6), days=3, incidents=(Incident(1, 15.0, 16.5, "spike", 3.5),)
    )
    _, alerts = run([shop])
    (alert,) = during(alerts, shop, 1, 15.0, 16.5)
    assert alert.metric == "sales"
    assert alert.observed > alert.expected[1]
    assert alert.contributors[0].share >= 0.5  # one product carries most of the jump
    assert "mostly " + alert.contributors[0].product_id in alert.explanation


def test_a_first_week_outage_does_not_make_the_same_slot_a_week_later_an_alert() -> None:
    # Tuesday of the first week: the tills are down over lunch. A week later, ordinary trade.
    shop = Shop("early-1", "Europe/London", dt.date(2026, 9, 7), days=16,
                incidents=(Incident(1, 11.5, 14.0, "collapse", 0.0),))  # fmt: skip
    _, alerts = run([shop])
    assert len(during(alerts, shop, 1, 11.5, 14.0)) == 1  # caught on its second day
    assert during(alerts, shop, 8, 0.0, 24.0) == []  # the same Tuesday slot a week on is normal
    assert during(alerts, shop, 15, 0.0, 24.0) == []
    assert len(of(alerts, shop)) == 1


def test_a_first_day_outage_does_not_become_normal() -> None:
    fleet = [Shop(f"peer-{i}", "UTC", dt.date(2026, 4, 6), days=9, tx_per_day=500 + 50 * i) for i in range(3)]
    shop = Shop(
        "odd-1", "UTC", dt.date(2026, 4, 6), days=9, incidents=(Incident(0, 10.0, 14.0, "collapse", 0.0),)
    )
    _, alerts = run([*fleet, shop])
    assert of(alerts, shop) == []  # day 2 and on, ordinary trade at 10-14 is no "jump"


# --- closed days and late stores -----------------------------------------------------------------


def test_a_store_closed_on_sundays_gives_no_alert_on_sunday_or_monday_morning() -> None:
    open_sundays = [
        Shop(
            f"open-{i}",
            "Europe/Berlin",
            dt.date(2026, 4, 6),
            days=15,
            closed=frozenset(),
            tx_per_day=500 + 70 * i,
        )
        for i in range(3)
    ]
    shop = Shop("closed-1", "Europe/Berlin", dt.date(2026, 4, 6), days=15, closed=frozenset({6}))
    _, alerts = run([*open_sundays, shop])
    for sunday in (6, 13):
        assert during(alerts, shop, sunday, 0.0, 24.0) == []
        assert during(alerts, shop, sunday + 1, 0.0, 12.0) == []
    assert of(alerts, shop) == []


def test_a_store_that_opens_weeks_after_the_others_is_judged_from_its_own_second_day() -> None:
    fleet = [Shop(f"old-{i}", "America/Chicago", dt.date(2026, 4, 6), days=22, tx_per_day=450 + 60 * i)
             for i in range(3)]  # fmt: skip
    late = Shop("late-1", "America/Chicago", dt.date(2026, 4, 20), days=8, hours=(9.0, 21.0),
                incidents=(Incident(1, 16.0, 18.0, "collapse", 0.05),))  # fmt: skip
    _, alerts = run([*fleet, late])
    hits = during(alerts, late, 1, 16.0, 18.0)
    assert len(hits) == 1
    assert hits[0].metric == "sales"
    assert "fell to" in hits[0].explanation
    assert "(America/Chicago)" in hits[0].explanation
    assert len(of(alerts, late)) == 1
    assert [a for a in alerts if a.store_id != "late-1"] == []


# --- state ---------------------------------------------------------------------------------------


def test_zones_fleet_and_detectors_survive_a_checkpoint() -> None:
    shops = [
        Shop("ck-1", "Europe/Berlin", dt.date(2026, 3, 23), days=10,
             incidents=(Incident(8, 11.0, 12.5, "refunds", 22.0),)),
        Shop("ck-2", "America/Los_Angeles", dt.date(2026, 3, 23), days=10,
             incidents=(Incident(8, 14.0, 16.0, "collapse", 0.0),)),
    ]  # fmt: skip
    events = sorted((e for i, s in enumerate(shops) for e in trade(s, 5 + i)), key=lambda e: e[0])
    cut = next(i for i, (ts, _) in enumerate(events) if ts >= parse_ts("2026-03-30T00:00:00Z"))
    whole = ShardCore(CoreConfig(archive=False))
    part = ShardCore(CoreConfig(archive=False))
    for _, raw in events[:cut]:
        whole.apply(raw)
        part.apply(raw)
    whole.drain()
    part.drain()
    restored = ShardCore.restore(part.snapshot())
    monitor = restored.state.monitor
    assert monitor is not None
    assert monitor.zone("ck-1") == "Europe/Berlin"
    assert monitor.fleet.days[0] > 0
    assert monitor.mix["ck-1"]
    for core in (whole, restored):
        for _, raw in events[cut:]:
            core.apply(raw)
        core.finish()
    a = [x for x in whole.drain().alerts if isinstance(x, Anomaly)]
    b = [x for x in restored.drain().alerts if isinstance(x, Anomaly)]
    assert a == b
    assert len(a) >= 2
    assert all(alert.contributors for alert in a)


def test_a_window_is_judged_in_the_zone_of_its_own_time() -> None:
    # A store event moves the store to Tokyo at 08:40 while the 08:30-08:45 window is still open:
    # the windows before it stay in UTC even though they close after it.
    core = ShardCore(CoreConfig(archive=False, allowed_lateness_ms=0))

    def event(kind: str, eid: str, minute: int, **fields: object) -> bytes:
        ts = f"2026-03-02T{8 + minute // 60:02d}:{minute % 60:02d}:00Z"
        return orjson.dumps({"type": kind, "event_id": eid, "store_id": "mv-1", "ts": ts} | fields)

    for m in range(0, 40, 5):
        core.apply(event("sale", f"a{m}", m, product_id="p", quantity=1, unit_price=1.0))
    core.apply(event("store", "z", 40, timezone="Asia/Tokyo"))
    for m in range(45, 80, 5):
        core.apply(event("sale", f"b{m}", m, product_id="p", quantity=1, unit_price=1.0))
    rows = [orjson.loads(w) for w in core.drain().windows if b'"tumbling"' in w]
    zones = {r["window_start"][11:16]: r.get("timezone") for r in rows}
    assert zones["08:15"] is None
    assert zones["08:30"] is None  # began before the move, closed after it: still UTC
    assert zones["08:45"] == "Asia/Tokyo"
    monitor = core.state.monitor
    assert monitor is not None
    assert monitor.offset_ms("mv-1", parse_ts("2026-03-02T08:30:00Z")) == 0
    assert monitor.offset_ms("mv-1", parse_ts("2026-03-02T08:45:00Z")) == 9 * HOUR
    assert stored.monitor(monitor).zone("mv-1", parse_ts("2026-03-02T08:00:00Z")) == "UTC"
