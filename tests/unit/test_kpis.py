"""The daily inventory KPIs (processors/core/kpis.py) against an independent, minute-by-minute computation
from the raw events, and the properties the tables rely on (a range computed in parts equals one run)."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from history.kpi_tables import state_from_rows
from processors.core.kpis import KpiEvent, compute

MIN = 60_000


def at(day: dt.date, hh: int, mm: int, zone: str = "UTC") -> int:
    moment = dt.datetime.combine(day, dt.time(hh, mm), ZoneInfo(zone))
    return int(moment.timestamp() * 1000)


def independent(events: list[KpiEvent], zone: str) -> dict[tuple[str, str], dict[str, Any]]:
    """The KPIs of one store, written out the simple way: stock replayed minute by minute (events all
    fall on whole minutes), open hours = local hours with a sale, demand rate over the day and up to 6
    earlier rows, cover = end stock / mean daily units of the same rows."""
    tz = ZoneInfo(zone)
    events = sorted(events, key=lambda e: (e.ts_ms, e.event_id))
    days = sorted({dt.datetime.fromtimestamp(e.ts_ms / 1000, tz).date() for e in events})
    stock: dict[str, int] = {}
    price: dict[str, float] = {}
    history: dict[str, list[tuple[int, float]]] = {}
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for day in days:
        start = at(day, 0, 0, zone)
        end = int(dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tz).timestamp() * 1000)
        todays = [e for e in events if start <= e.ts_ms < end]
        open_hours = {
            dt.datetime.fromtimestamp(e.ts_ms / 1000, tz).replace(minute=0, second=0)
            for e in todays
            if e.type == "sale"
        }
        open_minutes = [int(h.timestamp() * 1000) + m * MIN for h in open_hours for m in range(60)]
        products = {e.product_id for e in todays if e.product_id} | {
            p for p, s in stock.items() if s <= 0 and open_hours
        }
        for p in sorted(products):
            mine = [e for e in todays if e.product_id == p]
            level = stock.get(p, 0)
            start_stock = level
            sold = sum(e.quantity or 0 for e in mine if e.type == "sale")
            delivered = sum(e.quantity or 0 for e in mine if e.type == "restock")
            revenue = sum((e.quantity or 0) * (e.unit_price or 0) for e in mine if e.type == "sale")

            def level_at(t: int, mine: list[KpiEvent] = mine, start_stock: int = start_stock) -> int:
                s = start_stock
                for e in (e for e in mine if e.ts_ms <= t):
                    if e.type == "sale":
                        s -= e.quantity or 0
                    elif e.type in ("refund", "restock"):
                        s += e.quantity or 0
                    elif e.type == "count":
                        s = e.stock_count or 0
                return s

            oos = sum(1 for m in open_minutes if level_at(m) <= 0)
            end_stock = level_at(end - 1)
            for e in mine:
                if e.type == "product" and e.price is not None:
                    price[p] = e.price
            if sold:
                price[p] = round(revenue / sold, 4)
            past = history.setdefault(p, [])[-6:]
            in_stock = len(open_minutes) - oos
            span_sold = sold + sum(u for u, _ in past)
            span_min = in_stock + sum(m for _, m in past)
            lost = 0.0 if oos == 0 else (span_sold / span_min * oos if span_min else None)
            mean_daily = span_sold / (1 + len(past))
            cover = 0.0 if end_stock <= 0 else (end_stock / mean_daily if mean_daily else None)
            out[(day.isoformat(), p)] = {
                "units_sold": sold,
                "units_delivered": delivered,
                "end_stock": end_stock,
                "open_minutes": len(open_minutes),
                "minutes_out_of_stock": oos,
                "lost_units": lost,
                "lost_value": None
                if lost is None
                else 0.0
                if lost == 0
                else lost * price[p]
                if p in price
                else None,
                "days_of_cover": cover,
            }
            history[p].append((sold, in_stock))
            stock[p] = end_stock
    return out


def check(rows: list[dict[str, Any]], want: dict[tuple[str, str], dict[str, Any]]) -> None:
    got = {(r["day"], r["product_id"]): r for r in rows}
    assert set(got) == set(want)
    for key, expected in want.items():
        for name, value in expected.items():
            if value is None:
                assert got[key][name] is None, (key, name)
            else:
                assert got[key][name] == pytest.approx(value, abs=2e-3, rel=1e-3), (key, name)


def test_a_day_with_a_stock_out_matches_the_independent_computation() -> None:
    d = dt.date(2026, 8, 3)
    events = [
        KpiEvent("s", at(d, 7, 0), "count", "milk", stock_count=3, event_id="a"),
        KpiEvent("s", at(d, 8, 10), "sale", "milk", quantity=2, unit_price=1.5, event_id="b"),
        KpiEvent(
            "s", at(d, 8, 30), "sale", "milk", quantity=1, unit_price=1.5, event_id="c"
        ),  # empty at 8:30
        KpiEvent("s", at(d, 9, 15), "sale", "bread", quantity=1, unit_price=2.0, event_id="d"),
        KpiEvent("s", at(d, 9, 45), "restock", "milk", quantity=10, event_id="e"),  # back at 9:45
        KpiEvent("s", at(d, 10, 5), "sale", "milk", quantity=1, unit_price=1.5, event_id="f"),
    ]
    rows, stores, _ = compute(events)
    milk = next(r for r in rows if r["product_id"] == "milk")
    # open 8-11 (three hours with a sale); milk empty 8:30-9:45 = 75 minutes
    assert milk["open_minutes"] == 180
    assert milk["minutes_out_of_stock"] == 75
    assert milk["availability"] == pytest.approx(1 - 75 / 180, abs=1e-6)
    assert milk["lost_units"] == pytest.approx(4 / 105 * 75, abs=1e-3)  # 4 sold in 105 minutes on the shelf
    assert milk["lost_value"] == pytest.approx(4 / 105 * 75 * 1.5, abs=1e-3)
    assert milk["end_stock"] == 9
    assert milk["days_of_cover"] == pytest.approx(9 / 4)
    assert milk["sell_through"] == pytest.approx(0.4)
    bread = next(r for r in rows if r["product_id"] == "bread")
    assert bread["end_stock"] == -1
    assert bread["days_of_cover"] == 0.0
    assert bread["lost_units"] is None  # never on the shelf: no rate to apply (unknown, not zero)
    assert stores[0]["units_sold"] == 5
    assert stores[0]["products"] == 2
    check(rows, independent(events, "UTC"))


def test_missing_days_and_unobserved_products_are_not_zero() -> None:
    d = dt.date(2026, 8, 3)
    events = [
        KpiEvent("s", at(d, 9, 0), "count", "tea", stock_count=5, event_id="1"),
        KpiEvent("s", at(d, 9, 0), "count", "jam", stock_count=0, event_id="2"),
        KpiEvent("s", at(d, 9, 30), "sale", "tea", quantity=1, unit_price=3.0, event_id="3"),
        # 4 August: nothing at all from the store; 5 August: only coffee sold
        KpiEvent(
            "s",
            at(d + dt.timedelta(days=2), 10, 0),
            "sale",
            "coffee",
            quantity=1,
            unit_price=4.0,
            event_id="4",
        ),
    ]
    rows, stores, _ = compute(events)
    assert {r["day"] for r in stores} == {"2026-08-03", "2026-08-05"}  # no row for the silent day
    fifth = {r["product_id"] for r in rows if r["day"] == "2026-08-05"}
    # tea had stock and no events: no claim; jam was empty while the store was open: a stock-out row
    assert fifth == {"coffee", "jam"}
    jam = next(r for r in rows if r["day"] == "2026-08-05" and r["product_id"] == "jam")
    assert jam["events"] == 0
    assert jam["minutes_out_of_stock"] == 60
    assert jam["availability"] == 0.0
    check(rows, independent(events, "UTC"))


def test_local_days_follow_the_store_zone() -> None:
    zone = "America/New_York"
    d = dt.date(2026, 8, 3)
    events = [
        KpiEvent("s", at(d, 6, 0, zone), "store", timezone=zone, event_id="z"),
        KpiEvent("s", at(d, 6, 30, zone), "count", "milk", stock_count=2, event_id="a"),
        # 21:30 in New York is the next UTC day: still 3 August for the store
        KpiEvent("s", at(d, 21, 30, zone), "sale", "milk", quantity=2, unit_price=1.0, event_id="b"),
        KpiEvent("s", at(d, 22, 10, zone), "sale", "milk", quantity=1, unit_price=1.0, event_id="c"),
    ]
    rows, stores, _ = compute(events)
    assert [r["day"] for r in stores] == ["2026-08-03"]
    assert stores[0]["timezone"] == zone
    check(rows, independent(events, zone))


events_strategy = st.lists(
    st.tuples(
        st.integers(0, 4),  # day
        st.integers(6, 21),  # hour
        st.integers(0, 59),  # minute
        st.sampled_from(["sale", "sale", "sale", "refund", "restock", "count"]),
        st.sampled_from(["p1", "p2", "p3"]),
        st.integers(1, 6),
    ),
    min_size=1,
    max_size=60,
)


def build(spec: list[tuple[int, int, int, str, str, int]]) -> list[KpiEvent]:
    base = dt.date(2026, 8, 1)
    out = []
    for i, (day, hh, mm, kind, product, qty) in enumerate(spec):
        ts = at(base + dt.timedelta(days=day), hh, mm)
        if kind == "count":
            out.append(KpiEvent("s", ts, kind, product, stock_count=qty, event_id=f"e{i:03d}"))
        else:
            out.append(KpiEvent("s", ts, kind, product, quantity=qty, unit_price=2.0, event_id=f"e{i:03d}"))
    return out


@given(events_strategy)
def test_kpis_equal_the_independent_computation(spec: list[tuple[int, int, int, str, str, int]]) -> None:
    events = build(spec)
    rows, _, _ = compute(events)
    check(rows, independent(events, "UTC"))
    for r in rows:
        assert 0 <= r["minutes_out_of_stock"] <= r["open_minutes"]
        assert r["availability"] is None or 0.0 <= r["availability"] <= 1.0


@given(events_strategy, st.integers(1, 4))
def test_a_range_recomputed_from_the_rows_before_it_is_the_same(
    spec: list[tuple[int, int, int, str, str, int]], split: int
) -> None:
    """What the tables do: days from `since` on, from the state read back from earlier rows."""
    events = build(spec)
    rows, stores, _ = compute(events)
    since = dt.date(2026, 8, 1) + dt.timedelta(days=split)
    before = [r for r in rows if r["day"] < since.isoformat()]
    before_stores = [r for r in stores if r["day"] < since.isoformat()]
    state = state_from_rows(before, before_stores)
    again, again_stores, _ = compute(events, state, since)
    assert again == [r for r in rows if r["day"] >= since.isoformat()]
    assert again_stores == [r for r in stores if r["day"] >= since.isoformat()]
    # and computing the same range twice gives the same rows (idempotent)
    twice, _, _ = compute(events, state_from_rows(before, before_stores), since)
    assert twice == again


@given(events_strategy)
def test_input_order_does_not_matter(spec: list[tuple[int, int, int, str, str, int]]) -> None:
    events = build(spec)
    assert compute(events)[0] == compute(list(reversed(events)))[0]
