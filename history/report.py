"""`shelfstream report --week YYYY-Www`: the weekly summary per store, from the archive.

Per store: sales, refunds and the refund ratio; stock-outs and how long they lasted (from the
``out_of_stock`` alerts and the ``back_in_stock`` notes that end them); anomalies; deliveries and their
lead time (a truck's restock event ``delivery-<alert_id>`` minus the time of the restock request with
that ``alert_id``); on-shelf availability and an estimate of the sales lost to empty shelves.
Written as HTML (inline SVG charts, each with a data table: no script, no network)
and CSV to ``s3://<bucket>/reports/YYYY-Www/``, announced on the alerts topic with the message
attribute ``kind=weekly_report``.

Weeks are ISO weeks in UTC (Monday 00:00 to Monday 00:00).

Availability and lost sales come from the archive alone (a lost sale is never an event): a store's
opening hours are the hours of the week in which it sold anything; availability is the share of its
product-hours within them not in a stock-out; a product's lost sales are its sales rate while on the
shelf (units per open hour in stock) times its open hours out of stock, valued at its average price.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import logging
import re
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any, Final

import orjson

from config import Settings
from foundation.errors import UsageError
from foundation.timeunits import HOUR_S
from history.archive import Archive

log = logging.getLogger(__name__)

LOOKAROUND: Final = dt.timedelta(days=7)  # requests before the week, stock-out ends after it
PALETTE: Final = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
DAYS: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_WEEK: Final = re.compile(r"(\d{4})-W(\d{2})")


# --- weeks -------------------------------------------------------------------------------------------


def parse_week(text: str, today: dt.date) -> tuple[str, dt.datetime, dt.datetime]:
    """``YYYY-Www``, ``last`` or ``current`` -> (label, start, end) as naive UTC datetimes."""
    word = text.strip().lower()
    if word in ("last", "current"):
        monday = today - dt.timedelta(days=today.weekday())
        if word == "last":
            monday -= dt.timedelta(days=7)
    else:
        match = _WEEK.fullmatch(text.strip().upper())
        if match is None:
            raise UsageError(f"--week {text!r} is not an ISO week such as 2026-W31 (or last, current)")
        try:
            monday = dt.date.fromisocalendar(int(match[1]), int(match[2]), 1)
        except ValueError:
            raise UsageError(f"--week {text!r}: year {match[1]} has no week {match[2]}") from None
    year, week, _ = monday.isocalendar()
    start = dt.datetime.combine(monday, dt.time())
    return f"{year}-W{week:02d}", start, start + dt.timedelta(days=7)


# --- figures -----------------------------------------------------------------------------------------


@dataclass
class StoreFigures:
    store_id: str
    sales: int = 0
    sale_lines: int = 0
    units_sold: int = 0
    revenue: float = 0.0
    refunds: int = 0
    units_refunded: int = 0
    refund_amount: float = 0.0
    refund_ratio: float | None = None
    stock_outs: int = 0
    stock_outs_ongoing: int = 0
    stock_out_hours_total: float = 0.0
    stock_out_hours_max: float = 0.0
    anomalies: int = 0
    anomaly_max_severity: int | None = None
    anomaly_metrics: str = ""
    deliveries: int = 0
    units_delivered: int = 0
    lead_time_min_avg: float | None = None
    lead_time_min_max: float | None = None
    availability: float | None = None  # on-shelf, within the store's opening hours
    lost_sales_units: float = 0.0  # estimated
    lost_sales_value: float = 0.0  # estimated
    daily_revenue: list[float] = field(default_factory=lambda: [0.0] * 7)


@dataclass(frozen=True)
class StockOut:
    store_id: str
    product_id: str
    started: dt.datetime
    ended: dt.datetime | None
    hours: float


@dataclass
class WeeklyReport:
    week: str
    start: dt.datetime
    end: dt.datetime
    source: str
    generated_at: dt.datetime
    as_of: dt.datetime | None
    stores: list[StoreFigures]
    longest_stock_outs: list[StockOut]

    def totals(self) -> dict[str, Any]:
        revenue = sum(s.revenue for s in self.stores)
        refunded = sum(s.refund_amount for s in self.stores)
        return {
            "stores": len(self.stores),
            "sales": sum(s.sales for s in self.stores),
            "revenue": round(revenue, 2),
            "refunds": sum(s.refunds for s in self.stores),
            "refund_amount": round(refunded, 2),
            "refund_ratio": round(refunded / revenue, 4) if revenue > 0 else None,
            "stock_outs": sum(s.stock_outs for s in self.stores),
            "stock_out_hours": round(sum(s.stock_out_hours_total for s in self.stores), 2),
            "anomalies": sum(s.anomalies for s in self.stores),
            "deliveries": sum(s.deliveries for s in self.stores),
            "lost_sales_units": round(sum(s.lost_sales_units for s in self.stores), 1),
            "lost_sales_value": round(sum(s.lost_sales_value for s in self.stores), 2),
        }


_MONEY_SQL: Final = """
SELECT store_id,
       count(DISTINCT transaction_id) FILTER (WHERE type = 'sale')
         + count(*) FILTER (WHERE type = 'sale' AND transaction_id IS NULL) AS sales,
       count(*) FILTER (WHERE type = 'sale') AS sale_lines,
       coalesce(sum(quantity) FILTER (WHERE type = 'sale'), 0) AS units_sold,
       coalesce(sum(quantity * unit_price) FILTER (WHERE type = 'sale'), 0) AS revenue,
       count(*) FILTER (WHERE type = 'refund') AS refunds,
       coalesce(sum(quantity) FILTER (WHERE type = 'refund'), 0) AS units_refunded,
       coalesce(sum(quantity * unit_price) FILTER (WHERE type = 'refund'), 0) AS refund_amount,
       count(*) FILTER (WHERE type = 'restock') AS deliveries,
       coalesce(sum(quantity) FILTER (WHERE type = 'restock'), 0) AS units_delivered
