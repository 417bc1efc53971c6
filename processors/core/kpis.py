"""Daily inventory KPIs per store, product and local day: one implementation, pure (no I/O, no clock).

Used by both `shelfstream kpis` (over the Iceberg events table, history/kpi_tables.py) and `backtest`
(over its input file, ``DIR/kpis.jsonl``), so the two give the same figures for the same events.

Definitions (docs/history.md has them with their sources):

- A store's **local day** is the calendar day in the store's time zone (from its ``store`` events,
  UTC before the first one); an event belongs to the local day of its ``ts``.
- **Open** time: the local clock hours of the day in which the store sold anything (any product), as
  the weekly report has it: a store that sells nothing in an hour is taken to be closed then.
- **Stock** follows the ledger's rules (sale minus, refund and restock plus, count sets it), applied in
  event-time order (stable for equal times); a product starts at 0 at its first event, as in the
  processor. ``end_stock`` is the stock at the end of the local day.
- **minutes_out_of_stock**: open minutes during which the product's stock was at or below zero.
- **availability** (on-shelf availability, ECR Europe; Gruen, Corsten and Bharadwaj 2002):
  1 - minutes_out_of_stock / open_minutes; empty when the store was never open that day.
- **lost sales** (units): the product's demand rate while on the shelf (units sold per in-stock open
  minute, over the day and up to 6 earlier days that have a row) x minutes_out_of_stock; empty when the
  product was never seen on the shelf in that span (no rate to apply: unknown, not zero).
  Its value is lost units x the product's price (the day's mean sale price, else the last known one).
- **days_of_cover**: end_stock / average daily units sold (the day and up to 6 earlier days that have a
  row); 0 when end_stock <= 0; empty when nothing was sold in those days.
- **sell_through**: units sold / units delivered (restocks) that day; empty with no delivery.

Missing data is not zero: a store with no events on a local day has no rows for that day (its feed was
silent or it was closed: nothing is known); a product gets a row on a day it had events, or, on a day
the store was open, when its carried stock was at or below zero all the while (an empty shelf makes no
events, and that stock-out is what the KPIs are for). A product with no events and stock on hand gets
no row: "0 sold, available" is not claimed for a day nothing was observed about it.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from foundation.timeunits import HOUR_MS, MINUTE_MS

TRAILING_DAYS: Final = 7  # the day and up to 6 earlier days with a row: demand rate, days of cover

PRODUCT_FIELDS: Final = (
    "store_id",
    "product_id",
    "day",
    "timezone",
    "events",
    "units_sold",
    "revenue",
    "refund_units",
    "refund_amount",
    "units_delivered",
    "start_stock",
    "end_stock",
    "price",
    "open_minutes",
    "minutes_out_of_stock",
    "availability",
    "lost_units",
    "lost_value",
    "days_of_cover",
    "sell_through",
)
STORE_FIELDS: Final = (
    "store_id",
    "day",
    "timezone",
    "products",
    "units_sold",
    "revenue",
    "refund_units",
    "refund_amount",
    "units_delivered",
    "end_stock",
    "open_minutes",
    "products_out_of_stock",
    "minutes_out_of_stock",
    "availability",
    "lost_units",
    "lost_value",
    "sell_through",
)


class KpiEvent(NamedTuple):
    """What the KPIs need of an event (any other field is ignored)."""

    store_id: str
    ts_ms: int
    type: str
    product_id: str | None = None
    quantity: int | None = None
    unit_price: float | None = None
    stock_count: int | None = None  # a count (stock take) event's count
    price: float | None = None
    timezone: str | None = None
    event_id: str = ""


def kpi_event(ev: Any) -> KpiEvent:
    """The KpiEvent of a decoded contract event (foundation.contract)."""
    return KpiEvent(
        store_id=ev.store_id,
        ts_ms=int(ev.ts.timestamp() * 1000) if isinstance(ev.ts, dt.datetime) else int(ev.ts),
        type=str(getattr(type(ev).__struct_config__, "tag", "") or type(ev).__name__.lower()),
        product_id=getattr(ev, "product_id", None),
        quantity=getattr(ev, "quantity", None),
        unit_price=getattr(ev, "unit_price", None),
        stock_count=getattr(ev, "count", None),
        price=getattr(ev, "price", None),
        timezone=getattr(ev, "timezone", None),
        event_id=ev.event_id,
    )


@dataclass
class ProductState:
    """What carries from one day to the next for a store's product."""

    stock: int = 0
    price: float | None = None
    # (day, units sold, in-stock open minutes) of its last TRAILING_DAYS - 1 rows
    history: deque[tuple[str, int, float]] = field(default_factory=lambda: deque(maxlen=TRAILING_DAYS - 1))


@dataclass
class StoreState:
    timezone: str = "UTC"
    products: dict[str, ProductState] = field(default_factory=dict)


State = dict[str, StoreState]


