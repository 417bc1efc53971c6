"""The Iceberg history tables on disk (pyiceberg SQL catalog on SQLite, no AWS): ingest once per object,
KPIs from the tables equal to backtest's, query/DuckDB/Polars read them, and a month of retention."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from benchmarks.history_data import generate
from config import Settings
from history.kpi_tables import compute_days, read_kpis
from history.tables import (
    BATCH_PROPERTY,
    Tables,
    append_lines,
    dir_lister,
    dir_reader,
    ingest,
    maintain,
    partition_stats,
)
from shelfstream.cli import main

START = dt.date(2026, 8, 1)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("POLARS_ICEBERG_PLANNER", "pyiceberg")
    # the commands (which read the environment) and the test's own Tables see the same catalog
    monkeypatch.setenv("SHELFSTREAM_HISTORY__TABLES_CATALOG", str(tmp_path / "tables" / "catalog.db"))
    monkeypatch.setenv("SHELFSTREAM_HISTORY__TABLES_WAREHOUSE", str(tmp_path / "tables" / "warehouse"))
    return Settings()


def archive(root: Path, events: list[dict[str, Any]], per_object: int = 400) -> None:
    """Events as moto's Firehose leaves them: JSON lines, one object per batch, arrival-time keys."""
    folder = root / "events" / "2026" / "08" / "01" / "00"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(0, len(events), per_object):
        body = b"".join(orjson.dumps(e) + b"\n" for e in events[i : i + per_object])
        (folder / f"shelfstream-archive-1-{i:06d}").write_bytes(body)
    rejected = root / "rejected" / "stream" / "dt=2026-08-02"
    rejected.mkdir(parents=True, exist_ok=True)
    (rejected / "shard-0-1.jsonl").write_bytes(
        orjson.dumps({"reason": "not JSON", "record": "{oops", "shard_id": "shard-0", "sequence_number": "1"})
        + b"\n"
    )


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_ingest_appends_each_object_once_even_after_a_crash(settings: Settings, tmp_path: Path) -> None:
    events = list(generate(3, 3, START))
    archive(tmp_path / "bucket", events)
    tables = Tables(settings)
    listing, read = dir_lister(tmp_path / "bucket"), dir_reader(tmp_path / "bucket")
    first = ingest(tables, listing, read)
    assert first.rows["events"] == len(events)
    assert first.rows["rejected"] == 1
    again = ingest(tables, listing, read)
    assert again.objects == {"events": 0, "windows": 0, "alerts": 0, "rejected": 0}
    assert tables.scan("events").num_rows == len(events)

    # A crash after the append's commit, before the ledger said so: the batch is found in the
    # snapshots and not appended again; a crash before the commit: the objects are read again.
    new = tmp_path / "bucket" / "events" / "2026" / "08" / "01" / "00" / "late"
    new.write_bytes(orjson.dumps({**events[0], "event_id": "late-1"}) + b"\n")
    con = tables._ledger()
    with con:
        con.execute(
            "INSERT INTO shelfstream_ingested VALUES ('events', ?, 'lost-batch', 'pending')",
            ("events/2026/08/01/00/late",),
        )
    con.close()
    settled = ingest(tables, listing, read, ["events"])
    assert settled.rows["events"] == 1
    assert tables.scan("events").num_rows == len(events) + 1
    batches = [
        s.summary.additional_properties.get(BATCH_PROPERTY)
        for s in tables.refresh("events").metadata.snapshots
    ]
    assert all(batches)


