"""`kpis` (daily inventory KPIs) and `history ingest|convert|kpis|maintain|stats` (the Iceberg tables)."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from rich.console import Console
from rich.table import Table

from foundation.errors import UsageError
from history.query import parse_date
from shelfstream.bootstrap import bootstrap

if TYPE_CHECKING:
    from history.tables import Tables


def _err() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _range(args: argparse.Namespace) -> tuple[dt.date | None, dt.date | None]:
    since = parse_date(getattr(args, "since", None), "--from")
    until = parse_date(getattr(args, "until", None), "--to")
    if since is not None and until is not None and since > until:
        raise UsageError(f"--from {since} is after --to {until}")
    return since, until


def cmd_kpis(args: argparse.Namespace) -> int:
    from history.kpi_tables import compute_days, read_kpis
    from history.tables import require_tables
    from processors.core.kpis import PRODUCT_FIELDS, STORE_FIELDS

    settings = bootstrap(aws=False).settings
    since, until = _range(args)
    tables = require_tables(settings)
    if args.refresh:
        run = compute_days(tables, since, None)
        _err().print(f"KPIs recomputed for {run.since} .. {run.until}: {run.product_rows:,} rows")
    elif tables.scan("kpis_store_daily", columns=("day",)).num_rows == 0:
        run = compute_days(tables)
        _err().print(f"KPIs computed for {run.since} .. {run.until}: {run.product_rows:,} rows")
    stores = args.store or None
    rows = read_kpis(tables, stores, since, until, per_store=args.per_store)
    fields = STORE_FIELDS if args.per_store else PRODUCT_FIELDS
    write_rows(rows, fields, args.format, "daily KPIs per store" if args.per_store else "daily KPIs")
    if not rows:
        _err().print("[yellow]no KPI rows for that store and range (days with no events have none)[/yellow]")
    return 0


def write_rows(rows: list[dict[str, Any]], fields: tuple[str, ...], fmt: str, title: str) -> None:
    if fmt == "json":
        sys.stdout.write(orjson.dumps([{f: r.get(f) for f in fields} for r in rows]).decode() + "\n")
        return
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(fields)
        for r in rows:
            writer.writerow("" if r.get(f) is None else r.get(f) for f in fields)
        return
    hidden = ("timezone", "events", "refund_units", "refund_amount", "start_stock", "price", "open_minutes")
    shown = [f for f in fields if f not in hidden]
    table = Table(*shown, title=f"{title}: {len(rows):,} rows")
    for column in table.columns[2:]:
        column.justify = "right"
    for r in rows:
        table.add_row(*("[dim]-[/dim]" if r.get(f) is None else _fmt(f, r.get(f)) for f in shown))
    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console.width = 220
    console.print(table)


def _fmt(name: str, value: Any) -> str:
    if name in ("availability", "sell_through") and isinstance(value, float):
        return f"{value:.1%}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)


def _objects(args: argparse.Namespace, settings: Any) -> tuple[Any, Any, str, Any]:
    """Where delivered objects are read: a directory with the bucket's layout, or the bucket."""
    from history.archive import aws_configured
    from history.tables import dir_lister, dir_reader, s3_lister, s3_reader

    directory = getattr(args, "dir", None)
    if directory:
        root = Path(directory)
        if not root.is_dir():
            raise UsageError(f"directory {directory} does not exist")
        return dir_lister(root), dir_reader(root), str(root), None
    if not aws_configured():
        raise UsageError(
            "no AWS configured: set AWS_ENDPOINT_URL (e.g. `shelfstream local-aws`) or give a directory "
            "with the bucket's layout (`shelfstream history convert DIR`)"
        )
    wiring = bootstrap()
    s3 = wiring.client("s3")
    bucket = settings.aws.bucket
    return s3_lister(s3, bucket), s3_reader(s3, bucket), f"s3://{bucket}", s3


def cmd_history(args: argparse.Namespace) -> int:
    from history.tables import Tables

    settings = bootstrap(aws=False).settings
    action = args.action
    if action in ("ingest", "convert"):
        return _ingest(args, settings)
    if action == "daily":
        return _daily(args, settings)
    if not Tables.exists(settings):
        raise UsageError(
            f"no history tables in {settings.history.tables_catalog}: run `shelfstream history ingest` first"
        )
    tables = Tables(settings)
    if action == "kpis":
        from history.kpi_tables import compute_days

        since, until = _range(args)
        run = compute_days(tables, since, until)
        _print_result(args, run.as_dict(), "KPIs (re)computed")
        return 0
    if action == "maintain":
        return _maintain(args, settings, tables)
    return _stats(args, tables)