FROM events WHERE ts >= $start AND ts < $end
GROUP BY store_id
"""

_DAILY_SQL: Final = """
SELECT store_id, datediff('day', CAST($start AS DATE), CAST(ts AS DATE)) AS day,
       sum(quantity * unit_price) AS revenue
FROM events WHERE type = 'sale' AND ts >= $start AND ts < $end
GROUP BY ALL
"""

_LEAD_SQL: Final = """
SELECT d.store_id, avg(epoch(d.ts - r.ts)) / 60 AS lead_avg, max(epoch(d.ts - r.ts)) / 60 AS lead_max
FROM events d
JOIN alerts r ON r.kind = 'restock_request' AND r.alert_id = substr(d.event_id, 10)
WHERE d.type = 'restock' AND starts_with(d.event_id, 'delivery-') AND d.ts >= $start AND d.ts < $end
GROUP BY d.store_id
"""

_STOCK_OUTS_SQL: Final = """
WITH outs AS (
  SELECT store_id, product_id, ts AS started FROM alerts
  WHERE kind = 'out_of_stock' AND ts >= $start AND ts < $end
)
SELECT o.store_id, o.product_id, o.started,
       (SELECT min(b.ts) FROM alerts b
        WHERE b.kind = 'back_in_stock' AND b.store_id = o.store_id AND b.product_id = o.product_id
          AND b.ts >= o.started) AS ended
FROM outs o
ORDER BY o.store_id, o.started
"""

_ANOMALIES_SQL: Final = """
SELECT store_id, count(*) AS anomalies, max(severity) AS max_severity,
       string_agg(DISTINCT metric, ', ' ORDER BY metric) AS metrics
FROM alerts WHERE kind = 'anomaly' AND ts >= $start AND ts < $end
GROUP BY store_id
"""

_OPEN_HOURS_SQL: Final = """
SELECT DISTINCT store_id, date_trunc('hour', ts) AS hour
FROM events WHERE type = 'sale' AND ts >= $start AND ts < $end
"""

_PRODUCT_SALES_SQL: Final = """
SELECT store_id, product_id,
       coalesce(sum(quantity) FILTER (WHERE type = 'sale' AND ts >= $start), 0) AS units,
       coalesce(sum(quantity * unit_price) FILTER (WHERE type = 'sale' AND ts >= $start), 0) AS revenue
