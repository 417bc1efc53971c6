"""`query` (SQL over the archive) and `report` (the weekly summary)."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from pathlib import Path

from rich.table import Table

from foundation.console import make_console
from foundation.errors import ShelfstreamError
from history.archive import ArchiveFilter, S3Archive, TableSource, open_archive, open_source
from history.query import filter_from_args, plan_query, run_query, write_csv, write_json, write_table
from history.report import (
    LOOKAROUND,
    compute_report,
    notification,
    parse_week,
    pct,
    publish,
    report_files,
    topic_arn,
    write_local,
    write_s3,
)
from shelfstream.bootstrap import bootstrap

log = logging.getLogger(__name__)


def cmd_query(args: argparse.Namespace) -> int:
    wiring = bootstrap(aws=False)
    settings = wiring.settings
    keep = filter_from_args(args)
    plan_query(args.sql)  # bad SQL fails before anything is downloaded
    source, note = open_source(
        settings, args.archive, lambda: wiring.client("s3"), getattr(args, "source", "auto")
    )
    err = make_console(stderr=True, highlight=False, soft_wrap=True)
    if note:
        err.print(f"[yellow]{note}[/yellow]")
    result = run_query(source, args.sql, keep)
    err.print(f"source: {result.source}")
    if result.note:
        err.print(f"[yellow]{result.note}[/yellow]")
    writers = {"json": write_json, "csv": write_csv, "table": write_table}
    writers[args.format](result, sys.stdout)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    wiring = bootstrap(aws=False)
    settings = wiring.settings
    week, start, end = parse_week(args.week, dt.datetime.now(dt.UTC).date())
    source, note = open_source(
        settings, args.archive, lambda: wiring.client("s3"), getattr(args, "source", "auto")
    )
    err = make_console(stderr=True, highlight=False, soft_wrap=True)
    if note:
        err.print(f"[yellow]{note}[/yellow]")
    keep = ArchiveFilter(
        frozenset(args.store) if args.store else None,
        (start - LOOKAROUND).date(),
        (end + LOOKAROUND).date(),
    )
    tables = (
        ("events", "alerts", "kpis_store_daily") if isinstance(source, TableSource) else ("events", "alerts")
    )
    with open_archive(source, tables, keep, materialize=True) as archive:
        err.print(f"source: {archive.describe()}")
        if archive.skipped_note():
            err.print(f"[yellow]{archive.skipped_note()}[/yellow]")
        report = compute_report(archive, week, start, end)
    files = report_files(report)
    written: list[str] = []
    if args.out:
        written.extend(str(p) for p in write_local(files, Path(args.out) / week))
    bucket = source.bucket if isinstance(source, S3Archive) else None
    if isinstance(source, TableSource) and source.tables.glue:
        bucket = settings.aws.bucket  # on AWS, reading the stack's tables: the report goes to its bucket
    if bucket is not None:
        s3 = wiring.client("s3")
        prefix = f"{settings.prefixes.reports}{week}/"
        try:
            keys = write_s3(s3, bucket, prefix, files)
            written.extend(f"s3://{bucket}/{key}" for key in keys)
            publish(
                wiring.client("sns"),
                topic_arn(settings, wiring.client("sts")),
                notification(report, bucket, keys),
            )
        except (ClientError, BotoCoreError) as exc:
            raise ShelfstreamError(
                f"report {week} computed, but writing or announcing it failed: {exc}"
            ) from exc
    elif not args.out:
        written.extend(
            str(p)
            for p in write_local(files, Path(settings.history.archive_mirror).parent / "reports" / week)
        )
    totals = report.totals()
    table = Table("figure", "value", title=f"weekly report {week}")
    for key, value in totals.items():
        table.add_row(key, pct(value) if key == "refund_ratio" else str(value))
    for path in written:
        table.add_row("written", path)
    make_console(highlight=False, soft_wrap=True).print(table)
    log.info("report written", extra={"week": week, "files": written})
    return 0
