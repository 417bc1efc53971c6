"""The long-running services: `process`, `dispatch`, `kcl-processor`, `serve` and `demo`."""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import sys
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

from foundation.console import make_console
from shelfstream.bootstrap import bootstrap

log = logging.getLogger(__name__)


def cmd_process(args: argparse.Namespace) -> int:
    from shelfstream.services import run_processor

    asyncio.run(run_processor(bootstrap()))
    return 0


def cmd_dispatch(args: argparse.Namespace) -> int:
    from shelfstream.services import run_dispatcher

    asyncio.run(run_dispatcher(bootstrap()))
    return 0


def cmd_kcl_processor(args: argparse.Namespace) -> int:
    """`shelfstream kcl-processor`: started by the MultiLangDaemon (executableName), never by hand."""
    from processors.kcl_processor import (
        SERVICES,
        AwsShardStore,
        KclShardProcessor,
        claim_stdout,
        leave_signals_to_the_daemon,
        serve_daemon,
    )

    protocol = claim_stdout()
    leave_signals_to_the_daemon()
    if isinstance(sys.stdin, io.TextIOWrapper):
        sys.stdin.reconfigure(encoding="utf-8")
    from processors.checkpoints import return_large_buffers_to_the_system

    wiring = bootstrap()
    return_large_buffers_to_the_system()
    store = AwsShardStore(wiring.settings, wiring.resources, lambda: wiring.aio(*SERVICES))
    processor = KclShardProcessor(wiring.settings, store, clocks=store)
    try:
        serve_daemon(processor, protocol)
    finally:
        processor.close()
    log.info("record processor finished", extra={"shard_id": processor.shard_id})
    return 0


def cmd_kcl_worker(args: argparse.Namespace) -> int:
    """`shelfstream kcl-worker`: one KCL MultiLangDaemon (what one ECS task runs) on this machine."""
    import tempfile

    from shelfstream.kcl_local import JAR_DIR, run_worker

    wiring = bootstrap(aws=not args.local)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="shelfstream-kcl-"))
    return run_worker(
        wiring.settings,
        local=args.local,
        application=args.application,
        workdir=workdir,
        announce=lambda text: print(text, flush=True),
        jar_dir=Path(args.jar_dir) if args.jar_dir else JAR_DIR,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from shelfstream.api.auth import TokenStore
    from shelfstream.api.feeds import ensure_dashboard_queue
    from shelfstream.api.server import bind, run_standalone, url_of

    if args.tokens:
        tokens, generated = TokenStore.from_file(args.tokens), None
    else:
        tokens, generated = TokenStore.with_new_hq_token()
    wiring = bootstrap()
    resources = wiring.resources()
    queue_url = ensure_dashboard_queue(wiring.settings, resources.topic_arn)
    sock = bind(args.host, args.port)
    try:
        print(f"shelfstream dashboard and API at {url_of(sock)}", flush=True)
        if generated is not None:
            print(f"HQ token (this run only; use --tokens FILE for lasting ones): {generated}", flush=True)
        asyncio.run(run_standalone(wiring, tokens, sock, queue_url))
    finally:
        sock.close()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from foundation.aws.clients import point_at
    from foundation.aws.embedded import EmbeddedAws
    from foundation.aws.provision import provision
    from shelfstream.demo import DemoOptions, archive_to_tables, mirror_archive_copy, with_dashboard

    options = DemoOptions(
        duration_s=args.duration,
        stores=args.stores,
        products=args.products,
        speed=args.speed,
        rate=args.rate,
        seed=args.seed,
        live=not args.no_live,
        history_days=max(0, args.history_days),
        incident=not args.no_incident,
    )
    console = Console()  # the live view: sized to the terminal (its panel spans the width)
    limits = bootstrap(aws=False).settings.aws.embedded_kinesis_limits
    with EmbeddedAws(kinesis_limits=limits) as aws:
        point_at(aws.endpoint)
        # Store time runs `speed` times faster than the trucks' wall-clock travel: the forecast starts
        # after half an hour of store time and plans deliveries half an hour apart.
        wiring = bootstrap(
            overrides={
                "trucks": {"count": 8, "travel_s": 1.5},
                "checkpoints": {"every_s": 2.0},
                "restock": {
                    "min_history_s": 1800.0,
                    "lead_time_prior_s": 3 * 1.5 * args.speed,
                    "cycle_s": 1800.0,
                },
                # One simulator feeds every shard in step: a silent store's shard may follow the others
                # closely (a real fleet's shards drift apart more).
                "processor": {
                    "idle_shard_lag_s": 300,
                    "idle_shard_patience_s": 2.0,  # 4 minutes of store time at the default 120x
                },
            }
        )
        console.print(f"[b]embedded AWS[/b] at {aws.endpoint}; provisioning ...")
        resources = provision(wiring.settings)
        result = asyncio.run(with_dashboard(args, options, wiring, resources, console))
        mirror_archive_copy(wiring, resources, console)
        archive_to_tables(wiring, resources, console)
    table = Table("figure", "value", title="demo summary")
    for key, value in result.items():
        if key != "inventory_mismatches" or value:
            table.add_row(key, orjson.dumps(value).decode() if isinstance(value, dict | list) else str(value))
    make_console().print(table)  # whole cells into a pipe too
    if args.summary:
        Path(args.summary).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    return 0 if result["inventory_reconciled"] else 1
