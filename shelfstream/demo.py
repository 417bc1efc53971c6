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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from config import Settings, core_config
from consumers.delivery_log import DynamoDeliveryLog
from consumers.dispatcher import Dispatcher, lease_seconds, restock_event
from consumers.metrics import dispatcher_source
from foundation.aws.provision import Resources
from foundation.clock import ScaledClock
from foundation.contract import Restock, RestockRequest, alert_kind, encode, format_ts, parse_ts
from foundation.metrics import PrometheusServer, Registry
from foundation.timeunits import DAY_MS, MINUTE_MS
from processors.core import ShardCore
from processors.metrics import processor_source
from processors.stream_processor import StreamProcessor
from producers.kinesis_writer import KinesisWriter
from producers.ledger import Ledger
from producers.replay import run_simulation
from producers.simulator import StoreSimulator
from producers.zoned import ZonedSimulator, renamed
from shelfstream.api.embedded import DemoDashboard
from shelfstream.bootstrap import DEMO_SERVICES, Wiring


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
    history_days: int = 2  # simulated trade before the demo starts, loaded straight into the core
    incident: bool = True  # one store's tills go down a few minutes in, for the detector to catch


def shelf_scale(options: DemoOptions) -> float:
    """Shelves as large, for the demo's busy stores, as the catalog's are for ordinary ones (about 90
    baskets an hour): a shelf of 40 units in a store selling 1,200 baskets an hour would be empty
    every few minutes, long before a truck could come."""
    return max(1.0, options.baskets_per_hour / 90.0)


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
    if options.history_days > 0:
        start_ms = trading_day_start_ms(start_ms)
    ledger = Ledger()
    history = load_history(options, settings, start_ms, ledger, console)
    clock = ScaledClock(start_ms, options.speed)  # store time starts now, after the history is in
    incident = demo_incident(options, start_ms)
    simulator = _simulator(options, start_ms, incident)
    stop_processor = asyncio.Event()
    stop_dispatcher = asyncio.Event()
    async with Wiring(settings).aio(*DEMO_SERVICES) as clients:
        writer = KinesisWriter(clients["kinesis"], settings.aws.stream_name, settings)
        truck_writer = KinesisWriter(clients["kinesis"], settings.aws.stream_name, settings)
        processor = StreamProcessor(
            settings, clients, resources, on_effects=dashboard.on_effects if dashboard else None
        )
        processor.seed_core = history

        def delivered(event: Restock) -> None:
            ledger.record(encode(event))
            simulator.deliver(event.store_id, event.product_id, event.quantity)  # onto the shelf
            if dashboard is not None:
                dashboard.on_delivery(event)

        dispatcher = _dispatcher(settings, clients, resources, truck_writer, clock, delivered)
        run = DemoRun(settings, clock, simulator, writer, truck_writer, processor, dispatcher, ledger)
        metrics = await _metrics(run, console)
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
            caught_up = await _close(
                run, (stop_dispatcher, dispatching), (stop_processor, processing), dashboard
            )
            run.phase = "done"
            if viewer is not None:
                viewer.cancel()
            live.update(render(run))
        seconds = time.monotonic() - started
        if metrics is not None:
            await metrics.stop()
        await writer.close()
        await truck_writer.close()
        return summary(run, seconds, caught_up) | anomaly_summary(run, incident)


async def _close(
    run: DemoRun,
    trucks: tuple[asyncio.Event, asyncio.Task[None]],
    processing: tuple[asyncio.Event, asyncio.Task[None]],
    dashboard: DemoDashboard | None,
) -> bool:
    """Trading is over: the trucks finish their trips and their restocks go out, then the processor
    catches up with the stream and stops; whether it caught up."""
    run.phase = "closing: trucks finish their trips"
    await run.writer.flush()
    trucks[0].set()
    await trucks[1]
    await run.truck_writer.flush()
    run.phase = "closing: processor catches up"
    caught_up = await run.processor.wait_caught_up(timeout=60)
    processing[0].set()
    await processing[1]
    if dashboard is not None:
        await dashboard.stop()
    return caught_up