FROM events WHERE product_id IS NOT NULL AND type IN ('sale', 'refund', 'restock', 'count') AND ts < $end
GROUP BY ALL
"""

_AS_OF_SQL: Final = "SELECT greatest((SELECT max(ts) FROM events), (SELECT max(ts) FROM alerts))"


def compute_report(archive: Archive, week: str, start: dt.datetime, end: dt.datetime) -> WeeklyReport:
    """Every figure of the report, by DuckDB SQL over the archive's ``events`` and ``alerts``."""
    con = archive.con
    params = {"start": start, "end": end}

    def rows(sql: str) -> list[tuple[Any, ...]]:
        used = {k: v for k, v in params.items() if f"${k}" in sql}
        return con.execute(sql, used).fetchall()

    stores: dict[str, StoreFigures] = {}

    def store(store_id: str) -> StoreFigures:
        return stores.setdefault(store_id, StoreFigures(store_id))

    for r in rows(_MONEY_SQL):
        s = store(r[0])
        s.sales, s.sale_lines, s.units_sold = int(r[1]), int(r[2]), int(r[3])
        s.revenue, s.refunds, s.units_refunded = round(float(r[4]), 2), int(r[5]), int(r[6])
        s.refund_amount, s.deliveries, s.units_delivered = round(float(r[7]), 2), int(r[8]), int(r[9])
        s.refund_ratio = round(s.refund_amount / s.revenue, 4) if s.revenue > 0 else None
    for store_id, day, revenue in rows(_DAILY_SQL):
        if 0 <= day < 7:
            store(store_id).daily_revenue[day] = round(float(revenue), 2)
    for store_id, lead_avg, lead_max in rows(_LEAD_SQL):
        s = store(store_id)
        s.lead_time_min_avg = round(float(lead_avg), 1)
        s.lead_time_min_max = round(float(lead_max), 1)
    as_of = rows(_AS_OF_SQL)[0][0]
    outs: list[StockOut] = []
    for store_id, product_id, started, ended in rows(_STOCK_OUTS_SQL):
        until = ended if ended is not None else (as_of or started)
        hours = max(0.0, (until - started).total_seconds() / HOUR_S)
        outs.append(StockOut(store_id, product_id, started, ended, round(hours, 2)))
        s = store(store_id)
        s.stock_outs += 1
        s.stock_outs_ongoing += ended is None
        s.stock_out_hours_total = round(s.stock_out_hours_total + hours, 2)
        s.stock_out_hours_max = max(s.stock_out_hours_max, round(hours, 2))
    _shelf_figures(stores, outs, rows(_OPEN_HOURS_SQL), rows(_PRODUCT_SALES_SQL), start, end, as_of)
    if "kpis_store_daily" in archive.selections:
        # The daily KPI table, where there is one (processors/core/kpis.py): the same definitions as
        # `shelfstream kpis`, over the stores' local days of the week.
        for store_id, oos, product_minutes, lost_units, lost_value in rows(_KPI_SQL):
            s = store(store_id)
            s.availability = round(1 - float(oos) / float(product_minutes), 4) if product_minutes else None
            s.lost_sales_units = round(float(lost_units or 0), 1)
            s.lost_sales_value = round(float(lost_value or 0), 2)
    for store_id, count, severity, metrics in rows(_ANOMALIES_SQL):
        s = store(store_id)
        s.anomalies, s.anomaly_max_severity, s.anomaly_metrics = int(count), severity, metrics or ""
    longest = sorted(outs, key=lambda o: (-o.hours, o.store_id, o.product_id))[:10]
    return WeeklyReport(
        week=week,
        start=start,
        end=end,
        source=archive.describe(),
        generated_at=dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0),
        as_of=as_of,
        stores=[stores[k] for k in sorted(stores)],
        longest_stock_outs=longest,
    )


_KPI_SQL: Final = """
SELECT store_id, sum(minutes_out_of_stock), sum(open_minutes * products), sum(lost_units), sum(lost_value)
FROM kpis_store_daily
WHERE day >= CAST($start AS DATE) AND day < CAST($end AS DATE)
GROUP BY 1
"""