def zone(name: str) -> dt.tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return dt.UTC


def local_day(ts_ms: int, tz: dt.tzinfo) -> dt.date:
    return dt.datetime.fromtimestamp(ts_ms / 1000, tz).date()


def day_bounds(day: dt.date, tz: dt.tzinfo) -> tuple[int, int]:
    """[start, end) of a local day as epoch milliseconds (23 or 25 hours across a DST change)."""
    start = dt.datetime.combine(day, dt.time(), tz)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tz)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def hour_start(ts_ms: int, tz: dt.tzinfo) -> int:
    """The start of the local clock hour holding ``ts_ms``, as epoch milliseconds."""
    local = dt.datetime.fromtimestamp(ts_ms / 1000, tz)
    return int(local.replace(minute=0, second=0, microsecond=0).timestamp() * 1000)


def compute(
    events: Iterable[KpiEvent],
    state: State | None = None,
    since: dt.date | None = None,
    until: dt.date | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], State]:
    """Product rows and store rows of every local day with events, and the state after the last one.

    ``state`` is the state at the start of ``since`` (each store's own local day); events of local days
    before ``since`` only move a store's time zone (their effects are in ``state``), those after
    ``until`` are left out. ``state`` is updated in place and returned.
    """
    state = state if state is not None else {}
    by_store: dict[str, list[KpiEvent]] = {}
    for ev in events:
        by_store.setdefault(ev.store_id, []).append(ev)
    product_rows: list[dict[str, Any]] = []
    store_rows: list[dict[str, Any]] = []
    for store_id in sorted(by_store):
        store = state.setdefault(store_id, StoreState())
        for day, zone_name, day_events in _days(sorted(by_store[store_id], key=_order), store):
            if since is not None and day < since:
                continue
            if until is not None and day > until:
                break
            rows, open_minutes = _day(store_id, store, day, zone_name, day_events)
            product_rows.extend(rows)
            store_rows.append(store_row(store_id, day.isoformat(), zone_name, open_minutes, rows))
    return product_rows, store_rows, state


def _order(ev: KpiEvent) -> tuple[int, str]:
    """Event time, ties broken by event id: the same order whichever path the events came by."""
    return ev.ts_ms, ev.event_id


def _days(events: list[KpiEvent], store: StoreState) -> Iterator[tuple[dt.date, str, list[KpiEvent]]]:
    """A store's events grouped by local day, with the zone each day is reckoned in.

    A ``store`` event's zone applies from that event on (the store's own time zone, as the processor
    has it); a day is reckoned (bounds, hours) in the zone of its first event, and an event that a new
    zone would put on an earlier day stays on the current one (days never go backwards).
    """
    current: dt.date | None = None
    current_zone = store.timezone
    bucket: list[KpiEvent] = []
    for ev in events:
        if ev.type == "store" and ev.timezone:
            store.timezone = ev.timezone
        day = local_day(ev.ts_ms, zone(store.timezone))
        if current is not None and day > current:
            yield current, current_zone, bucket
            bucket = []
        if current is None or day > current:
            current, current_zone = day, store.timezone
        bucket.append(ev)
    if current is not None:
        yield current, current_zone, bucket


def _day(
    store_id: str, store: StoreState, day: dt.date, zone_name: str, events: list[KpiEvent]
) -> tuple[list[dict[str, Any]], float]:
    tz = zone(zone_name)
    start, end = day_bounds(day, tz)
    open_hours = sorted({hour_start(e.ts_ms, tz) for e in events if e.type == "sale"})
    open_spans = [(max(h, start), min(h + HOUR_MS, end)) for h in open_hours]
    by_product: dict[str, list[KpiEvent]] = {}
    for ev in events:
        if ev.product_id is not None and ev.type != "store":
            by_product.setdefault(ev.product_id, []).append(ev)
    rows = []
    for product_id in sorted(set(by_product) | set(store.products)):
        mine = by_product.get(product_id, [])
        known = store.products.get(product_id)
        if not mine and (known is None or known.stock > 0 or not open_spans):
            continue  # nothing observed about it today (missing, not zero)
        product = store.products.setdefault(product_id, ProductState())
        rows.append(_product_day(store_id, product_id, zone_name, day, product, mine, open_spans))
    return rows, round(sum(b - a for a, b in open_spans) / MINUTE_MS, 3)


