"""The history tables measured: 30 days of 100 stores through the local path.

Events (benchmarks/history_data.py) are delivered to the embedded S3 as moto's Firehose delivers them (one
JSON-lines object per batch of about 1,000 lines), `ingest` turns them into Iceberg appends (warehouse on
disk, SQL catalog on SQLite) a few objects at a time as a running loop would, the KPIs are computed, and
the closed days compacted. Reported: write throughput, files per partition before and after compaction,
storage against the JSON lines, and the time of the weekly report and of a KPI query.

    python -m benchmarks.history_tables [--stores 100] [--days 30] [--docs docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from benchmarks.history_data import generate

START = dt.date(2026, 7, 1)
MARK_BEGIN = "<!-- history-tables:begin -->"
MARK_END = "<!-- history-tables:end -->"


def measure(
    stores: int, days: int, objects_per_ingest: int = 6, lines_per_object: int = 1000
) -> dict[str, Any]:
    from config import Settings
    from foundation.aws.embedded import EmbeddedAws
    from history.archive import ArchiveFilter, TableSource, open_archive
    from history.kpi_tables import compute_days
    from history.query import run_query
    from history.report import compute_report, parse_week
    from history.tables import Tables, compact, ingest, partition_stats, s3_lister, s3_reader

    work = Path(tempfile.mkdtemp(prefix="shelfstream-bench-"))
    settings = Settings(
        history={"tables_catalog": str(work / "catalog.db"), "tables_warehouse": str(work / "warehouse")},
        aws={"bucket": "bench"},
    )
    import boto3

    with EmbeddedAws(port=0) as aws:
        s3 = boto3.client(
            "s3",
            endpoint_url=aws.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        s3.create_bucket(Bucket="bench")
        tables = Tables(settings)
        began = time.perf_counter()
        events = list(generate(stores, days, START, products=12))
        generated_s = time.perf_counter() - began
        json_bytes = 0
        ingest_s = 0.0
        ingested_rows = 0
        pending = 0
        for n, i in enumerate(range(0, len(events), lines_per_object)):
            body = b"".join(orjson.dumps(e) + b"\n" for e in events[i : i + lines_per_object])
            json_bytes += len(body)
            s3.put_object(Bucket="bench", Key=f"events/2026/07/01/00/archive-1-{n:06d}", Body=body)
            pending += 1
            if pending == objects_per_ingest:
                t = time.perf_counter()
                ingested_rows += ingest(
                    tables, s3_lister(s3, "bench"), s3_reader(s3, "bench"), ["events"]
                ).rows["events"]
                ingest_s += time.perf_counter() - t
                pending = 0
        t = time.perf_counter()
        ingested_rows += ingest(tables, s3_lister(s3, "bench"), s3_reader(s3, "bench"), ["events"]).rows[
            "events"
        ]
        ingest_s += time.perf_counter() - t
    before = partition_stats(tables, ["events"])
    t = time.perf_counter()
    run = compute_days(tables)
    kpi_compute_s = time.perf_counter() - t
    t = time.perf_counter()
    compacted = compact(tables, START + dt.timedelta(days=days + 1))
    compact_s = time.perf_counter() - t
    after = partition_stats(tables, ["events", "kpis_daily"])
    events_after = [p for p in after if p.table == "events"]
    kpis_after = [p for p in after if p.table == "kpis_daily"]
    table_bytes = sum(p.bytes for p in events_after)

    source = TableSource(tables)
    week_day = START + dt.timedelta(days=min(days - 1, 14))
    label = f"{week_day.isocalendar().year}-W{week_day.isocalendar().week:02d}"
    week, wstart, wend = parse_week(label, week_day)
    t = time.perf_counter()
    keep = ArchiveFilter(None, (wstart - dt.timedelta(days=7)).date(), (wend + dt.timedelta(days=7)).date())
    with open_archive(source, ("events", "alerts", "kpis_store_daily"), keep, materialize=True) as archive:
        report = compute_report(archive, week, wstart, wend)
    report_s = time.perf_counter() - t
    sql = (
        "SELECT store_id, round(avg(availability), 4) AS availability, sum(lost_value) AS lost_value "
        "FROM kpis_store_daily WHERE day BETWEEN DATE '2026-07-08' AND DATE '2026-07-14' "
        "GROUP BY 1 ORDER BY 3 DESC"
    )
    t = time.perf_counter()
    result = run_query(source, sql)
    kpi_query_s = time.perf_counter() - t
    return {
        "stores": stores,
        "days": days,
        "events": len(events),
        "ingested_rows": ingested_rows,
        "objects": -(-len(events) // lines_per_object),
        "ingest_runs": -(-len(events) // (lines_per_object * objects_per_ingest)),
        "generate_s": round(generated_s, 2),
        "ingest_s": round(ingest_s, 2),
        "ingest_rows_per_s": round(ingested_rows / ingest_s) if ingest_s else 0,
        "files_per_partition_before": round(statistics.mean(p.files for p in before), 1),
        "files_per_partition_max_before": max(p.files for p in before),
        "partitions": len(events_after),
        "compacted_partitions": compacted["events"] + compacted["kpis_daily"] + compacted["kpis_store_daily"],
        "compact_s": round(compact_s, 2),
        "files_per_partition_after": round(statistics.mean(p.files for p in events_after), 1),
        "mean_file_bytes_after": round(statistics.mean(p.mean_file_bytes for p in events_after)),
        "json_bytes": json_bytes,
        "table_bytes": table_bytes,
        "storage_ratio": round(table_bytes / json_bytes, 3),
        "kpi_rows": run.product_rows,
        "kpi_store_rows": run.store_rows,
        "kpi_partitions": len(kpis_after),
        "kpi_compute_s": round(kpi_compute_s, 2),
        "report_week": week,
        "report_stores": len(report.stores),
        "report_s": round(report_s, 2),
        "kpi_query_rows": len(result.rows),
        "kpi_query_s": round(kpi_query_s, 3),
        "cpu": os.cpu_count(),
    }


def markdown(m: dict[str, Any]) -> str:
    mb = 1024 * 1024
    return "\n".join(
        [
            MARK_BEGIN,
            "## History tables (Apache Iceberg): 30 days of 100 stores through the local path",
            "",
            f"`python -m benchmarks.history_tables --docs docs/benchmarks.md` (`make bench-history`): "
            f"{m['stores']} stores, {m['days']} days, {m['events']:,} events (benchmarks/history_data.py) "
            f"delivered to the embedded S3 as moto's Firehose does ({m['objects']:,} JSON-lines objects of "
            f"about 1,000 lines), appended by `history ingest` {m['ingest_runs']:,} times "
            "(six objects a run, as a running loop would), warehouse on disk, SQL catalog on SQLite; "
            f"a machine with {m['cpu']} cores shared with other work.",
            "",
            "| figure | value |",
            "| --- | --- |",
            f"| write throughput (ingest: read objects, parse, append) | {m['ingest_rows_per_s']:,} rows/s "
            f"({m['ingested_rows']:,} rows in {m['ingest_s']} s) |",
            f"| files per partition before compaction (mean, max) | {m['files_per_partition_before']}, "
            f"{m['files_per_partition_max_before']} |",
            f"| compaction of the closed days ({m['compacted_partitions']} partitions, all tables) | "
            f"{m['compact_s']} s |",
            f"| files per partition after compaction | {m['files_per_partition_after']} "
            f"(mean file {m['mean_file_bytes_after'] / 1024:,.0f} KiB) over {m['partitions']} partitions |",
            f"| storage: JSON lines against the events table (Parquet, zstd) | "
            f"{m['json_bytes'] / mb:,.1f} MiB against {m['table_bytes'] / mb:,.1f} MiB "
            f"({m['storage_ratio']:.1%}) |",
            f"| daily KPIs, all {m['days']} days computed from the events table | {m['kpi_compute_s']} s "
            f"({m['kpi_rows']:,} product rows, {m['kpi_store_rows']:,} store rows) |",
            f"| weekly report {m['report_week']} from the tables ({m['report_stores']} stores) | "
            f"{m['report_s']} s |",
            f"| a KPI query (availability and lost sales per store over a week, `query`) | "
            f"{m['kpi_query_s']} s ({m['kpi_query_rows']} rows) |",
            "",
            "Reading: pyiceberg plans the scan and reads Parquet into Arrow, DuckDB queries the Arrow "
            "table in place (no extension). Each ingest run is one snapshot and, per date partition it "
            "touches, one file; compaction rewrites each closed day into one file sorted by store and time.",
            MARK_END,
        ]
    )


def write_docs(path: Path, text: str) -> None:
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    if MARK_BEGIN in old and MARK_END in old:
        head, rest = old.split(MARK_BEGIN, 1)
        _, tail = rest.split(MARK_END, 1)
        new = head + text + tail
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    path.write_text(new, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stores", type=int, default=100)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--docs", metavar="FILE", help="write the figures into this Markdown file")
    args = parser.parse_args(argv)
    figures = measure(args.stores, args.days)
    sys.stdout.write(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode() + "\n")
    if args.docs:
        write_docs(Path(args.docs), markdown(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