def _shelf_figures(
    stores: dict[str, StoreFigures],
    outs: list[StockOut],
    open_rows: list[tuple[Any, ...]],
    product_rows: list[tuple[Any, ...]],
    start: dt.datetime,
    end: dt.datetime,
    as_of: dt.datetime | None,
) -> None:
    """On-shelf availability and estimated lost sales per store (see the module's docstring)."""
    hour = dt.timedelta(hours=1)
    open_hours: dict[str, list[dt.datetime]] = {}
    for store_id, opened in open_rows:
        open_hours.setdefault(store_id, []).append(opened)
    products: dict[str, dict[str, tuple[float, float]]] = {}
    for store_id, product_id, units, revenue in product_rows:
        products.setdefault(store_id, {})[product_id] = (float(units), float(revenue))
    out_hours: dict[tuple[str, str], float] = {}
    for o in outs:
        began = max(o.started, start)
        until = min(o.ended or as_of or o.started, end)
        overlap = sum(
            max(0.0, (min(until, h + hour) - max(began, h)).total_seconds() / HOUR_S)
            for h in open_hours.get(o.store_id, ())
        )
        key = (o.store_id, o.product_id)
        out_hours[key] = out_hours.get(key, 0.0) + overlap
        products.setdefault(o.store_id, {}).setdefault(o.product_id, (0.0, 0.0))
    for store_id, hours in open_hours.items():
        sold = products.get(store_id, {})
        if not sold:
            continue
        s = stores.setdefault(store_id, StoreFigures(store_id))
        n_open = len(hours)
        missing = sum(out_hours.get((store_id, p), 0.0) for p in sold)
        s.availability = round(1 - missing / (n_open * len(sold)), 4)
        units_lost = value_lost = 0.0
        for product_id, (units, revenue) in sold.items():
            out = out_hours.get((store_id, product_id), 0.0)
            in_stock = n_open - out
            if out <= 0 or in_stock <= 0 or units <= 0:
                continue
            lost = units / in_stock * out
            units_lost += lost
            value_lost += lost * revenue / units
        s.lost_sales_units = round(units_lost, 1)
        s.lost_sales_value = round(value_lost, 2)


# --- CSV and JSON -------------------------------------------------------------------------------------

CSV_COLUMNS: Final = (
    "week",
    "store_id",
    "sales",
    "sale_lines",
    "units_sold",
    "revenue",
    "refunds",
    "units_refunded",
    "refund_amount",
    "refund_ratio",
    "stock_outs",
    "stock_outs_ongoing",
    "stock_out_hours_total",
    "stock_out_hours_max",
    "anomalies",
    "anomaly_max_severity",
    "anomaly_metrics",
    "deliveries",
    "units_delivered",
    "lead_time_min_avg",
    "lead_time_min_max",
    "availability",
    "lost_sales_units",
    "lost_sales_value",
)


def render_csv(report: WeeklyReport) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for s in report.stores:
        values = {"week": report.week, **asdict(s)}
        writer.writerow("" if values[c] is None else values[c] for c in CSV_COLUMNS)
    return out.getvalue().encode()


def render_json(report: WeeklyReport) -> bytes:
    """The figures for machines (what the notification points to besides the HTML and CSV)."""
    return orjson.dumps(
        {
            "week": report.week,
            "start": _ts(report.start),
            "end": _ts(report.end),
            "as_of": _ts(report.as_of) if report.as_of else None,
            "totals": report.totals(),
            "stores": [asdict(s) for s in report.stores],
        },
        option=orjson.OPT_INDENT_2,
    )


def _ts(value: dt.datetime) -> str:
    return value.isoformat(timespec="seconds") + "Z"


# --- HTML -------------------------------------------------------------------------------------------


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _money(value: float) -> str:
    return f"{value:,.2f}"


def pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def _num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _table(caption: str, headers: list[str], rows: list[list[str]], numeric: set[int]) -> str:
    head = "".join(
        f'<th scope="col"{" class=num" if i in numeric else ""}>{_e(h)}</th>' for i, h in enumerate(headers)
    )
    body = "".join(
        "<tr>"
        + "".join(
            (
                f'<th scope="row">{_e(c)}</th>'
                if i == 0
                else f"<td{' class=num' if i in numeric else ''}>{_e(c)}</td>"
            )
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return (
        f"<table><caption>{_e(caption)}</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


def bar_chart(chart_id: str, title: str, items: list[tuple[str, float]], fmt: Any, unit: str) -> str:
    """A horizontal bar chart as inline SVG, with a title and description for screen readers and
    the same numbers as a table right after it."""
    label_w, bars_w, row_h, pad = 170, 430, 26, 8
    width = label_w + bars_w + 110
    height = pad * 2 + row_h * max(1, len(items))
    top = max((v for _, v in items), default=0.0) or 1.0
    parts = []
    for i, (label, value) in enumerate(items):
        y = pad + i * row_h
        w = max(0.0, value) / top * bars_w
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 17}" text-anchor="end">{_e(label)}</text>'
            f'<rect x="{label_w}" y="{y + 5}" width="{w:.1f}" height="16" fill="{PALETTE[0]}">'
            f"<title>{_e(label)}: {_e(fmt(value))} {_e(unit)}</title></rect>"
            f'<text x="{label_w + w + 6:.1f}" y="{y + 17}">{_e(fmt(value))}</text>'
        )
    if not items:
        parts.append(f'<text x="{label_w}" y="{pad + 17}">no data</text>')
    description = "; ".join(f"{label}: {fmt(value)} {unit}" for label, value in items) or "no data"
    svg = (
        f'<svg role="img" aria-labelledby="{chart_id}-t {chart_id}-d" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
        f'<title id="{chart_id}-t">{_e(title)}</title><desc id="{chart_id}-d">{_e(description)}</desc>'
        f'<line x1="{label_w}" y1="{pad}" x2="{label_w}" y2="{height - pad}" stroke="#57606a"/>'
        f"{''.join(parts)}</svg>"
    )
    table = _table(title, ["store", unit], [[label, fmt(value)] for label, value in items], {1})
    return (
        f"<figure>{svg}<figcaption>{_e(title)}</figcaption></figure>"
        f"<details><summary>{_e(title)} as a table</summary>{table}</details>"
    )


def line_chart(chart_id: str, title: str, series: list[tuple[str, list[float]]]) -> str:
    """Revenue per day of the week, one line per store (colour and marker shape per store)."""
    left, right, top, bottom = 70, 170, 16, 34
    plot_w, plot_h = 520, 220
    width, height = left + plot_w + right, top + plot_h + bottom
    peak = max((v for _, values in series for v in values), default=0.0) or 1.0
    step = plot_w / 6

    def xy(day: int, value: float) -> tuple[float, float]:
        return left + day * step, top + plot_h - value / peak * plot_h

    parts = [
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#57606a"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#57606a"/>',
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end">{_e(_money(peak))}</text>',
        f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end">0</text>',
    ]
    for day, name in enumerate(DAYS):
        x, _ = xy(day, 0)
        parts.append(f'<text x="{x:.1f}" y="{top + plot_h + 20}" text-anchor="middle">{name}</text>')
    for i, (store_id, values) in enumerate(series):
        colour = PALETTE[i % len(PALETTE)]
        dash = "" if i < len(PALETTE) else ' stroke-dasharray="6 3"'
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(d, v) for d, v in enumerate(values)))
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
        for d, v in enumerate(values):
            x, y = xy(d, v)
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{colour}">'
                f"<title>{_e(store_id)}, {DAYS[d]}: {_e(_money(v))}</title></circle>"
            )
        ly = top + 12 + i * 18
        parts.append(
            f'<rect x="{left + plot_w + 16}" y="{ly - 9}" width="12" height="12" fill="{colour}"/>'
            f'<text x="{left + plot_w + 34}" y="{ly + 1}">{_e(store_id)}</text>'
        )
    description = "; ".join(
        f"{store_id}: " + ", ".join(f"{DAYS[d]} {_money(v)}" for d, v in enumerate(values))
        for store_id, values in series
    )
    svg = (
        f'<svg role="img" aria-labelledby="{chart_id}-t {chart_id}-d" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
        f'<title id="{chart_id}-t">{_e(title)}</title>'
        f'<desc id="{chart_id}-d">{_e(description or "no data")}</desc>'
        f"{''.join(parts)}</svg>"
    )
    table = _table(
        title,
        ["store", *DAYS],
        [[store_id, *(_money(v) for v in values)] for store_id, values in series],
        set(range(1, 8)),
    )
    return (
        f"<figure>{svg}<figcaption>{_e(title)}</figcaption></figure>"
        f"<details><summary>{_e(title)} as a table</summary>{table}</details>"
    )