def _simulator(options: DemoOptions, start_ms: int, incident: DemoIncident | None) -> ZonedSimulator:
    """The demo's stores: a few bad and duplicate records among their events (the processor must
    cope), and the incident's store offline for its span."""
    return ZonedSimulator(
        options.seed,
        options.stores,
        options.products,
        start_ms,
        baskets_per_hour=options.baskets_per_hour,
        shelf_scale=shelf_scale(options),
        bad_fraction=0.002,
        duplicate_fraction=0.005,
        outages={incident.store_id: (incident.start_ms, incident.end_ms)} if incident else None,
    )


def _dispatcher(
    settings: Settings,
    clients: Any,
    resources: Resources,
    truck_writer: KinesisWriter,
    clock: ScaledClock,
    on_delivery: Callable[[Restock], None],
) -> Dispatcher:
    """The trucks, on the demo's clock, logging deliveries in the shared DynamoDB table."""
    return Dispatcher(
        settings,
        clients["sqs"],
        resources.restock_queue_url,
        truck_writer,
        clock,
        delivery_log=DynamoDeliveryLog(
            clients["dynamodb"], resources.deliveries_table, lease_s=lease_seconds(settings)
        ),
        on_delivery=on_delivery,
        wait_seconds=1,
    )


async def _metrics(run: DemoRun, console: Console) -> PrometheusServer | None:
    """The processor's and the trucks' figures at /metrics, when a port is set."""
    settings = run.settings
    if not settings.ops.metrics_port:
        return None
    sources = [processor_source(run.processor), dispatcher_source(run.dispatcher, run.truck_writer)]
    registry = Registry({"Service": "demo", "Stream": settings.aws.stream_name}, sources)
    metrics = await PrometheusServer(registry, settings.ops.metrics_port).start()
    console.print(f"[b]metrics[/b] at http://127.0.0.1:{metrics.port}/metrics")
    return metrics


def trading_day_start_ms(start_ms: int) -> int:
    """The latest Wednesday, Thursday or Friday at or before `start_ms`: the two days of history
    before it are weekdays like it, so a store's own history speaks for the demo's day (a Monday
    after a weekend of history would be a kind of day the stores have not traded yet)."""
    day = start_ms // DAY_MS
    while (day + 3) % 7 not in (2, 3, 4):  # 1970-01-01 was a Thursday; Monday is 0
        day -= 1
    return day * DAY_MS + start_ms % DAY_MS


@dataclass(frozen=True)
class DemoIncident:
    """The till outage the demo injects: a store's sales stop for a while."""

    store_id: str
    start_ms: int
    end_ms: int


def demo_incident(options: DemoOptions, start_ms: int) -> DemoIncident | None:
    """The first store's tills go down 5 minutes of store time in, for 45 minutes: the detector's
    15-minute window after it closes shows it (about 15 s into a demo at the default speed)."""
    if not options.incident or options.history_days < 2:
        return None  # a detector judges a store from its second day: without history, nothing to see
    return DemoIncident("store-001", start_ms + 5 * MINUTE_MS, start_ms + 50 * MINUTE_MS)


