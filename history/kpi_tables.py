"""The daily KPI tables (``kpis_daily``: store x product x local day; ``kpis_store_daily``: store x day),
computed from the events table with processors/core/kpis.py and written a range of days at a time.

Recomputing days replaces their partitions (one copy-on-write overwrite of ``day`` in [since, until]),
so running it twice leaves the same rows. The state at the start of ``since`` (each product's stock,
price and last rows; each store's zone) is read back from the KPI rows before it, exactly as the
computation keeps it in memory; when there are none, the computation starts at the first archived day.
Days after ``until`` are not touched: recompute from a day to the end (the default) after a late
change, so the stock carried into later days follows.
"""

from __future__ import annotations

import datetime as dt
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from history.tables import TABLES, Tables, arrow_schema, sort_rows
from processors.core.kpis import KpiEvent, ProductState, State, StoreState, compute

EVENT_FIELDS = (
    "event_id",
    "store_id",
    "ts",
    "type",
    "product_id",
    "quantity",
    "unit_price",
    "count",
    "price",
    "timezone",
)


def kpi_events(data: pa.Table) -> Iterator[KpiEvent]:
    """KpiEvents of an Arrow table of events, one per (store_id, event_id) (the first row of each)."""
    if not data.num_rows:
        return
    ts = pc.divide(pc.cast(pc.cast(data.column("ts"), pa.timestamp("us", tz="UTC")), pa.int64()), 1000)
    cols = {name: data.column(name).to_pylist() for name in EVENT_FIELDS if name != "ts"}
    seen: set[tuple[str, str]] = set()
    for i, ts_ms in enumerate(ts.to_pylist()):
        if ts_ms is None:
            continue
        key = (cols["store_id"][i], cols["event_id"][i])
        if key in seen:
            continue
        seen.add(key)
        yield KpiEvent(
            store_id=cols["store_id"][i],
            ts_ms=int(ts_ms),
            type=cols["type"][i],
            product_id=cols["product_id"][i],
            quantity=cols["quantity"][i],
            unit_price=cols["unit_price"][i],
            stock_count=cols["count"][i],
            price=cols["price"][i],
            timezone=cols["timezone"][i],
            event_id=cols["event_id"][i] or "",
        )


def state_from_rows(product_rows: Iterable[dict[str, Any]], store_rows: Iterable[dict[str, Any]]) -> State:
    """The computation's state after the given KPI rows (each product's latest row, its last rows)."""
    state: State = {}
    for row in sorted(store_rows, key=lambda r: (r["store_id"], str(r["day"]))):
        state.setdefault(row["store_id"], StoreState()).timezone = row["timezone"] or "UTC"
    for row in sorted(product_rows, key=lambda r: (r["store_id"], r["product_id"], str(r["day"]))):
        store = state.setdefault(row["store_id"], StoreState())
        product = store.products.setdefault(row["product_id"], ProductState())
        product.stock = int(row["end_stock"])
        product.price = row["price"]
        product.history.append(
            (str(row["day"]), int(row["units_sold"]), row["open_minutes"] - row["minutes_out_of_stock"])
        )
    return state


@dataclass(frozen=True)
class KpiRun:
    since: str | None
    until: str | None
    events: int
    product_rows: int
    store_rows: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _rows(table: pa.Table) -> list[dict[str, Any]]:
    return table.to_pylist() if table.num_rows else []


def compute_days(tables: Tables, since: dt.date | None = None, until: dt.date | None = None) -> KpiRun:
    """(Re)compute the KPI rows of local days [since, until] from the events table and replace them."""
    from pyiceberg.expressions import And, GreaterThanOrEqual, LessThanOrEqual

    began = time.perf_counter()
    before = tables.scan("kpis_daily", until=since - dt.timedelta(days=1)) if since else pa.table({})
    if since is None or before.num_rows == 0:
        first = _first_event_day(tables)
        if first is None:
            return KpiRun(None, None, 0, 0, 0, time.perf_counter() - began)
        since = min(since, first) if since is not None else first
        state: State = {}
    else:
        store_before = tables.scan("kpis_store_daily", until=since - dt.timedelta(days=1))
        state = state_from_rows(_rows(before), _rows(store_before))
    # Local days lie within a day of the UTC date (offsets are at most 14 hours).
    events = tables.scan(
        "events",
        since=since - dt.timedelta(days=1),
        until=None if until is None else until + dt.timedelta(days=1),
        columns=EVENT_FIELDS,
    )
    product_rows, store_rows, _ = compute(kpi_events(events), state, since, until)
    last = until or max((dt.date.fromisoformat(r["day"]) for r in store_rows), default=since)
    expr = And(GreaterThanOrEqual("day", since.isoformat()), LessThanOrEqual("day", last.isoformat()))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Delete operation did not match any records")
        tables.table("kpis_daily").overwrite(_arrow("kpis_daily", product_rows), overwrite_filter=expr)
        tables.table("kpis_store_daily").overwrite(
            _arrow("kpis_store_daily", store_rows), overwrite_filter=expr
        )
    return KpiRun(
        since.isoformat(),
        last.isoformat(),
        events.num_rows,
        len(product_rows),
        len(store_rows),
        time.perf_counter() - began,
    )


def _first_event_day(tables: Tables) -> dt.date | None:
    days = tables.scan("events", columns=("dt",)).column("dt")
    low = pc.min(days).as_py() if len(days) else None
    return low if isinstance(low, dt.date) else None


def _arrow(name: str, rows: Sequence[dict[str, Any]]) -> pa.Table:
    table = TABLES[name]
    columns: dict[str, list[Any]] = {c: [] for c in table.names}
    for row in rows:
        for c in table.names:
            value = row.get(c)
            columns[c].append(
                dt.date.fromisoformat(value) if c == "day" and isinstance(value, str) else value
            )
    return sort_rows(pa.Table.from_pydict(columns, schema=arrow_schema(table)))


def read_kpis(
    tables: Tables,
    stores: Iterable[str] | None = None,
    since: dt.date | None = None,
    until: dt.date | None = None,
    per_store: bool = False,
) -> list[dict[str, Any]]:
    """KPI rows (per product, or per store), ordered by store, day (and product)."""
    name = "kpis_store_daily" if per_store else "kpis_daily"
    rows = _rows(tables.scan(name, since=since, until=until, stores=stores))
    for row in rows:
        row["day"] = row["day"].isoformat() if isinstance(row["day"], dt.date) else row["day"]
    return sorted(rows, key=lambda r: (r["store_id"], r["day"], r.get("product_id", "")))
