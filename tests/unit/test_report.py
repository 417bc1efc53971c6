"""The weekly report: figures from a known archive, its HTML/CSV, ISO weeks, and the end of stock-outs
the processor notes for it (pure: no AWS, no network)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import orjson
import pytest

from config import Settings
from foundation.contract import format_ts
from foundation.errors import UsageError
from history.archive import LocalArchive, open_archive
from history.report import (
    WeeklyReport,
    compute_report,
    notification,
    parse_week,
    render_csv,
    render_html,
    render_json,
)
from processors.core import CoreConfig, ShardCore
from shelfstream.cli import main

SETTINGS = Settings()
WEEK = "2026-W32"  # Monday 2026-08-03 to Sunday 2026-08-09


def ts(day: int, hour: int, minute: int = 0) -> str:
    """A time in week 32: day 0 is Monday 2026-08-03 (negative days fall in the week before)."""
    when = dt.datetime(2026, 8, 3, tzinfo=dt.UTC) + dt.timedelta(days=day, hours=hour, minutes=minute)
    return when.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def ev(kind: str, eid: str, store: str, when: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "event_id": eid, "store_id": store, "ts": when, "product_id": "milk", **fields}


def alert(kind: str, aid: str, store: str, when: str, **fields: Any) -> dict[str, Any]:
    return {"kind": kind, "alert_id": aid, "store_id": store, "ts": when, **fields}


EVENTS = [
    ev("sale", "s0", "A", ts(-1, 12), quantity=5, unit_price=100.0),  # the Sunday before: not this week
    ev("sale", "s1", "A", ts(0, 9), quantity=1, unit_price=2.0, transaction_id="T1"),
    ev("sale", "s2", "A", ts(0, 9), quantity=2, unit_price=3.0, transaction_id="T1"),
    ev("sale", "s3", "A", ts(2, 12), quantity=1, unit_price=10.0),
    ev("refund", "r1", "A", ts(2, 11), quantity=1, unit_price=3.0),
    ev("restock", "delivery-res-a", "A", ts(0, 12, 30), quantity=30),
    ev("restock", "manual-1", "B", ts(1, 8), quantity=5),
    ev("restock", "delivery-res-b", "B", ts(0, 2), quantity=20),
    ev("sale", "s9", "A", ts(7, 1), quantity=1, unit_price=1.0),  # the Monday after: not this week
]
ALERTS = [
    alert("restock_request", "res-a", "A", ts(0, 9, 50), product_id="milk", on_hand=2),
    alert("restock_request", "res-b", "B", ts(-1, 22), product_id="milk", on_hand=1),  # before the week
    alert("out_of_stock", "oos-1", "A", ts(0, 10), product_id="milk", on_hand=0),
    alert("back_in_stock", "bac-1", "A", ts(0, 12, 30), product_id="milk", on_hand=30),
    alert("out_of_stock", "oos-2", "A", ts(1, 9), product_id="<b>bread</b>", on_hand=-1),  # never ends
    alert("anomaly", "ano-1", "A", ts(1, 10), severity=40, metric="revenue", score=3.1),
    alert("anomaly", "ano-2", "A", ts(3, 10), severity=75, metric="refund_ratio", score=5.2),
]


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))


@pytest.fixture
def archive_dir(tmp_path: Path) -> Path:
    root = tmp_path / "archive"
    write_jsonl(root / "events/2026/08/10/09/archive-1", EVENTS)
    write_jsonl(root / "alerts/2026/08/10/09/alerts-1", ALERTS)
    write_jsonl(root / "alerts/2026/08/10/10/alerts-2", ALERTS[:2])  # delivered twice
    return root


def build(root: Path, week: str = WEEK) -> WeeklyReport:
    label, start, end = parse_week(week, dt.date(2026, 8, 20))
    with open_archive(LocalArchive(root, SETTINGS), ("events", "alerts"), materialize=True) as archive:
        return compute_report(archive, label, start, end)


def test_per_store_figures(archive_dir: Path) -> None:
    report = build(archive_dir)
    a, b = report.stores
    assert (a.store_id, b.store_id) == ("A", "B")
    assert (a.sales, a.sale_lines, a.units_sold, a.revenue) == (2, 3, 4, 18.0)  # T1 is one sale of two lines
    assert (a.refunds, a.refund_amount, a.refund_ratio) == (1, 3.0, round(3 / 18, 4))
    assert a.daily_revenue == [8.0, 0.0, 10.0, 0.0, 0.0, 0.0, 0.0]
    assert b.refund_ratio is None  # nothing sold: no ratio, not zero
    assert (a.anomalies, a.anomaly_max_severity, a.anomaly_metrics) == (2, 75, "refund_ratio, revenue")


def test_stock_outs_last_until_back_in_stock_or_are_ongoing(archive_dir: Path) -> None:
    report = build(archive_dir)
    a = report.stores[0]
    assert report.as_of == dt.datetime(2026, 8, 10, 1)  # the newest time in the archive
    ongoing = (dt.datetime(2026, 8, 10, 1) - dt.datetime(2026, 8, 4, 9)).total_seconds() / 3600
    assert (a.stock_outs, a.stock_outs_ongoing) == (2, 1)
    assert a.stock_out_hours_max == round(ongoing, 2)
    assert a.stock_out_hours_total == round(2.5 + ongoing, 2)
    longest = report.longest_stock_outs
    assert [(o.product_id, o.ended) for o in longest] == [
        ("<b>bread</b>", None),
        ("milk", dt.datetime(2026, 8, 3, 12, 30)),
    ]


def test_deliveries_and_their_lead_time(archive_dir: Path) -> None:
    a, b = build(archive_dir).stores
    assert (a.deliveries, a.units_delivered) == (1, 30)
    assert (a.lead_time_min_avg, a.lead_time_min_max) == (160.0, 160.0)  # 09:50 request, 12:30 delivery
    assert (b.deliveries, b.units_delivered) == (2, 25)  # a manual restock too
    assert b.lead_time_min_avg == 240.0  # requested the Sunday before, delivered Monday 02:00


def test_totals_and_the_notification(archive_dir: Path) -> None:
    report = build(archive_dir)
    totals = report.totals()
    assert totals == {
        "stores": 2,
        "sales": 2,
        "revenue": 18.0,
        "refunds": 1,
        "refund_amount": 3.0,
        "refund_ratio": round(3 / 18, 4),
        "stock_outs": 2,
        "stock_out_hours": report.stores[0].stock_out_hours_total,
        "anomalies": 2,
        "deliveries": 3,
        "lost_sales_units": 0.0,
        "lost_sales_value": 0.0,
    }
    assert report.stores[0].availability == 0.75  # bread out during one of A's two open hours
    message = notification(report, "bkt", [f"reports/{WEEK}/report.html", f"reports/{WEEK}/report.csv"])
    assert message["kind"] == "weekly_report"
    assert message["html_key"] == f"reports/{WEEK}/report.html"
    assert message["csv_key"] == f"reports/{WEEK}/report.csv"
    assert message["revenue"] == 18.0


def test_csv_and_json_carry_the_same_figures(archive_dir: Path) -> None:
    report = build(archive_dir)
    rows = list(csv.DictReader(io.StringIO(render_csv(report).decode())))
    assert [r["store_id"] for r in rows] == ["A", "B"]
    assert rows[0]["week"] == WEEK
    assert float(rows[0]["revenue"]) == 18.0
    assert rows[1]["refund_ratio"] == ""
    assert float(rows[0]["lead_time_min_avg"]) == 160.0
    figures = json.loads(render_json(report))
    assert figures["start"] == "2026-08-03T00:00:00Z"
    assert figures["stores"][0]["daily_revenue"][2] == 10.0


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in {"meta", "br", "rect", "line", "circle", "polyline"}:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in {"rect", "line", "circle", "polyline"} and (not self.open or self.open[-1] != tag):
            return  # self-closed SVG shapes
        assert self.open.pop() == tag


def test_html_is_self_contained_accessible_and_escaped(archive_dir: Path) -> None:
    page = render_html(build(archive_dir)).decode()
    parser = _Tags()
    parser.feed(page)
    assert parser.open == []  # every element closed
    tags = parser.tags
    svgs = [attrs for tag, attrs in tags if tag == "svg"]
    assert len(svgs) == 5
    for attrs in svgs:
        assert attrs["role"] == "img"
        labels = str(attrs["aria-labelledby"]).split()
        assert all(any(a.get("id") == label for _, a in tags) for label in labels)
    assert sum(tag == "table" for tag, _ in tags) >= 7  # every chart has its data as a table too
    assert not any(tag in {"script", "link", "img", "iframe"} for tag, _ in tags)
    assert "<b>bread</b>" not in page
    assert "&lt;b&gt;bread&lt;/b&gt;" in page
    assert "Mon 03 Aug 2026 to Sun 09 Aug 2026" in page


def test_a_week_with_no_data_still_makes_a_report(archive_dir: Path) -> None:
    report = build(archive_dir, "2026-W40")
    assert report.stores == []
    assert "No events or alerts in the archive for this week" in render_html(report).decode()
    assert render_csv(report).decode().count("\n") == 1  # the header alone


@pytest.mark.parametrize(
    ("text", "label", "monday"),
    [
        ("2026-W32", "2026-W32", dt.date(2026, 8, 3)),
        ("2026-w01", "2026-W01", dt.date(2025, 12, 29)),  # ISO week 1 can start in December
        ("2026-W53", "2026-W53", dt.date(2026, 12, 28)),
        ("current", "2026-W34", dt.date(2026, 8, 17)),
        ("last", "2026-W33", dt.date(2026, 8, 10)),
    ],
)
def test_iso_weeks(text: str, label: str, monday: dt.date) -> None:
    got, start, end = parse_week(text, dt.date(2026, 8, 20))
    assert got == label
    assert start == dt.datetime.combine(monday, dt.time())
    assert end - start == dt.timedelta(days=7)


@pytest.mark.parametrize("text", ["2026-32", "W32", "2025-W53", "2026-W00", "next"])
def test_bad_weeks_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError, match="week"):
        parse_week(text, dt.date(2026, 8, 20))


def test_report_command_writes_html_csv_and_json_locally(
    archive_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "reports"
    assert main(["report", "--week", WEEK, "--archive", str(archive_dir), "--out", str(out)]) == 0
    assert sorted(p.name for p in (out / WEEK).iterdir()) == ["report.csv", "report.html", "report.json"]
    assert "revenue" in capsys.readouterr().out
    assert (
        main(["report", "--week", WEEK, "--archive", str(archive_dir), "--store", "B", "--out", str(out)])
        == 0
    )
    rows = list(csv.DictReader((out / WEEK / "report.csv").open()))
    assert [r["store_id"] for r in rows] == ["B"]


def test_the_core_notes_when_a_stock_out_ends() -> None:
    t0 = 1_785_744_000_000

    def event(kind: str, eid: str, t: int, **fields: Any) -> bytes:
        body = {
            "type": kind,
            "event_id": eid,
            "store_id": "A",
            "ts": format_ts(t0 + t * 1000),
            "product_id": "p",
        }
        return orjson.dumps({**body, **fields})

    core = ShardCore(CoreConfig(window_ms=0))
    for raw in (
        event("count", "c1", 0, count=1),
        event("sale", "s1", 1, quantity=1, unit_price=1.0),  # out of stock
        event("refund", "r1", 2, quantity=1, unit_price=1.0),  # back: a note
        event("refund", "r2", 3, quantity=1, unit_price=1.0),  # still in stock: no note
    ):
        core.apply(raw)
    effects = core.drain()
    assert [a.__struct_config__.tag for a in effects.alerts] == ["out_of_stock"]
    (note,) = [orjson.loads(n) for n in effects.notes]
    assert note["kind"] == "back_in_stock"
    assert (note["store_id"], note["product_id"], note["on_hand"]) == ("A", "p", 1)
    assert note["ts"] == format_ts(t0 + 2000)
    again = ShardCore(CoreConfig(window_ms=0))
    for raw in (event("count", "c1", 0, count=1), event("sale", "s1", 1, quantity=1, unit_price=1.0)):
        again.apply(raw)
    again.apply(event("refund", "r1", 2, quantity=1, unit_price=1.0))
    assert orjson.loads(again.drain().notes[0])["alert_id"] == note["alert_id"]  # deterministic


def test_availability_and_lost_sales_per_store(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    tea = [
        ev("sale", f"t{h}", "C", ts(0, h), product_id="tea", quantity=1, unit_price=2.0) for h in (9, 10, 11)
    ]
    jam = [ev("sale", "j12", "C", ts(0, 12), product_id="jam", quantity=1, unit_price=4.0)]
    write_jsonl(root / "events/2026/08/03/09/archive-1", tea + jam)
    write_jsonl(
        root / "alerts/2026/08/03/09/alerts-1",
        [
            alert("out_of_stock", "oos-t", "C", ts(0, 11, 30), product_id="tea", on_hand=0),
            alert("back_in_stock", "bac-t", "C", ts(0, 13), product_id="tea", on_hand=20),
        ],
    )
    (c,) = build(root).stores
    # open 09-13 (hours with a sale: 4); tea out 11:30-13:00, i.e. 1.5 of its 4 open hours
    assert c.availability == round(1 - 1.5 / (2 * 4), 4)
    # tea sold 3 in its 2.5 open hours on the shelf: 1.2 an hour, for 1.5 hours, at 2.00
    assert c.lost_sales_units == 1.8
    assert c.lost_sales_value == 3.6
    assert "on-shelf availability" in render_html(build(root)).decode()