def test_kpis_from_the_tables_equal_backtest_and_recompute_is_idempotent(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = list(generate(4, 6, START, seed=3))
    source = tmp_path / "events.jsonl"
    source.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    assert main(["backtest", str(source), "--out", str(tmp_path / "bt")]) == 0
    capsys.readouterr()
    backtest = [json.loads(line) for line in (tmp_path / "bt" / "kpis.jsonl").read_text().splitlines()]

    archive(tmp_path / "bucket", events)
    code, out, _ = run(["history", "convert", str(tmp_path / "bucket"), "--json"], capsys)
    assert code == 0
    assert json.loads(out)["rows"]["events"] == len(events)
    code, out, _ = run(["kpis", "--format", "json"], capsys)
    assert code == 0
    from_tables = json.loads(out)

    def key(r: dict[str, Any]) -> tuple[str, str, str]:
        return r["store_id"], r["day"], r["product_id"]

    assert sorted(from_tables, key=key) == sorted(backtest, key=key)
    assert any(r["minutes_out_of_stock"] > 0 for r in backtest)
    assert any(r["lost_units"] for r in backtest)

    tables = Tables(settings)
    day = dt.date(2026, 8, 3)
    for _ in range(2):  # a day recomputed twice: the same rows, one partition rewritten
        compute_days(tables, day, day)
        assert sorted(read_kpis(tables), key=key) == sorted(from_tables, key=key)
    parts = {p.partition: p for p in partition_stats(tables, ["kpis_daily"])}
    assert parts[day.isoformat()].files == 1

    code, out, _ = run(
        [
            "kpis",
            "--store",
            "store-001",
            "--from",
            "2026-08-02",
            "--to",
            "2026-08-03",
            "--per-store",
            "--format",
            "csv",
        ],
        capsys,
    )
    lines = out.splitlines()
    assert code == 0
    assert lines[0].startswith("store_id,day,timezone,products")
    assert [line.split(",")[1] for line in lines[1:]] == ["2026-08-02", "2026-08-03"]


def test_query_duckdb_and_polars_read_the_tables(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import polars as pl

    events = list(generate(3, 2, START))
    archive(tmp_path / "bucket", events)
    tables = Tables(settings)
    ingest(tables, dir_lister(tmp_path / "bucket"), dir_reader(tmp_path / "bucket"))
    compute_days(tables)
    sales = sum(1 for e in events if e["type"] == "sale")

    code, out, err = run(
        ["query", "SELECT count(*) AS n FROM events WHERE type = 'sale'", "--format", "json"], capsys
    )
    assert code == 0
    assert json.loads(out) == [{"n": sales}]
    assert "history tables (Iceberg" in err
    code, out, _ = run(["query", "SELECT count(*) AS n FROM rejected", "--format", "json"], capsys)
    assert json.loads(out) == [{"n": 1}]

    con = duckdb.connect()
    arrow_events = tables.table("events").scan().to_arrow()
    con.register("events", arrow_events)
    assert con.execute("SELECT count(*) FROM events WHERE type = 'sale'").fetchone() == (sales,)

    frame = pl.scan_iceberg(tables.table("events")).filter(pl.col("type") == "sale").collect()
    assert frame.height == sales
    kpis = pl.scan_iceberg(tables.table("kpis_daily")).group_by("store_id").agg(pl.col("units_sold").sum())
    by_store = dict(kpis.collect().iter_rows())
    want: dict[str, int] = {}
    for e in events:
        if e["type"] == "sale":
            want[e["store_id"]] = want.get(e["store_id"], 0) + e["quantity"]
    assert by_store == want


def test_the_old_json_archive_stays_readable_by_query(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = list(generate(2, 1, START))
    archive(tmp_path / "bucket", events)
    code, out, _ = run(
        [
            "query",
            "SELECT count(*) AS n FROM events",
            "--archive",
            str(tmp_path / "bucket"),
            "--format",
            "json",
        ],
        capsys,
    )
    assert code == 0
    assert json.loads(out) == [{"n": len(events)}]


@pytest.mark.slow
def test_a_month_of_retention_compaction_and_sweeping(settings: Settings) -> None:
    """33 days, appended a batch at a time as the loop would, then kept for 30 days."""
    tables = Tables(settings)
    events = list(generate(2, 33, START, sales_per_day=10))
    by_day: dict[str, list[bytes]] = {}
    for e in events:
        by_day.setdefault(e["ts"][:10], []).append(orjson.dumps(e))
    for lines in by_day.values():  # two appends a day: two files per partition
        half = max(1, (len(lines) + 1) // 2)
        for i in range(0, len(lines), half):
            append_lines(tables, "events", lines[i : i + half])
    compute_days(tables)
    before = {p.partition: p for p in partition_stats(tables, ["events"])}
    assert max(p.files for p in before.values()) >= 2
    today = START + dt.timedelta(days=33)
    now = dt.datetime.combine(today, dt.time(12), dt.UTC) + dt.timedelta(days=3650)  # every file is "old"
    report = maintain(tables, today, 30, snapshot_min_age=dt.timedelta(0), now=now)
    keep_since = (today - dt.timedelta(days=30)).isoformat()
    after = partition_stats(tables, ["events", "kpis_daily"])
    assert after
    assert all(p.partition >= keep_since for p in after)
    assert all(p.files == 1 for p in after)  # each closed day compacted into one file
    kept = [e for e in events if e["ts"][:10] >= keep_since]
    assert tables.scan("events").num_rows == len(kept)
    assert report.rows_expired["events"] == len(events) - len(kept)
    assert report.files_removed["events"][0] > 0
    table = tables.refresh("events")
    assert len(table.metadata.snapshots) == 1
    # nothing left on disk that the table does not reach, and what it reaches is all there
    location = Path(table.metadata.location.removeprefix("file://"))
    on_disk = {str(p) for p in location.rglob("*") if p.is_file()}
    from history.tables import referenced_files

    assert on_disk == referenced_files(table)
    again = maintain(tables, today, 30, snapshot_min_age=dt.timedelta(0), now=now)
    assert again.partitions_compacted["events"] == 0
    assert again.rows_expired["events"] == 0


def test_revised_windows_withdrawn_alerts_and_feedback_fit_the_tables(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """Changes in flight elsewhere: window revisions (readers take the latest), anomaly_withdrawn
    alerts and feedback events land in their own columns."""
    tables = Tables(settings)
    window = {
        "store_id": "s1",
        "window": "15m",
        "kind": "tumbling",
        "window_start": "2026-08-01T10:00:00Z",
        "window_end": "2026-08-01T10:15:00Z",
        "sales": 3,
        "anomalies": ["sales"],
    }
    append_lines(
        tables, "windows", [orjson.dumps(window), orjson.dumps({**window, "sales": 5, "revision": 1})]
    )
    withdrawn = {
        "alert_id": "w-1",
        "kind": "anomaly_withdrawn",
        "store_id": "s1",
        "ts": "2026-08-01T10:20:00Z",
        "withdrawn_alert_id": "ano-1",
        "reason": "late sales",
        "observed": 5,
    }
    append_lines(tables, "alerts", [orjson.dumps(withdrawn)])
    feedback = {
        "event_id": "f-1",
        "type": "feedback",
        "store_id": "s1",
        "ts": "2026-08-01T11:00:00Z",
        "alert_id": "ano-1",
        "verdict": "not_anomaly",
        "note": "a school trip",
        "by": "manager",
    }
    append_lines(tables, "events", [orjson.dumps(feedback)])
    code, out, _ = run(
        ["query", "SELECT sales, revision, anomalies FROM windows", "--format", "json"], capsys
    )
    assert code == 0
    assert json.loads(out) == [{"sales": 5, "revision": 1, "anomalies": ["sales"]}]
    code, out, _ = run(
        ["query", "SELECT kind, withdrawn_alert_id, reason FROM alerts", "--format", "json"], capsys
    )
    assert json.loads(out) == [
        {"kind": "anomaly_withdrawn", "withdrawn_alert_id": "ano-1", "reason": "late sales"}
    ]
    code, out, _ = run(["query", 'SELECT verdict, note, "by" FROM events', "--format", "json"], capsys)
    assert json.loads(out) == [{"verdict": "not_anomaly", "note": "a school trip", "by": "manager"}]


def test_kpis_without_tables_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run(["kpis"], capsys)
    assert code == 2
    assert "no history tables" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = run(["kpis", "--from", "2026-08-02", "--to", "2026-08-01"], capsys)
    assert code == 2


def test_the_additive_kpis_are_sql_over_the_events_table(settings: Settings, tmp_path: Path) -> None:
    """The stack's `kpi-sales-from-events` Athena query, in DuckDB's dialect (`timezone()` for Trino's
    `at_timezone`), gives the KPI table's units, revenue, refunds and deliveries (rows with events)."""
    events = list(generate(3, 4, START, seed=11))
    archive(tmp_path / "bucket", events)
    tables = Tables(settings)
    ingest(tables, dir_lister(tmp_path / "bucket"), dir_reader(tmp_path / "bucket"))
    compute_days(tables)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("events", tables.scan("events"))
    sql = """
        WITH once AS (
          SELECT *, row_number() OVER (PARTITION BY store_id, event_id ORDER BY ts) AS nth FROM events
        ), zones AS (
          SELECT store_id, max_by(timezone, ts) AS zone FROM events
          WHERE type = 'store' AND timezone IS NOT NULL GROUP BY store_id
        )
        SELECT e.store_id, e.product_id,
               CAST(timezone(coalesce(z.zone, 'UTC'), e.ts) AS date) AS day,
               sum(CASE WHEN e.type = 'sale' THEN e.quantity ELSE 0 END) AS units_sold,
               sum(CASE WHEN e.type = 'sale' THEN e.quantity * e.unit_price ELSE 0 END) AS revenue,
               sum(CASE WHEN e.type = 'refund' THEN e.quantity ELSE 0 END) AS refund_units,
               sum(CASE WHEN e.type = 'restock' THEN e.quantity ELSE 0 END) AS units_delivered
        FROM once e LEFT JOIN zones z ON e.store_id = z.store_id
        WHERE e.nth = 1 AND e.product_id IS NOT NULL AND e.type <> 'store'
        GROUP BY 1, 2, 3
    """
    by_sql = {
        (store, product, day.isoformat()): (int(sold), round(float(revenue), 2), int(refunds), int(delivered))
        for store, product, day, sold, revenue, refunds, delivered in con.execute(sql).fetchall()
    }
    by_kpis = {
        (r["store_id"], r["product_id"], r["day"]): (
            r["units_sold"],
            round(r["revenue"], 2),
            r["refund_units"],
            r["units_delivered"],
        )
        for r in read_kpis(tables)
        if r["events"] > 0
    }
    assert by_sql == by_kpis
    assert len(by_sql) > 50


def test_history_daily_stats_and_maintain_from_the_command_line(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = list(generate(2, 3, START))
    archive(tmp_path / "bucket", events, per_object=100)
    code, out, _ = run(
        [
            "history",
            "daily",
            str(tmp_path / "bucket"),
            "--today",
            "2026-08-05",
            "--min-age-minutes",
            "0",
            "--json",
        ],
        capsys,
    )
    assert code == 0
    daily = json.loads(out)
    assert daily["ingest"]["rows"]["events"] == len(events)
    assert daily["kpis"]["product_rows"] > 0
    assert daily["maintain"]["keep_since"] == "2026-07-06"  # 30 days by default
    code, out, _ = run(["history", "stats", "--json"], capsys)
    stats = json.loads(out)
    assert stats["tables"]["events"]["rows"] == len(events)
    assert stats["tables"]["events"]["files_per_partition"] == 1
    assert all(p["files"] >= 1 and p["mean_file_bytes"] > 0 for p in stats["partitions"])
    code, out, _ = run(
        [
            "history",
            "maintain",
            "--today",
            "2026-08-05",
            "--retention-days",
            "2",
            "--min-age-minutes",
            "0",
            "--json",
        ],
        capsys,
    )
    assert code == 0
    assert json.loads(out)["keep_since"] == "2026-08-03"
    days = {r["day"] for r in json.loads(run(["kpis", "--format", "json"], capsys)[1])}
    assert min(days) >= "2026-08-03"