def render_html(report: WeeklyReport) -> bytes:
    """The report as one HTML page: the headline figures, then a section per subject, each a chart
    with its numbers as a table (history/report.html is the page around them)."""
    last_day = (report.end - dt.timedelta(days=1)).date()
    period = f"{report.start.date():%a %d %b %Y} to {last_day:%a %d %b %Y} (UTC)"
    parts = [_headline(report)]
    if not report.stores:
        parts.append('<p class="note">No events or alerts in the archive for this week.</p>')
    for section in (_per_store, _sales, _refunds, _stock_outs, _anomalies, _deliveries):
        parts.extend(section(report))
    template = Template(resources.files("history").joinpath("report.html").read_text(encoding="utf-8"))
    page = template.substitute(
        title=_e(f"shelfstream weekly report {report.week}"),
        period=_e(period),
        generated=_e(f"{report.generated_at:%Y-%m-%d %H:%M} UTC"),
        source=_e(report.source),
        body="\n".join(parts),
    )
    return page.encode()


def _headline(report: WeeklyReport) -> str:
    totals = report.totals()
    return (
        '<ul class="headline" aria-label="headline figures">'
        f"<li>revenue<strong>{_money(totals['revenue'])}</strong></li>"
        f"<li>sales<strong>{totals['sales']:,}</strong></li>"
        f"<li>refund ratio<strong>{pct(totals['refund_ratio'])}</strong></li>"
        f"<li>stock-outs<strong>{totals['stock_outs']:,}</strong></li>"
        f"<li>anomalies<strong>{totals['anomalies']:,}</strong></li>"
        f"<li>deliveries<strong>{totals['deliveries']:,}</strong></li>"
        f"<li>lost sales (est.)<strong>{_money(totals['lost_sales_value'])}</strong></li>"
        "</ul>"
    )


def _per_store(report: WeeklyReport) -> list[str]:
    """Every store's figures, one row each."""
    stores = report.stores
    parts: list[str] = []
    parts.append("<h2>Per store</h2>")
    parts.append(
        _table(
            f"Figures per store, {report.week}",
            [
                "store",
                "sales",
                "revenue",
                "refunds",
                "refunded",
                "refund ratio",
                "stock-outs",
                "hours out of stock",
                "anomalies",
                "deliveries",
                "lead time (min, avg)",
                "on-shelf availability",
                "lost sales (units, est.)",
                "lost sales (value, est.)",
            ],
            [
                [
                    s.store_id,
                    f"{s.sales:,}",
                    _money(s.revenue),
                    f"{s.refunds:,}",
                    _money(s.refund_amount),
                    pct(s.refund_ratio),
                    f"{s.stock_outs:,}"
                    + (f" ({s.stock_outs_ongoing} ongoing)" if s.stock_outs_ongoing else ""),
                    _num(s.stock_out_hours_total),
                    f"{s.anomalies:,}",
                    f"{s.deliveries:,}",
                    _num(s.lead_time_min_avg),
                    pct(s.availability),
                    _num(s.lost_sales_units),
                    _money(s.lost_sales_value),
                ]
                for s in stores
            ],
            set(range(1, 14)),
        )
    )
    return parts


def _sales(report: WeeklyReport) -> list[str]:
    """Revenue per store, and per day of the week."""
    stores = report.stores
    parts: list[str] = []
    parts.append("<h2>Sales</h2>")
    parts.append(
        bar_chart("revenue", "Revenue per store", [(s.store_id, s.revenue) for s in stores], _money, "")
    )
    parts.append(
        line_chart("daily", "Revenue per day of the week", [(s.store_id, s.daily_revenue) for s in stores])
    )
    return parts


def _refunds(report: WeeklyReport) -> list[str]:
    """Refunds as a share of revenue."""
    stores = report.stores
    parts: list[str] = []
    parts.append("<h2>Refunds</h2>")
    parts.append(
        bar_chart(
            "refunds",
            "Refunded amount as a share of revenue",
            [(s.store_id, (s.refund_ratio or 0.0) * 100) for s in stores],
            lambda v: f"{v:.1f}%",
            "",
        )
    )
    return parts