def _ingest(args: argparse.Namespace, settings: Any) -> int:
    """`history ingest` (delivered objects, once each) or `history convert DIR`, then the KPIs of
    the days they touched."""
    from history.kpi_tables import compute_days
    from history.tables import ARCHIVED, Tables, ingest

    if args.action == "convert" and not args.dir:
        raise UsageError("history convert needs a directory: shelfstream history convert DIR")
    listing, read, where, _ = _objects(args, settings)
    tables = Tables(settings)
    stats = ingest(tables, listing, read, tuple(args.table or ARCHIVED))
    run = compute_days(tables, min(stats.days) - dt.timedelta(days=1)) if stats.days else None
    result = {"source": where, **stats.as_dict(), "kpis": run.as_dict() if run else None}
    _print_result(args, result, f"{args.action}: {where} -> {settings.history.tables_catalog}")
    return 0


def _maintain(args: argparse.Namespace, settings: Any, tables: Tables) -> int:
    """`history maintain`: retention, compaction, snapshot expiry and the sweep of stray files."""
    from history.tables import maintain, s3_landing_cleaner

    today = parse_date(args.today, "--today") or dt.datetime.now(dt.UTC).date()
    cleaner = None
    if getattr(args, "landing", False):
        _, _, _, s3 = _objects(args, settings)
        cleaner = s3_landing_cleaner(s3, settings.aws.bucket, settings)
    report = maintain(
        tables,
        today,
        args.retention_days or settings.history.retention_days,
        snapshot_min_age=dt.timedelta(minutes=args.min_age_minutes),
        delete_landing=cleaner,
    )
    _print_result(
        args,
        report.as_dict(),
        f"maintenance (retention {args.retention_days or settings.history.retention_days} days)",
    )
    return 0


def _stats(args: argparse.Namespace, tables: Tables) -> int:
    """`history stats`: files per partition and the mean file size, per table (and per partition)."""
    from history.tables import partition_stats

    parts = partition_stats(tables)
    summary: dict[str, dict[str, Any]] = {}
    for p in parts:
        s = summary.setdefault(p.table, {"partitions": 0, "files": 0, "rows": 0, "bytes": 0})
        s["partitions"] += 1
        s["files"] += p.files
        s["rows"] += p.rows
        s["bytes"] += p.bytes
    for s in summary.values():
        s["files_per_partition"] = round(s["files"] / s["partitions"], 2) if s["partitions"] else 0
        s["mean_file_bytes"] = round(s["bytes"] / s["files"]) if s["files"] else 0
    if args.json:
        payload = {
            "tables": summary,
            "partitions": [{**p.__dict__, "mean_file_bytes": round(p.mean_file_bytes)} for p in parts],
        }
        sys.stdout.write(orjson.dumps(payload).decode() + "\n")
        return 0
    table = Table(
        "table",
        "partitions",
        "files",
        "files/partition",
        "rows",
        "bytes",
        "mean file",
        title="history tables",
    )
    for name, s in summary.items():
        table.add_row(
            name,
            str(s["partitions"]),
            str(s["files"]),
            str(s["files_per_partition"]),
            f"{s['rows']:,}",
            f"{s['bytes']:,}",
            f"{s['mean_file_bytes']:,} B",
        )
    Console(highlight=False, soft_wrap=True).print(table)
    if args.partitions:
        detail = Table("table", "partition", "files", "rows", "bytes", "mean file", title="per partition")
        for p in parts:
            detail.add_row(
                p.table,
                p.partition,
                str(p.files),
                f"{p.rows:,}",
                f"{p.bytes:,}",
                f"{round(p.mean_file_bytes):,} B",
            )
        Console(highlight=False, soft_wrap=True).print(detail)
    return 0


def _daily(args: argparse.Namespace, settings: Any) -> int:
    """The daily job (deploy/: an EventBridge Scheduler task): append what Firehose does not (rejected
    records on AWS; everything locally), recompute the KPIs of the last days (late events change
    them), then retention, compaction, snapshot expiry and the sweep."""
    from history.kpi_tables import compute_days
    from history.tables import ARCHIVED, Tables, ingest, maintain

    today = parse_date(args.today, "--today") or dt.datetime.now(dt.UTC).date()
    tables = Tables(settings)
    names = ("rejected",) if tables.glue else ARCHIVED
    result: dict[str, Any] = {}
    try:
        listing, read, where, _ = _objects(args, settings)
    except UsageError as exc:
        result["ingest"] = f"skipped: {exc}"
    else:
        result["ingest"] = {
            "source": where,
            **ingest(tables, listing, read, tuple(args.table or names)).as_dict(),
        }
    result["kpis"] = compute_days(tables, today - dt.timedelta(days=3)).as_dict()
    retention = args.retention_days or settings.history.retention_days
    result["maintain"] = maintain(
        tables, today, retention, snapshot_min_age=dt.timedelta(minutes=args.min_age_minutes)
    ).as_dict()
    _print_result(args, result, f"history daily ({today})")
    return 0


def _print_result(args: argparse.Namespace, result: dict[str, Any], title: str) -> None:
    if getattr(args, "json", False):
        sys.stdout.write(orjson.dumps(result).decode() + "\n")
        return
    table = Table("figure", "value", title=title)
    for key, value in result.items():
        table.add_row(key, value if isinstance(value, str) else orjson.dumps(value).decode())
    Console(highlight=False, soft_wrap=True).print(table)