def _product_day(
    store_id: str,
    product_id: str,
    timezone: str,
    day: dt.date,
    product: ProductState,
    events: list[KpiEvent],
    open_spans: list[tuple[int, int]],
) -> dict[str, Any]:
    start_stock = product.stock
    stock = start_stock
    sold = refunded = delivered = 0
    revenue = refund_amount = 0.0
    changes: list[tuple[int, int]] = []  # (time, stock from then on)
    for ev in events:
        qty = ev.quantity or 0
        if ev.type == "sale":
            stock -= qty
            sold += qty
            revenue += qty * (ev.unit_price or 0.0)
        elif ev.type == "refund":
            stock += qty
            refunded += qty
            refund_amount += qty * (ev.unit_price or 0.0)
        elif ev.type == "restock":
            stock += qty
            delivered += qty
        elif ev.type == "count":
            stock = ev.stock_count if ev.stock_count is not None else stock
        elif ev.type == "product" and ev.price is not None:
            product.price = round(ev.price, 4)
        changes.append((ev.ts_ms, stock))
    oos_ms = out_of_stock_ms(start_stock, changes, open_spans)
    open_ms = sum(b - a for a, b in open_spans)
    # rounded as stored, so a state rebuilt from stored rows is the state kept in memory
    open_min = round(open_ms / MINUTE_MS, 3)
    oos_min = round(oos_ms / MINUTE_MS, 3)
    in_stock_min = open_min - oos_min
    if sold:
        product.price = round(revenue / sold, 4)
    # trailing spans: this day and up to TRAILING_DAYS - 1 earlier rows
    span_sold = sold + sum(h[1] for h in product.history)
    span_minutes = in_stock_min + sum(h[2] for h in product.history)
    span_days = 1 + len(product.history)
    lost_units: float | None
    if oos_min == 0:
        lost_units = 0.0
    elif span_minutes > 0:
        lost_units = span_sold / span_minutes * oos_min
    else:
        lost_units = None
    lost_value = None
    if lost_units is not None:
        if product.price is not None:
            lost_value = lost_units * product.price
        elif not lost_units:
            lost_value = 0.0
    daily_demand = span_sold / span_days
    days_of_cover: float | None
    if stock <= 0:
        days_of_cover = 0.0
    elif daily_demand > 0:
        days_of_cover = stock / daily_demand
    else:
        days_of_cover = None
    product.stock = stock
    product.history.append((day.isoformat(), sold, in_stock_min))
    return {
        "store_id": store_id,
        "product_id": product_id,
        "day": day.isoformat(),
        "timezone": timezone,
        "events": len(events),
        "units_sold": sold,
        "revenue": round(revenue, 4),
        "refund_units": refunded,
        "refund_amount": round(refund_amount, 4),
        "units_delivered": delivered,
        "start_stock": start_stock,
        "end_stock": stock,
        "price": None if product.price is None else round(product.price, 4),
        "open_minutes": open_min,
        "minutes_out_of_stock": oos_min,
        "availability": None if not open_ms else round(1 - oos_ms / open_ms, 6),
        "lost_units": None if lost_units is None else round(lost_units, 4),
        "lost_value": None if lost_value is None else round(lost_value, 4),
        "days_of_cover": None if days_of_cover is None else round(days_of_cover, 4),
        "sell_through": round(sold / delivered, 6) if delivered else None,
    }


def out_of_stock_ms(
    start_stock: int, changes: list[tuple[int, int]], open_spans: list[tuple[int, int]]
) -> int:
    """Milliseconds of ``open_spans`` in which the stock (``start_stock``, then each change from its
    time on) was at or below zero."""
    total = 0
    for a, b in open_spans:
        level = start_stock
        cursor = a
        for when, after in changes:
            if when <= a:
                level = after
                continue
            if when >= b:
                break
            if level <= 0:
                total += when - cursor
            cursor, level = when, after
        if level <= 0:
            total += b - cursor
    return total


def store_row(
    store_id: str, day: str, timezone: str, open_minutes: float, rows: list[dict[str, Any]]
) -> dict[str, Any]:
    """The store x day roll-up of its product rows (sums; availability over product-minutes)."""
    oos = sum(r["minutes_out_of_stock"] for r in rows)
    product_minutes = open_minutes * len(rows)
    sold = sum(r["units_sold"] for r in rows)
    delivered = sum(r["units_delivered"] for r in rows)
    lost = [r["lost_units"] for r in rows if r["lost_units"] is not None]
    lost_value = [r["lost_value"] for r in rows if r["lost_value"] is not None]
    return {
        "store_id": store_id,
        "day": day,
        "timezone": timezone,
        "products": len(rows),
        "units_sold": sold,
        "revenue": round(sum(r["revenue"] for r in rows), 4),
        "refund_units": sum(r["refund_units"] for r in rows),
        "refund_amount": round(sum(r["refund_amount"] for r in rows), 4),
        "units_delivered": delivered,
        "end_stock": sum(r["end_stock"] for r in rows),
        "open_minutes": open_minutes,
        "products_out_of_stock": sum(1 for r in rows if r["minutes_out_of_stock"] > 0),
        "minutes_out_of_stock": round(oos, 3),
        "availability": round(1 - oos / product_minutes, 6) if product_minutes else None,
        "lost_units": round(sum(lost), 4),
        "lost_value": round(sum(lost_value), 4),
        "sell_through": round(sold / delivered, 6) if delivered else None,
    }