def load_history(
    options: DemoOptions, settings: Settings, start_ms: int, ledger: Ledger, console: Console
) -> ShardCore | None:
    """`history_days` of the same stores' trade before the demo starts, applied straight to a core
    (the processor's shards start from their stores' part of it), so the detector is live from the
    first minute. Its events go into the ledger too (the stock they leave is the stock the demo
    starts from); its alerts and requests are the past and are not sent."""
    if options.history_days <= 0:
        return None
    began = time.monotonic()
    past = ZonedSimulator(
        options.seed,
        options.stores,
        options.products,
        start_ms - options.history_days * DAY_MS,
        baskets_per_hour=options.baskets_per_hour,
        shelf_scale=shelf_scale(options),
        price_changes_per_day=0.0,
    )
    # The live shards start from this core (split by store), so it is configured as theirs are: with
    # the archive on (the history's own effects are dropped, it was never on the stream).
    core = ShardCore(core_config(settings))
    # Trucks serve the history too: a request the core makes is delivered a trip later (the live
    # demo's trip, in store time), onto the simulated shelf and into the core and the ledger. Without
    # them the shelves of the first day ran dry and the second day taught the detector a store that
    # sells nothing.
    trip_ms = max(MINUTE_MS, int(settings.trucks.travel_s * options.speed * 1000))
    pending: list[tuple[int, RestockRequest]] = []
    events = 0
    step = 5 * MINUTE_MS
    for until in range(past.start_ms + step, start_ms + step, step):
        until = min(until, start_ms - 1)
        last = until == start_ms - 1  # what the past asked for arrives in the past
        for event in renamed(past.events_until(until), "h"):
            core.apply(event.data)
            ledger.record(event.data)
            events += 1
        pending += [(parse_ts(r.ts) + trip_ms, r) for r in core.drain().requests]
        due = [(min(when, until), r) for when, r in pending if when <= until or last]
        pending = [(when, r) for when, r in pending if when > until and not last]
        for when, request in due:
            truck = f"h-truck-{request.alert_id}"
            delivery = restock_event(request, request.requested_quantity, truck, "h-truck", when)
            data = encode(delivery)
            core.apply(data)
            ledger.record(data)
            past.deliver(request.store_id, request.product_id, delivery.quantity, when)
        # a delivery may leave its product still short (or bring a trip's joiners): ask again
        pending += [(parse_ts(r.ts) + trip_ms, r) for r in core.drain().requests]
    core.settle_requests()  # what the past asked for was delivered in the past
    console.print(
        f"[b]history[/b] {options.history_days} days of trade ({events:,} events) loaded in "
        f"{time.monotonic() - began:.1f} s: the detector judges every store from the first minute"
    )
    return core


