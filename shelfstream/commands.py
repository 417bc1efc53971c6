"""Handlers of the one-shot and service commands (the demo has its own module)."""

from __future__ import annotations

import argparse
import asyncio
import sys

import orjson
from rich.console import Console
from rich.table import Table

from config import load_settings
from shelfstream.aws import require_aws, sync_client
from shelfstream.contract import alert_kind, encode
from shelfstream.errors import UsageError


def _out() -> Console:
    return Console(highlight=False, soft_wrap=True)


def cmd_local_aws(args: argparse.Namespace) -> int:
    from shelfstream.localaws import serve

    settings = load_settings()
    serve(args.port or None, settings, announce=lambda text: print(text, flush=True))
    return 0


def cmd_provision(args: argparse.Namespace) -> int:
    from shelfstream.provision import provision

    require_aws()
    resources = provision(load_settings())
    table = Table("resource", "name / address", title="provisioned")
    for field, value in vars(resources).items():
        table.add_row(field, str(value))
    _out().print(table)
    return 0


def cmd_process(args: argparse.Namespace) -> int:
    from shelfstream.services import run_processor

    require_aws()
    asyncio.run(run_processor(load_settings()))
    return 0


def cmd_dispatch(args: argparse.Namespace) -> int:
    from shelfstream.services import run_dispatcher

    require_aws()
    asyncio.run(run_dispatcher(load_settings()))
    return 0


def cmd_inventory(args: argparse.Namespace) -> int:
    from processors.checkpoints import load_all_sync
    from shelfstream.provision import resolve

    require_aws()
    settings = load_settings()
    resources = resolve(settings)
    merged: dict[str, dict[str, int]] = {}
    for checkpoint in load_all_sync(sync_client("s3", settings), resources.bucket, settings):
        for store, products in checkpoint.core.inventory().items():
            merged.setdefault(store, {}).update(products)
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
    _out().print(table if merged else "no checkpointed stock yet: is `shelfstream process` running?")
    return 0


def cmd_alerts(args: argparse.Namespace) -> int:
    from shelfstream.alerts_inbox import read_alerts
    from shelfstream.provision import resolve

    require_aws()
    settings = load_settings()
    resources = resolve(settings)
    alerts = read_alerts(sync_client("sqs", settings), resources.alerts_queue_url, wait_s=args.wait)
    if args.json:
        sys.stdout.write("".join(encode(a).decode() + "\n" for a in alerts))
        return 0
    table = Table("time", "kind", "store", "detail", title=f"{len(alerts)} alerts")
    for alert in alerts:
        detail = {k: v for k, v in orjson.loads(encode(alert)).items() if k not in {"kind", "store_id", "ts"}}
        detail.pop("alert_id", None)
        table.add_row(alert.ts, alert_kind(alert), alert.store_id, orjson.dumps(detail).decode())
    _out().print(table)
    return 0


def cmd_backtest(args: argparse.Namespace) -> int:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from processors.backtest import run_backtest
    from processors.stream_processor import core_config

    settings = load_settings()
    config = core_config(settings, archive=False)
    console = Console(stderr=True)
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
    ) as bar:
        task = bar.add_task("backtest: 0 lines", total=None)
        result = run_backtest(
            args.file,
            args.out,
            config,
            progress=lambda n: bar.update(task, description=f"backtest: {n:,} lines"),
        )
    summary = result.summary
    _out().print(
        f"{summary['events_read']:,} events read, {summary['events_rejected']:,} rejected, "
        f"{summary['duplicates_ignored']:,} duplicates, alerts {summary['alerts']}, "
        f"{summary['events_per_second']:,} events/s -> {args.out}"
    )
    return 0
