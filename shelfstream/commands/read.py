"""What reads the loop's state: `inventory`, `alerts`, and `backtest` (the core over a file, no AWS)."""

from __future__ import annotations

import argparse
import sys

import orjson
from rich.table import Table

from foundation.console import make_console
from foundation.contract import alert_kind, encode
from foundation.errors import UsageError
from shelfstream.bootstrap import bootstrap
from shelfstream.commands.common import out, require_input


def cmd_inventory(args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from foundation.aws.lineage import ShardInfo
    from processors.checkpoints import load_all_sync, merge_inventories

    wiring = bootstrap()
    settings = wiring.settings
    resources = wiring.resources()
    checkpoints = load_all_sync(wiring.client("s3"), resources.bucket, settings)
    shards: list[ShardInfo] | None = None
    try:
        pages = (
            wiring.client("kinesis")
            .get_paginator("list_shards")
            .paginate(StreamName=settings.aws.stream_name)
        )
        shards = [ShardInfo.from_api(s) for page in pages for s in page["Shards"]]
    except (ClientError, BotoCoreError):
        shards = None  # then a store held by two shards is still reported, with the view taken
    result = merge_inventories([(c.shard_id, c.core.inventory()) for c in checkpoints], shards)
    warn = make_console(stderr=True, highlight=False, soft_wrap=True)
    for warning in result.warnings():
        warn.print(f"[yellow]warning: {warning}[/yellow]")
    merged = result.stock
    if args.store is not None:
        if args.store not in merged:
            raise UsageError(f"store {args.store} has no stock in any checkpoint")
        merged = {args.store: merged[args.store]}
    merged = {store: dict(sorted(products.items())) for store, products in sorted(merged.items())}
    if args.json:
        sys.stdout.write(orjson.dumps(merged).decode() + "\n")
        return 0
    table = Table("store", "product", "on hand", title="on-hand stock (last checkpoint)")
    for store, products in merged.items():
        for product, qty in products.items():
            table.add_row(store, product, f"[red]{qty}[/red]" if qty <= 0 else str(qty))
    out().print(table if merged else "no checkpointed stock yet: is `shelfstream process` running?")
    return 0


def cmd_alerts(args: argparse.Namespace) -> int:
    from consumers.alerts_inbox import read_alerts

    wiring = bootstrap()
    resources = wiring.resources()
    alerts = read_alerts(wiring.client("sqs"), resources.alerts_queue_url, wait_s=args.wait)
    if args.json:
        sys.stdout.write("".join(encode(a).decode() + "\n" for a in alerts))
        return 0
    table = Table("time", "kind", "store", "detail", title=f"{len(alerts)} alerts")
    for alert in alerts:
        detail = {k: v for k, v in orjson.loads(encode(alert)).items() if k not in {"kind", "store_id", "ts"}}
        detail.pop("alert_id", None)
        table.add_row(alert.ts, alert_kind(alert), alert.store_id, orjson.dumps(detail).decode())
    out().print(table)
    return 0


def cmd_backtest(args: argparse.Namespace) -> int:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from config import core_config
    from processors.backtest import read_fleet_prior, run_backtest

    require_input(args.file)
    prior_file = getattr(args, "fleet_prior", None)
    fleet_prior = read_fleet_prior(prior_file) if prior_file else None
    detector = getattr(args, "detector", None)
    settings = bootstrap(aws=False, overrides={"detector": {"kind": detector}} if detector else None).settings
    config = core_config(settings, archive=False)
    console = make_console(stderr=True)
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
    ) as bar:
        task = bar.add_task("backtest: 0 lines", total=None)
        result = run_backtest(
            args.file,
            args.out,
            config,
            progress=lambda n: bar.update(task, description=f"backtest: {n:,} lines"),
            workers=args.workers,
            fleet_prior=fleet_prior,
        )
    summary = result.summary
    out().print(
        f"{summary['events_read']:,} events read, {summary['events_rejected']:,} rejected, "
        f"{summary['duplicates_ignored']:,} duplicates, alerts {summary['alerts']}, "
        f"{summary['events_per_second']:,} events/s -> {args.out}"
    )
    return 0
