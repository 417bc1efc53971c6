"""`shelfstream demo`: the whole loop in one process on the embedded local AWS.

Simulated stores -> Kinesis -> processor -> SQS -> trucks -> Kinesis (restocks) -> processor, with
alerts on SNS and the archive in S3, a live view, and at the end a summary that checks the
processor's stock against a ledger kept independently by the producers and the trucks.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from config import Settings, load_settings
from consumers.delivery_log import DynamoDeliveryLog
from consumers.dispatcher import Dispatcher, lease_seconds
from processors.stream_processor import StreamProcessor
from producers.kinesis_writer import KinesisWriter
from producers.ledger import Ledger
from producers.replay import run_simulation
from producers.simulator import StoreSimulator
from shelfstream.api.embedded import DemoDashboard
from shelfstream.aws import AioClients, point_at
from shelfstream.clock import ScaledClock
from shelfstream.contract import Restock, alert_kind, encode, format_ts
from shelfstream.localaws import EmbeddedAws
from shelfstream.metrics import PrometheusServer, Registry, dispatcher_source, processor_source
from shelfstream.provision import Resources, provision
from shelfstream.services import DEMO_SERVICES


@dataclass
class DemoOptions:
    duration_s: float = 60.0
    stores: int = 6
    products: int = 12
    speed: float = 120.0
    rate: float | None = None
    seed: int = 7
    live: bool = True
    baskets_per_hour: float = 1200.0


@dataclass
class DemoRun:
    """Everything the live view and the summary read."""

    settings: Settings
    clock: ScaledClock
    simulator: StoreSimulator
    writer: KinesisWriter
    truck_writer: KinesisWriter
    processor: StreamProcessor
    dispatcher: Dispatcher
    ledger: Ledger
    started: float = field(default_factory=time.monotonic)
    phase: str = "trading"
    rates: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=20))

    def produced(self) -> int:
        return self.simulator.stats.records + self.dispatcher.stats.deliveries


def demo_start_ms() -> int:
    """Today at 10:00 UTC: the demo opens in the late morning and runs into the lunch peak."""
    today = dt.datetime.now(dt.UTC).replace(hour=10, minute=0, second=0, microsecond=0)
    return int(today.timestamp() * 1000)


async def run_demo(
    options: DemoOptions,
    settings: Settings,
    resources: Resources,
    console: Console,
    dashboard: DemoDashboard | None = None,
) -> dict[str, Any]:
    start_ms = demo_start_ms()
    clock = ScaledClock(start_ms, options.speed)
    simulator = StoreSimulator(
        options.seed,
        options.stores,
        options.products,
        start_ms,
        baskets_per_hour=options.baskets_per_hour,
        bad_fraction=0.002,
        duplicate_fraction=0.005,
    )
    ledger = Ledger()
    stop_processor = asyncio.Event()
    stop_dispatcher = asyncio.Event()
    async with AioClients(settings, *DEMO_SERVICES) as clients:
        writer = KinesisWriter(clients["kinesis"], settings.stream_name, settings)
        truck_writer = KinesisWriter(clients["kinesis"], settings.stream_name, settings)
        processor = StreamProcessor(
            settings, clients, resources, on_effects=dashboard.on_effects if dashboard else None
        )

        def delivered(event: Restock) -> None:
            ledger.record(encode(event))
            if dashboard is not None:
                dashboard.on_delivery(event)

        dispatcher = Dispatcher(
            settings,
            clients["sqs"],
            resources.restock_queue_url,
            truck_writer,
            clock,
            delivery_log=DynamoDeliveryLog(
                clients["dynamodb"], resources.deliveries_table, lease_s=lease_seconds(settings)
            ),
            on_delivery=delivered,
            wait_seconds=1,
        )
        run = DemoRun(settings, clock, simulator, writer, truck_writer, processor, dispatcher, ledger)
        metrics = None
        if settings.metrics_port:
            sources = [processor_source(processor), dispatcher_source(dispatcher, truck_writer)]
            registry = Registry({"Service": "demo", "Stream": settings.stream_name}, sources)
            metrics = await PrometheusServer(registry, settings.metrics_port).start()
            console.print(f"[b]metrics[/b] at http://127.0.0.1:{metrics.port}/metrics")
        if dashboard is not None:
            dashboard.start(processor, dispatcher, clients, resources.bucket, on_written=ledger.record)
        processing = asyncio.create_task(processor.run(stop_processor))
        dispatching = asyncio.create_task(dispatcher.run(stop_dispatcher, drain_timeout=30))
        started = time.monotonic()
        with Live(render(run), console=console, refresh_per_second=4, transient=False) as live:
            viewer = asyncio.create_task(_refresh(live, run)) if options.live else None
            await run_simulation(
                writer,
                simulator,
                rate=options.rate,
                duration_s=options.duration_s,
                speed=options.speed,
                ledger=ledger,
                clock=time.monotonic,
            )
            run.phase = "closing: trucks finish their trips"
            await writer.flush()
            stop_dispatcher.set()
            await dispatching
            await truck_writer.flush()
            run.phase = "closing: processor catches up"
            caught_up = await processor.wait_caught_up(timeout=60)
            stop_processor.set()
            await processing
            if dashboard is not None:
                await dashboard.stop()
            run.phase = "done"
            if viewer is not None:
                viewer.cancel()
            live.update(render(run))
        seconds = time.monotonic() - started
        if metrics is not None:
            await metrics.stop()
        await writer.close()
        await truck_writer.close()
        return summary(run, seconds, caught_up)


async def _refresh(live: Live, run: DemoRun) -> None:
    while True:
        run.rates.append((time.monotonic(), run.processor.records_read()))
        live.update(render(run))
        await asyncio.sleep(0.25)


def _events_per_second(run: DemoRun) -> float:
    if len(run.rates) < 2:
        return 0.0
    (t0, n0), (t1, n1) = run.rates[0], run.rates[-1]
    return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


def render(run: DemoRun) -> Group:
    stats = run.processor.stats()
    fleet = run.dispatcher.fleet
    head = Table.grid(padding=(0, 3))
    for _ in range(4):
        head.add_column()
    head.add_row(
        f"[b]store time[/b] {format_ts(run.clock.now_ms())[:16].replace('T', ' ')}",
        f"[b]phase[/b] {run.phase}",
        f"[b]wall[/b] {time.monotonic() - run.started:5.1f} s",
        f"[b]events/s[/b] {_events_per_second(run):,.0f}",
    )
    head.add_row(
        f"[b]produced[/b] {run.produced():,}",
        f"[b]processed[/b] {run.processor.records_read():,}",
        f"[b]rejected[/b] {stats.events_rejected:,}",
        f"[b]duplicates[/b] {stats.duplicates_ignored:,}",
    )
    head.add_row(
        f"[b red]stock-outs[/b red] {run.processor.stock_outs()}",
        f"[b yellow]open requests[/b yellow] {run.processor.open_requests()}",
        f"[b cyan]trucks on road[/b cyan] {fleet.on_road()}/{len(fleet.trucks)}",
        f"[b green]deliveries[/b green] {run.dispatcher.stats.deliveries}",
    )
    alerts = Table("store time", "kind", "store", "detail", expand=True, title="recent alerts")
    for alert in list(run.processor.recent)[-8:][::-1]:
        detail = orjson.loads(encode(alert))
        for key in ("kind", "store_id", "ts", "alert_id"):
            detail.pop(key, None)
        text = detail.pop("explanation", None) or ", ".join(f"{k}={v}" for k, v in detail.items())
        alerts.add_row(alert.ts[11:16], alert_kind(alert), alert.store_id, text)
    trucks = Table(
        "truck", "store", "product", "units", "delivered at", expand=True, title="recent deliveries"
    )
    for d in list(run.dispatcher.recent)[-5:][::-1]:
        trucks.add_row(d.truck_id, d.store_id, d.product_id, str(d.quantity), d.delivered_ts[11:16])
    counts = ", ".join(f"{k} {v}" for k, v in sorted(run.processor.alert_counts.items())) or "none yet"
    return Group(Panel(head, title="shelfstream demo", subtitle=f"alerts: {counts}"), alerts, trucks)


def summary(run: DemoRun, seconds: float, caught_up: bool) -> dict[str, Any]:
    stats = run.processor.stats()
    final = run.processor.inventory()
    expected = run.ledger.stock()
    mismatches = _mismatches(final, expected)
    return {
        "events_produced": run.produced(),
        "events_processed": run.processor.records_read(),
        "events_rejected": stats.events_rejected,
        "duplicates_ignored": stats.duplicates_ignored,
        "restock_requests": stats.alerts.get("restock_request", 0),
        "deliveries": run.dispatcher.stats.deliveries,
        "alerts": dict(sorted(stats.alerts.items())),
        "inventory_reconciled": caught_up and not mismatches,
        "inventory_mismatches": mismatches[:20],
        "stores": len(expected),
        "late_events": stats.late_events,
        "archived": run.processor.sinks.stats.archived,
        "dead_lettered": run.processor.sinks.stats.dead_lettered + run.writer.stats.failed,
        "store_time_start": format_ts(run.simulator.start_ms),
        "store_time_end": format_ts(run.simulator.position_ms),
        "seconds": round(seconds, 2),
    }


def _mismatches(final: dict[str, dict[str, int]], expected: dict[str, dict[str, int]]) -> list[str]:
    problems = []
    for store in sorted(set(final) | set(expected)):
        got, want = final.get(store, {}), expected.get(store, {})
        for product in sorted(set(got) | set(want)):
            if got.get(product, 0) != want.get(product, 0):
                problems.append(f"{store}/{product}: processor {got.get(product)} ledger {want.get(product)}")
    return problems


async def _with_dashboard(
    args: argparse.Namespace, options: DemoOptions, settings: Settings, resources: Resources, console: Console
) -> dict[str, Any]:
    """The demo, with its live dashboard unless --no-dashboard (bound in the loop that serves it)."""
    if args.no_dashboard:
        return await run_demo(options, settings, resources, console)
    dashboard = DemoDashboard(settings, args.port)
    console.print(
        f"[b]live dashboard[/b] at {dashboard.url} (while the demo runs); sign in with the HQ token "
        f"[b]{dashboard.token}[/b]",
        soft_wrap=True,
    )
    return await run_demo(options, settings, resources, console, dashboard)


def _mirror_archive(settings: Settings, resources: Resources, console: Console) -> None:
    """Keep a copy of the archive before the embedded AWS goes away, so `shelfstream query` and
    `shelfstream report` work afterwards with no AWS at all."""
    from shelfstream.archive import mirror_archive
    from shelfstream.aws import sync_client
    from shelfstream.errors import ShelfstreamError

    try:
        s3 = sync_client("s3", settings)
        stats = mirror_archive(s3, resources.bucket, settings, settings.archive_mirror)
    except (OSError, ShelfstreamError) as exc:
        console.print(f"[yellow]archive not mirrored to {settings.archive_mirror}: {exc}[/yellow]")
        return
    console.print(
        f"archive ({stats.objects:,} objects) mirrored to {settings.archive_mirror}: try "
        '`shelfstream query "SELECT type, count(*) FROM events GROUP BY 1"` '
        "or `shelfstream report --week current`"
    )


def cmd_demo(args: argparse.Namespace) -> int:
    options = DemoOptions(
        duration_s=args.duration,
        stores=args.stores,
        products=args.products,
        speed=args.speed,
        rate=args.rate,
        seed=args.seed,
        live=not args.no_live,
    )
    console = Console()
    settings = load_settings(trucks=8, travel_seconds=1.5, checkpoint_every_s=2.0)
    with EmbeddedAws(kinesis_limits=settings.embedded_kinesis_limits) as aws:
        point_at(aws.endpoint)
        console.print(f"[b]embedded AWS[/b] at {aws.endpoint}; provisioning ...")
        resources = provision(settings)
        result = asyncio.run(_with_dashboard(args, options, settings, resources, console))
        _mirror_archive(settings, resources, console)
    table = Table("figure", "value", title="demo summary")
    for key, value in result.items():
        if key != "inventory_mismatches" or value:
            table.add_row(key, orjson.dumps(value).decode() if isinstance(value, dict | list) else str(value))
    console.print(table)
    if args.summary:
        Path(args.summary).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    return 0 if result["inventory_reconciled"] else 1
