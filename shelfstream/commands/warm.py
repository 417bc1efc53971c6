"""`shelfstream warm-start`: shards' checkpoints built from the archived history (history/warm_start)."""

from __future__ import annotations

import argparse
import sys

import orjson
from rich.table import Table

from foundation.console import make_console
from shelfstream.bootstrap import bootstrap
from shelfstream.commands.common import out


def cmd_warm_start(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from history import warm_start

    wiring = bootstrap()
    settings = wiring.settings
    err = make_console(stderr=True, highlight=False, soft_wrap=True)
    warm = warm_start.plan(
        settings,
        wiring.client("kinesis"),
        wiring.client("s3"),
        days=args.days,
        shard=args.shard,
        force=args.force,
        archive_dir=args.archive,
        source=args.source,
    )
    if warm.note:
        err.print(f"[yellow]{warm.note}[/yellow]")
    err.print(
        f"warm start of {len(warm.jobs)} shard(s) of {settings.aws.stream_name} from {warm.source}: "
        f"{warm.days} days, {warm.span.events:,} events of {len(warm.span.store_events)} stores"
    )
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=args.json,
    ) as bar:
        tasks = {
            job.shard_id: bar.add_task(f"{job.shard_id} ({len(job.stores)} stores)", total=job.events)
            for job in warm.jobs
        }
        result = warm_start.run(
            settings,
            warm,
            workers=args.workers,
            archive_dir=args.archive,
            source=args.source,
            progress=lambda shard_id, n: bar.advance(tasks[shard_id], n),
        )
    summary = result.summary()
    if args.json:
        sys.stdout.write(orjson.dumps(summary).decode() + "\n")
        return 0
    table = Table("shard", "stores", "events", "checkpoint", "seconds", title="warm start")
    for shard in summary["per_shard"]:
        table.add_row(
            shard["shard_id"],
            str(shard["stores"]),
            f"{shard['events']:,}",
            f"{shard['checkpoint_bytes']:,} B",
            f"{shard['seconds']:.1f}",
        )
    console = out()
    console.print(table)
    console.print(
        f"{summary['stores']} stores, {summary['events']:,} events, {summary['days']} days "
        f"({summary['since']} .. {summary['until']}) in {summary['seconds']:.1f} s; "
        f"not sent again: {summary['effects_not_sent'] or 'nothing'}"
    )
    return 0