def anomaly_summary(run: DemoRun, incident: DemoIncident | None) -> dict[str, Any]:
    """The anomaly alerts of the demo, and whether the injected incident was caught."""
    stats = run.processor.stats()
    caught = [
        a
        for a in run.processor.recent_anomalies
        if incident is not None and a.store_id == incident.store_id and a.ts >= format_ts(incident.start_ms)
    ]
    out: dict[str, Any] = {"anomaly_alerts": stats.alerts.get("anomaly", 0)}
    if incident is not None:
        out["incident"] = {
            "store_id": incident.store_id,
            "kind": "sales_collapse",
            "start": format_ts(incident.start_ms),
            "end": format_ts(incident.end_ms),
            "caught": bool(caught),
            "caught_at": caught[0].ts if caught else None,
        }
    return out


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
    shelves = run.simulator.figures()
    dstats = run.dispatcher.stats
    head.add_row(
        f"[b]on-shelf availability[/b] {shelves.availability:.2%}",
        f"[b]lost sales[/b] {shelves.lost_units:,} units ({shelves.lost_value:,.2f})",
        f"[b]trips[/b] {dstats.trips}",
        f"[b]units per trip[/b] {dstats.units_per_trip:.1f}",
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
        said = detail.pop("reason", None) if alert_kind(alert) == "anomaly_withdrawn" else None
        text = detail.pop("explanation", None) or said or ", ".join(f"{k}={v}" for k, v in detail.items())
        alerts.add_row(alert.ts[11:16], alert_kind(alert), alert.store_id, text)
    trucks = Table("truck", "trip", "stops", "products", "units", expand=True, title="recent trips")
    for truck_id, trip in list(run.dispatcher.recent_trips)[-5:][::-1]:
        trucks.add_row(
            truck_id,
            trip.trip_id,
            " -> ".join(stop.store_id for stop in trip.stops),
            str(len(trip.requests)),
            str(trip.units),
        )
    counts = ", ".join(f"{k} {v}" for k, v in sorted(run.processor.alert_counts.items())) or "none yet"
    return Group(Panel(head, title="shelfstream demo", subtitle=f"alerts: {counts}"), alerts, trucks)


def summary(run: DemoRun, seconds: float, caught_up: bool) -> dict[str, Any]:
    stats = run.processor.stats()
    final = run.processor.inventory()
    expected = run.ledger.stock()
    mismatches = _mismatches(final, expected)
    shelves = run.simulator.figures()
    dstats = run.dispatcher.stats
    return {
        "events_produced": run.produced(),
        "events_processed": run.processor.records_read(),
        "events_rejected": stats.events_rejected,
        "duplicates_ignored": stats.duplicates_ignored,
        "restock_requests": stats.alerts.get("restock_request", 0),
        "deliveries": run.dispatcher.stats.deliveries,
        "on_shelf_availability": round(shelves.availability, 4),
        "lost_sales_units": shelves.lost_units,
        "lost_sales_value": round(shelves.lost_value, 2),
        "stockouts_on_shelf": shelves.stockouts,
        "trips": dstats.trips,
        "units_per_trip": round(dstats.units_per_trip, 1),
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


async def with_dashboard(
    args: argparse.Namespace, options: DemoOptions, wiring: Wiring, resources: Resources, console: Console
) -> dict[str, Any]:
    """The demo, with its live dashboard unless --no-dashboard (bound in the loop that serves it)."""
    settings = wiring.settings
    if args.no_dashboard:
        return await run_demo(options, settings, resources, console)
    dashboard = DemoDashboard(settings, args.port)
    console.print(
        f"[b]live dashboard[/b] at {dashboard.url} (while the demo runs); sign in with the HQ token "
        f"[b]{dashboard.token}[/b]",
        soft_wrap=True,
    )
    return await run_demo(options, settings, resources, console, dashboard)


def mirror_archive_copy(wiring: Wiring, resources: Resources, console: Console) -> None:
    """Keep a copy of the archive before the embedded AWS goes away, so `shelfstream query` and
    `shelfstream report` work afterwards with no AWS at all."""
    from foundation.errors import ShelfstreamError
    from history.archive import mirror_archive

    settings = wiring.settings
    try:
        s3 = wiring.client("s3")
        stats = mirror_archive(s3, resources.bucket, settings, settings.history.archive_mirror)
    except (OSError, ShelfstreamError) as exc:
        console.print(f"[yellow]archive not mirrored to {settings.history.archive_mirror}: {exc}[/yellow]")
        return
    console.print(
        f"archive ({stats.objects:,} objects) mirrored to {settings.history.archive_mirror}: try "
        '`shelfstream query "SELECT type, count(*) FROM events GROUP BY 1"` '
        "or `shelfstream report --week current`"
    )


def archive_to_tables(wiring: Wiring, resources: Resources, console: Console) -> None:
    """Turn what the demo's Firehose delivered into the Iceberg history tables on disk (what Firehose's
    Iceberg destination does on AWS; history/tables.py), and compute the daily KPIs, so `query`,
    `kpis`, DuckDB and Polars read tables after the embedded AWS is gone. A demo's tables replace the
    previous demo's (as its mirror does)."""
    import shutil
    from pathlib import Path

    from foundation.errors import ShelfstreamError
    from history.kpi_tables import compute_days
    from history.tables import Tables, ingest, s3_lister, s3_reader

    settings = wiring.settings
    try:
        for path in (Path(settings.history.tables_catalog), Path(settings.history.tables_warehouse)):
            if path.is_file():
                path.unlink()
            elif path.is_dir():
                shutil.rmtree(path)
        tables = Tables(settings)
        s3 = wiring.client("s3")
        stats = ingest(tables, s3_lister(s3, resources.bucket), s3_reader(s3, resources.bucket))
        run = compute_days(tables)
    except (OSError, ShelfstreamError, ValueError) as exc:
        console.print(f"[yellow]history tables not written: {exc}[/yellow]")
        return
    rows = ", ".join(f"{name} {n:,}" for name, n in stats.rows.items())
    console.print(
        f"history tables (Iceberg) in {settings.history.tables_warehouse}: {rows} rows; "
        f"KPIs {run.product_rows:,} "
        'rows: try `shelfstream kpis --per-store` or `shelfstream query "SELECT * FROM kpis_store_daily"`'
    )
