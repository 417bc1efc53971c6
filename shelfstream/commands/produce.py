"""What puts events into the stream: `simulate`, `replay`, `ingest` (and `--watch`), `loadtest`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from rich.table import Table

from foundation.console import make_console
from foundation.errors import UsageError
from producers.ingest import IngestReport
from producers.kinesis_writer import KinesisWriter
from shelfstream.bootstrap import Wiring, bootstrap
from shelfstream.commands.common import dead_letter_path, out, require_input

if TYPE_CHECKING:
    from producers.replay import SimulationStats
    from producers.zoned import ZonedSimulator

log = logging.getLogger(__name__)


def cmd_replay(args: argparse.Namespace) -> int:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from producers.kinesis_writer import KinesisWriter
    from producers.replay import ReplayStats, replay_file

    if args.rejected:
        return _replay_rejected(args)
    if args.file is None:
        raise UsageError("replay needs FILE (or --rejected to send kept rejected records again)")
    require_input(args.file)
    wiring = bootstrap()
    settings = wiring.settings
    wiring.resources()
    console = make_console(stderr=True)

    async def go() -> tuple[ReplayStats, int]:
        async with wiring.aio("kinesis") as clients:
            # One call in flight keeps the file's order across stores too. Kinesis keeps order only
            # per key, and a replay far faster than the stores traded would otherwise let one store's
            # lane run hours of event time ahead of another's in the same shard, past any lateness.
            in_order = settings.replaced(producers={"max_batches_in_flight": 1})
            writer = KinesisWriter(
                clients["kinesis"], settings.aws.stream_name, in_order, dead_letter_path=dead_letter_path()
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
    out().print(
        f"replayed {stats.sent:,} records ({stats.no_store_id} without a store id, "
        f"{stats.blank} blank lines, {failed} dead-lettered) to {settings.aws.stream_name}"
    )
    return 1 if failed else 0


def _replay_rejected(args: argparse.Namespace) -> int:
    """Kept rejected/dead-lettered records to the stream again: from a file, or every object under
    ``<rejected_prefix><prefix>`` in S3 (each moved under ``replayed/`` once all its records are in)."""
    from producers.replay import KeptReplayStats, replay_kept

    wiring = bootstrap()
    settings = wiring.settings
    resources = wiring.resources()
    stats = KeptReplayStats()
    moved: list[str] = []
    local: list[bytes] | None = None
    if args.file is not None:
        require_input(args.file)
        local = Path(args.file).read_bytes().splitlines()

    async def send(lines: list[bytes], writer: KinesisWriter) -> bool:
        before = writer.stats.failed
        await replay_kept(lines, writer, stats)
        return writer.stats.failed == before

    async def go() -> int:
        async with wiring.aio("kinesis") as clients:
            writer = KinesisWriter(
                clients["kinesis"], settings.aws.stream_name, settings, dead_letter_path=dead_letter_path()
            )
            try:
                if local is not None:
                    await send(local, writer)
                    return writer.stats.failed
                s3 = wiring.client("s3")
                root = settings.prefixes.rejected
                done = f"{root}replayed/"
                pages = s3.get_paginator("list_objects_v2").paginate(
                    Bucket=resources.bucket, Prefix=f"{root}{args.prefix}"
                )
                for key in [o["Key"] for page in pages for o in page.get("Contents", [])]:
                    if key.startswith(done):
                        continue
                    body = s3.get_object(Bucket=resources.bucket, Key=key)["Body"].read()
                    if await send(body.splitlines(), writer):
                        target = done + key[len(root) :]
                        s3.copy_object(
                            Bucket=resources.bucket,
                            Key=target,
                            CopySource={"Bucket": resources.bucket, "Key": key},
                        )
                        s3.delete_object(Bucket=resources.bucket, Key=key)
                        moved.append(key)
            finally:
                await writer.close()
            return writer.stats.failed

    failed = asyncio.run(go())
    out().print(
        f"sent {stats.sent:,} of {stats.records:,} kept records again to {settings.aws.stream_name}"
        f" ({failed} dead-lettered, {stats.unreadable} lines that are not kept records"
        + (f"; {len(moved)} objects moved under {settings.prefixes.rejected}replayed/)" if moved else ")")
    )
    return 1 if failed else 0


def cmd_simulate(args: argparse.Namespace) -> int:
    import time

    from producers.zoned import live_simulator

    wiring = bootstrap()
    wiring.resources()
    # Live, a store in its night sells nothing: unless told, the stores are where it is trading time now.
    simulator = live_simulator(
        args.seed,
        args.stores,
        args.products,
        int(time.time() * 1000),
        baskets_per_hour=args.baskets_per_hour,
        zones=args.zones,
    )
    stats, failed = asyncio.run(_simulate(wiring, simulator, args))
    sales = simulator.stats.by_type["sale"]
    used = sorted({simulator.zone_of(store) for store in simulator.store_ids})
    out().print(
        f"simulated {args.stores} stores ({', '.join(used)}): {stats.records_put:,} records put"
        f" ({sales:,} sales), {failed} dead-lettered"
    )
    return 1 if failed else 0


async def _simulate(
    wiring: Wiring, simulator: ZonedSimulator, args: argparse.Namespace
) -> tuple[SimulationStats, int]:
    """Run the simulated stores into the stream with a progress bar, refilling their shelves from the
    trucks' deliveries read back from the stream; (what was put, records dead-lettered)."""
    import time

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from producers.deliveries import watch_deliveries
    from producers.kinesis_writer import KinesisWriter
    from producers.replay import run_simulation

    settings = wiring.settings
    console = make_console(stderr=True)
    async with wiring.aio("kinesis") as clients:
        writer = KinesisWriter(
            clients["kinesis"], settings.aws.stream_name, settings, dead_letter_path=dead_letter_path()
        )
        # Shelves are finite: the trucks' deliveries (read back from the stream) refill them.
        stop_watching = asyncio.Event()
        watcher = asyncio.create_task(
            watch_deliveries(clients["kinesis"], settings.aws.stream_name, simulator, stop_watching)
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
        stop_watching.set()
        await watcher
        await writer.close()
        return stats, writer.stats.failed


def print_reports(reports: Sequence[IngestReport]) -> None:
    console = make_console(highlight=False, soft_wrap=True)
    table = Table("file", "type", "processed", "succeeded", "rejected", "errored", title="ingest")
    for r in reports:
        table.add_row(
            r.name,
            r.file_type,
            f"{r.processed:,}",
            f"{r.succeeded:,}",
            f"[yellow]{r.rejected:,}[/yellow]" if r.rejected else "0",
            f"[red]{r.errored:,}[/red]" if r.errored else "0",
        )
    console.print(table)
    for r in reports:
        if r.rejected_key:
            console.print(f"{r.source}: rejected rows kept at s3://{r.bucket}/{r.rejected_key}")


def cmd_ingest(args: argparse.Namespace) -> int:
    from producers.ingest import IngestTarget, UnsentRecords, check_local, ingest_source

    if args.watch:
        if args.file:
            raise UsageError("give either FILE or --watch, not both")
        return cmd_watch(args)
    if not args.file:
        raise UsageError("give a FILE (a local file or s3://bucket/key), or --watch")
    settings = bootstrap(aws=False).settings
    if not args.file.startswith("s3://"):
        check_local(args.file, args.format, settings)  # a file-level refusal needs no AWS to be told
    wiring = bootstrap()
    resources = wiring.resources()

    async def go() -> IngestReport:
        dead = UnsentRecords()
        async with wiring.aio("kinesis", "s3") as clients:
            writer = KinesisWriter(
                clients["kinesis"], settings.aws.stream_name, settings, on_dead_letter=dead
            )
            target = IngestTarget(writer, dead, clients["s3"], resources.bucket, settings, args.format)
            try:
                return await ingest_source(args.file, target)
            finally:
                await writer.close()

    report = asyncio.run(go())
    print_reports([report])
    return 1 if report.errored else 0


def cmd_watch(args: argparse.Namespace) -> int:
    from foundation.lifecycle import stop_on_signals
    from producers.ingest import IngestTarget, UnsentRecords
    from producers.ingest_watch import IngestWatcher, WatchStats

    wiring = bootstrap()
    settings = wiring.settings
    resources = wiring.resources()

    async def go() -> WatchStats:
        stop = stop_on_signals()
        dead = UnsentRecords()
        async with wiring.aio("kinesis", "s3", "sqs") as clients:
            writer = KinesisWriter(
                clients["kinesis"], settings.aws.stream_name, settings, on_dead_letter=dead
            )
            target = IngestTarget(writer, dead, clients["s3"], resources.bucket, settings)
            watcher = IngestWatcher(
                settings,
                resources.incoming_queue_url,
                clients["sqs"],
                target,
                on_report=lambda report: print_reports([report]),
            )
            log.info(
                "watching for uploads",
                extra={"prefix": settings.prefixes.incoming, "bucket": resources.bucket},
            )
            try:
                await watcher.run(stop)
            finally:
                await writer.close()
            return watcher.stats

    stats = asyncio.run(go())
    log.info("watch stopped", extra=vars(stats))
    return 0


def cmd_loadtest(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from foundation.aws.clients import point_at
    from foundation.aws.embedded import EmbeddedAws
    from producers.loadtest import describe, ensure_stream, run_loadtest

    if args.shard_bytes < 1024 * 1024:
        raise UsageError("loadtest: --shard-bytes must be at least 1 MiB (1048576): one record may be 1 MiB")
    aws: EmbeddedAws | None = None
    if args.embedded:
        aws = EmbeddedAws(kinesis_limits=bootstrap(aws=False).settings.aws.embedded_kinesis_limits).start()
        point_at(aws.endpoint)
    wiring = bootstrap(aws=not args.embedded)
    settings = wiring.settings
    stream = args.stream or (
        f"shelfstream-loadtest-{uuid.uuid4().hex[:8]}" if args.embedded else settings.aws.stream_name
    )
    console = make_console(stderr=True)

    async def go(bar: Callable[[float, int], None]) -> Any:
        async with wiring.aio("kinesis") as clients:
            kinesis = clients["kinesis"]
            shards = args.shards or (settings.aws.shard_count if args.embedded else None)
            await ensure_stream(kinesis, stream, shards)
            return await run_loadtest(
                kinesis,
                settings,
                stream,
                stores=args.stores,
                rate=args.rate,
                duration_s=args.duration,
                shard_records_per_s=args.shard_records,
                shard_bytes_per_s=args.shard_bytes,
                verify=True if args.verify else None,
                progress=bar,
                limiter=not args.no_limiter,
            )

    try:
        with Progress(
            TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn(), console=console
        ) as progress:
            task = progress.add_task("loadtest: 0 records", total=args.duration)

            def bar(elapsed: float, sent: int) -> None:
                progress.update(
                    task, completed=min(elapsed, args.duration), description=f"loadtest: {sent:,} records"
                )

            result = asyncio.run(go(bar))
    finally:
        if aws is not None:
            aws.stop()
    for line in describe(result):
        out().print(line)
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(asdict(result), option=orjson.OPT_INDENT_2) + b"\n")
    return 1 if result.failed or result.lost else 0