def _stock_outs(report: WeeklyReport) -> list[str]:
    """Hours out of stock per store, and the longest stock-outs."""
    stores = report.stores
    parts: list[str] = []
    parts.append("<h2>Stock-outs</h2>")
    parts.append(
        bar_chart(
            "stockouts",
            "Hours out of stock per store (all products together)",
            [(s.store_id, s.stock_out_hours_total) for s in stores],
            lambda v: f"{v:.1f}",
            "h",
        )
    )
    if report.longest_stock_outs:
        parts.append(
            _table(
                "Longest stock-outs",
                ["store", "product", "started (UTC)", "ended (UTC)", "hours"],
                [
                    [
                        o.store_id,
                        o.product_id,
                        f"{o.started:%a %d %b %H:%M}",
                        f"{o.ended:%a %d %b %H:%M}" if o.ended else "still out",
                        _num(o.hours, 2),
                    ]
                    for o in report.longest_stock_outs
                ],
                {4},
            )
        )
    return parts


def _anomalies(report: WeeklyReport) -> list[str]:
    """Anomaly alerts per store (or that there were none)."""
    stores = report.stores
    parts: list[str] = []
    parts.append("<h2>Anomalies</h2>")
    anomalous = [s for s in stores if s.anomalies]
    if anomalous:
        parts.append(
            _table(
                "Anomaly alerts per store",
                ["store", "alerts", "highest severity", "metrics"],
                [
                    [s.store_id, f"{s.anomalies:,}", str(s.anomaly_max_severity or "–"), s.anomaly_metrics]
                    for s in anomalous
                ],
                {1, 2},
            )
        )
    else:
        parts.append("<p>No anomaly alerts this week.</p>")
    return parts


def _deliveries(report: WeeklyReport) -> list[str]:
    """Delivery lead times and counts per store."""
    stores = report.stores
    parts: list[str] = []
    parts.append("<h2>Deliveries</h2>")
    parts.append(
        bar_chart(
            "leadtime",
            "Average delivery lead time (request to restock), minutes",
            [(s.store_id, s.lead_time_min_avg) for s in stores if s.lead_time_min_avg is not None],
            lambda v: f"{v:.1f}",
            "min",
        )
    )
    parts.append(
        _table(
            "Deliveries per store",
            ["store", "deliveries", "units", "lead time avg (min)", "lead time max (min)"],
            [
                [
                    s.store_id,
                    f"{s.deliveries:,}",
                    f"{s.units_delivered:,}",
                    _num(s.lead_time_min_avg),
                    _num(s.lead_time_min_max),
                ]
                for s in stores
            ],
            {1, 2, 3, 4},
        )
    )
    return parts


# --- writing and announcing -------------------------------------------------------------------------


def report_files(report: WeeklyReport) -> dict[str, tuple[bytes, str]]:
    return {
        "report.html": (render_html(report), "text/html; charset=utf-8"),
        "report.csv": (render_csv(report), "text/csv; charset=utf-8"),
        "report.json": (render_json(report), "application/json"),
    }


def write_local(files: dict[str, tuple[bytes, str]], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (body, _) in files.items():
        (folder / name).write_bytes(body)
        written.append(folder / name)
    return written


def write_s3(s3: Any, bucket: str, prefix: str, files: dict[str, tuple[bytes, str]]) -> list[str]:
    keys = []
    for name, (body, content_type) in files.items():
        key = f"{prefix}{name}"
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)
        keys.append(key)
    return keys


def notification(report: WeeklyReport, bucket: str, keys: list[str]) -> dict[str, Any]:
    by_name = {key.rsplit("/", 1)[-1]: key for key in keys}
    return {
        "kind": "weekly_report",
        "week": report.week,
        "bucket": bucket,
        "html_key": by_name.get("report.html"),
        "csv_key": by_name.get("report.csv"),
        "json_key": by_name.get("report.json"),
        **report.totals(),
    }


def topic_arn(settings: Settings, sts: Any) -> str:
    """The alerts topic's ARN from its name (STS needs no permission, SNS listing would)."""
    from foundation.aws.clients import region

    caller = str(sts.get_caller_identity()["Arn"])
    partition, account = caller.split(":")[1], caller.split(":")[4]
    return f"arn:{partition}:sns:{region(settings)}:{account}:{settings.aws.alerts_topic}"


def publish(sns: Any, arn: str, message: dict[str, Any]) -> str:
    resp = sns.publish(
        TopicArn=arn,
        Subject=f"shelfstream weekly report {message['week']}",
        Message=orjson.dumps(message).decode(),
        MessageAttributes={"kind": {"DataType": "String", "StringValue": "weekly_report"}},
    )
    return str(resp.get("MessageId", ""))
