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


def _require_input(path: str) -> None:
    """Refuse a missing input before any progress bar is drawn, so the error stays one line."""
    from pathlib import Path

    if path == "-":
        return
    file = Path(path)
    if not file.exists():
        raise UsageError(f"input file {path} does not exist")
    if file.is_dir():
        raise UsageError(f"input {path} is a directory, not a JSON-lines file")


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

    _require_input(args.file)
    detector = getattr(args, "detector", None)
    settings = load_settings(**({"detector": detector} if detector else {}))
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
            workers=getattr(args, "workers", 1),
        )
    summary = result.summary
    _out().print(
        f"{summary['events_read']:,} events read, {summary['events_rejected']:,} rejected, "
        f"{summary['duplicates_ignored']:,} duplicates, alerts {summary['alerts']}, "
        f"{summary['events_per_second']:,} events/s -> {args.out}"
    )
    return 0


def _dead_letter_path() -> str:
    """Where producers keep records Kinesis would not take (never silently dropped)."""
    from pathlib import Path

    folder = Path(".shelfstream")
    folder.mkdir(exist_ok=True)
    return str(folder / "producer-dead-letter.jsonl")


def cmd_replay(args: argparse.Namespace) -> int:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from producers.kinesis_writer import KinesisWriter
    from producers.replay import ReplayStats, replay_file
    from shelfstream.aws import AioClients
    from shelfstream.provision import resolve

    _require_input(args.file)
    require_aws()
    settings = load_settings()
    resolve(settings)
    console = Console(stderr=True)

    async def go() -> tuple[ReplayStats, int]:
        async with AioClients(settings, "kinesis") as clients:
            writer = KinesisWriter(
                clients["kinesis"], settings.stream_name, settings, dead_letter_path=_dead_letter_path()
            )
            with Progress(
                SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
            ) as bar:
                task = bar.add_task("replay: 0 records", total=None)
                stats = await replay_file(
                    args.file,
                    writer,
                    progress=lambda s: bar.update(task, description=f"replay: {s.sent:,} records"),
                )
            await writer.close()
            return stats, writer.stats.failed

    stats, failed = asyncio.run(go())
    _out().print(
        f"replayed {stats.sent:,} records ({stats.no_store_id} without a store id, "
        f"{stats.blank} blank lines, {failed} dead-lettered) to {settings.stream_name}"
    )
    return 1 if failed else 0


def cmd_simulate(args: argparse.Namespace) -> int:
    import time

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from producers.kinesis_writer import KinesisWriter
    from producers.replay import SimulationStats, run_simulation
    from producers.simulator import StoreSimulator
    from shelfstream.aws import AioClients
    from shelfstream.provision import resolve

    require_aws()
    settings = load_settings()
    resolve(settings)
    console = Console(stderr=True)
    simulator = StoreSimulator(args.seed, args.stores, args.products, int(time.time() * 1000))

    async def go() -> tuple[SimulationStats, int]:
        async with AioClients(settings, "kinesis") as clients:
            writer = KinesisWriter(
                clients["kinesis"], settings.stream_name, settings, dead_letter_path=_dead_letter_path()
            )
            with Progress(
                TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn(), console=console
            ) as bar:
                task = bar.add_task("simulate: 0 records", total=args.duration)
                started = time.monotonic()

                def progress(s: SimulationStats) -> None:
                    bar.update(
                        task,
                        completed=time.monotonic() - started,
                        description=f"simulate: {s.records_put:,} records",
                    )

                stats = await run_simulation(
                    writer,
                    simulator,
                    rate=args.rate,
                    duration_s=args.duration,
                    speed=args.speed,
                    ledger=None,
                    progress=progress,
                )
            await writer.close()
            return stats, writer.stats.failed

    stats, failed = asyncio.run(go())
    _out().print(f"simulated {args.stores} stores: {stats.records_put:,} records put, {failed} dead-lettered")
    return 1 if failed else 0
