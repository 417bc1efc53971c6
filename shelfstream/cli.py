"""The `shelfstream` command line (docs/contract.md section 3).

Exit status: 0 success, 1 runtime failure, 2 bad usage or bad input; errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from typing import Any, Final, NoReturn, TypeAlias

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

from foundation.errors import ShelfstreamError, UsageError
from shelfstream import __version__

Handler = Callable[[argparse.Namespace], int]
_Commands: TypeAlias = "argparse._SubParsersAction[_Parser]"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
    return value


def _zones(text: str) -> tuple[str, ...]:
    import zoneinfo

    zones = tuple(z.strip() for z in text.split(",") if z.strip())
    if not zones:
        raise argparse.ArgumentTypeError("name at least one time zone")
    for zone in zones:
        try:
            zoneinfo.ZoneInfo(zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise argparse.ArgumentTypeError(f"{zone!r} is not an IANA time zone") from None
    return zones


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command; each command's arguments are added by its own function below."""
    parser = _Parser(prog="shelfstream", description="Real-time retail inventory and sales analytics on AWS.")
    parser.add_argument("--version", action="version", version=f"shelfstream {__version__}")
    parser.add_argument(
        "--log-level", default=None, help="level of the JSON logs on stderr (default INFO; demo: WARNING)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for add in _COMMANDS:  # in the order `--help` lists them
        add(sub)
    return parser


def _demo_command(sub: _Commands) -> None:
    p = sub.add_parser("demo", help="the whole loop in one process on the embedded local AWS")
    p.add_argument("--duration", type=_positive_float, default=60.0, help="seconds of simulated trading")
    p.add_argument("--stores", type=_positive_int, default=6, help="number of simulated stores")
    p.add_argument("--products", type=_positive_int, default=12, help="products per store")
    p.add_argument("--speed", type=_positive_float, default=120.0, help="store minutes per wall minute")
    p.add_argument("--rate", type=_positive_float, default=None, help="cap on events per second")
    p.add_argument("--seed", type=int, default=7, help="random seed of the simulated stores")
    p.add_argument("--summary", metavar="FILE", help="also write the summary as JSON to FILE")
    p.add_argument("--no-live", action="store_true", help="no live view, just the summary")
    p.add_argument(
        "--port", type=_port, default=None, help="port of the live dashboard (default 8080, else a free one)"
    )
    p.add_argument("--no-dashboard", action="store_true", help="do not serve the live dashboard")
    p.add_argument(
        "--history-days",
        type=int,
        default=2,
        help="days of simulated trade loaded before the demo starts, so anomaly detection is live (0: none)",
    )
    p.add_argument("--no-incident", action="store_true", help="do not take a store's tills down mid-demo")
    p.set_defaults(handler=_lazy("run", "cmd_demo"))


def _local_aws_command(sub: _Commands) -> None:
    p = sub.add_parser("local-aws", help="serve the embedded local AWS on 127.0.0.1 until stopped")
    p.add_argument("--port", type=_port, default=4566, help="port (0 picks a free one)")
    p.set_defaults(handler=_lazy("setup", "cmd_local_aws"))


def _provision_command(sub: _Commands) -> None:
    p = sub.add_parser("provision", help="create every stream, bucket, topic and queue (safe to repeat)")
    p.set_defaults(handler=_lazy("setup", "cmd_provision"))


def _simulate_command(sub: _Commands) -> None:
    p = sub.add_parser("simulate", help="simulated stores produce events to Kinesis")
    p.add_argument("--stores", type=_positive_int, default=10)
    p.add_argument("--products", type=_positive_int, default=20)
    p.add_argument("--rate", type=_positive_float, default=None, help="cap on events per second")
    p.add_argument("--duration", type=_positive_float, default=60.0, help="seconds to run")
    p.add_argument("--speed", type=_positive_float, default=1.0, help="store time per wall time")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--baskets-per-hour",
        type=_positive_float,
        default=600.0,  # producers.zoned.LIVE_BASKETS_PER_HOUR (not imported: --help stays fast)
        help="a store's baskets an hour at its usual rate (a supermarket's tills; shelves sized to it)",
    )
    p.add_argument(
        "--zones",
        type=_zones,
        default=None,
        metavar="ZONE,...",
        help="the stores' IANA time zones, dealt out in turn (default: zones where it is trading time now)",
    )
    p.set_defaults(handler=_lazy("produce", "cmd_simulate"))


def _replay_command(sub: _Commands) -> None:
    p = sub.add_parser(
        "replay", help="produce the events of a JSON-lines file to Kinesis, or kept rejected records again"
    )
    p.add_argument(
        "file",
        metavar="FILE",
        nargs="?",
        help="JSON-lines file, or - for stdin; with --rejected, a file of kept records (default: S3)",
    )
    p.add_argument(
        "--rejected",
        action="store_true",
        help="send kept rejected and dead-lettered records again, byte-exact (after a fix); "
        "from S3 those sent are moved under replayed/",
    )
    p.add_argument(
        "--prefix",
        default="",
        help="with --rejected from S3: only kept records under this path (e.g. stream/, dead-letter/stream/)",
    )
    p.set_defaults(handler=_lazy("produce", "cmd_replay"))


def _process_command(sub: _Commands) -> None:
    p = sub.add_parser("process", help="the stream processor; runs until SIGTERM/SIGINT")
    p.set_defaults(handler=_lazy("run", "cmd_process"))


def _dispatch_command(sub: _Commands) -> None:
    p = sub.add_parser("dispatch", help="the truck dispatch worker; runs until SIGTERM/SIGINT")
    p.set_defaults(handler=_lazy("run", "cmd_dispatch"))


def _inventory_command(sub: _Commands) -> None:
    p = sub.add_parser("inventory", help="on-hand stock as the processor last checkpointed it")
    p.add_argument("--store", help="only this store")
    p.add_argument("--json", action="store_true", help="print JSON (the shape of backtest's inventory.json)")
    p.set_defaults(handler=_lazy("read", "cmd_inventory"))


def _alerts_command(sub: _Commands) -> None:
    p = sub.add_parser("alerts", help="alerts received on the alerts topic")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--wait", type=float, default=0.0, metavar="S", help="wait up to S seconds for alerts")
    p.set_defaults(handler=_lazy("read", "cmd_alerts"))


def _backtest_command(sub: _Commands) -> None:
    p = sub.add_parser("backtest", help="the processor's logic over a JSON-lines file, no AWS at all")
    p.add_argument("file", metavar="FILE", help="JSON-lines file, or - for stdin")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for the results")
    p.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        metavar="N",
        help="split the file by store over N processes (same results as one; default 1)",
    )
    p.add_argument(
        "--detector",
        choices=("seasonal", "naive", "threshold", "hst", "off"),
        help="anomaly detector (default: SHELFSTREAM_DETECTOR__KIND, seasonal); off keeps the windows only",
    )
    p.add_argument(
        "--fleet-prior",
        metavar="FILE",
        help="the rest of the fleet's shape of a day (an earlier run's DIR/fleet.json): what a live "
        "shard reads from the other shards; default none, the input's own stores alone",
    )
    p.set_defaults(handler=_lazy("read", "cmd_backtest"))


def _serve_command(sub: _Commands) -> None:
    p = sub.add_parser("serve", help="the HTTP API and live dashboard (see docs/api.md)")
    p.add_argument("--port", type=_port, default=8080, help="port (default 8080; 0 picks a free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--tokens", metavar="FILE", help="JSON tokens file (default: one new HQ token, printed)")
    p.set_defaults(handler=_lazy("run", "cmd_serve"))


def _kcl_processor_command(sub: _Commands) -> None:
    p = sub.add_parser("kcl-processor", help="KCL record processor for one shard, run by the MultiLangDaemon")
    p.set_defaults(handler=_lazy("run", "cmd_kcl_processor"))


def _kcl_worker_command(sub: _Commands) -> None:
    p = sub.add_parser(
        "kcl-worker", help="one KCL worker: the Java MultiLangDaemon running kcl-processor per shard"
    )
    p.add_argument("--local", action="store_true", help="start kinesis-local and the embedded AWS for it")
    p.add_argument(
        "--application", default="shelfstream-processor", help="KCL application (lease table) name"
    )
    p.add_argument("--jar-dir", metavar="DIR", help="the KCL jars (default .cache/kcl-jars, `make kcl-jars`)")
    p.add_argument("--workdir", metavar="DIR", help="for the rendered properties (default: a new temp dir)")
    p.set_defaults(handler=_lazy("run", "cmd_kcl_worker"))


def _query_command(sub: _Commands) -> None:
    p = sub.add_parser(
        "query",
        help="SQL over the history (tables events, windows, alerts, rejected, kpis_daily, kpis_store_daily)",
    )
    p.add_argument("sql", metavar="SQL", help='one SELECT, e.g. "SELECT count(*) FROM events"')
    p.add_argument("--format", choices=("table", "csv", "json"), default="table", help="default: table")
    p.add_argument("--archive", metavar="DIR", help="read a local copy of the archive instead of S3")
    p.add_argument(
        "--source",
        choices=("auto", "tables", "archive"),
        default="auto",
        help="tables: the Iceberg history tables; archive: the JSON objects; auto (default): tables when "
        "they exist",
    )
    p.add_argument("--store", action="append", metavar="S", help="only this store (repeatable)")
    p.add_argument("--since", metavar="YYYY-MM-DD", help="only rows on or after this UTC date")
    p.add_argument("--until", metavar="YYYY-MM-DD", help="only rows on or before this UTC date")
    p.set_defaults(handler=_lazy("reports", "cmd_query"))


def _report_command(sub: _Commands) -> None:
    p = sub.add_parser("report", help="weekly per-store report: HTML + CSV to S3 reports/, SNS notice")
    p.add_argument("--week", default="last", help="YYYY-Www (ISO week), last (default) or current")
    p.add_argument(
        "--out",
        metavar="DIR",
        help="also write the report files (HTML, CSV, JSON) to DIR/<week>/; without it they go to S3 "
        "reports/, or with a local archive to .shelfstream/reports/<week>/",
    )
    p.add_argument("--archive", metavar="DIR", help="read a local copy of the archive instead of S3")
    p.add_argument("--store", action="append", metavar="S", help="only this store (repeatable)")
    p.add_argument(
        "--source", choices=("auto", "tables", "archive"), default="auto", help="as for query (default: auto)"
    )
    p.set_defaults(handler=_lazy("reports", "cmd_report"))


def _kpis_command(sub: _Commands) -> None:
    p = sub.add_parser(
        "kpis", help="daily inventory KPIs per store and product (or per store), from the tables"
    )
    p.add_argument("--store", action="append", metavar="S", help="only this store (repeatable)")
    p.add_argument("--from", dest="since", metavar="YYYY-MM-DD", help="first local day")
    p.add_argument("--to", dest="until", metavar="YYYY-MM-DD", help="last local day")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table", help="default: table")
    p.add_argument("--per-store", action="store_true", help="the store x day roll-up")
    p.add_argument(
        "--refresh", action="store_true", help="recompute from --from (or the start) to the end first"
    )
    p.set_defaults(handler=_lazy("history_cmds", "cmd_kpis"))


def _history_command(sub: _Commands) -> None:
    p = sub.add_parser("history", help="the Iceberg history tables: ingest, convert, kpis, maintain, stats")
    p.add_argument(
        "action",
        choices=("ingest", "convert", "kpis", "maintain", "stats", "daily"),
        help="ingest: delivered JSON objects in S3 (or DIR) -> table appends, once each; convert DIR: an "
        "archive of JSON/Parquet objects written before -> tables; kpis: (re)compute days; maintain: "
        "retention, compaction, snapshot expiry, file sweep; stats: files per partition, mean file size; "
        "daily: ingest, the last days' KPIs, maintain (the scheduled job)",
    )
    p.add_argument(
        "dir", metavar="DIR", nargs="?", help="a directory with the bucket's layout (ingest, convert)"
    )
    p.add_argument("--from", dest="since", metavar="YYYY-MM-DD", help="kpis: first local day (default: all)")
    p.add_argument("--to", dest="until", metavar="YYYY-MM-DD", help="kpis: last local day (default: the end)")
    p.add_argument(
        "--retention-days", type=_positive_int, default=None, help="maintain: default the setting (30)"
    )
    p.add_argument("--today", metavar="YYYY-MM-DD", help="maintain: the day retention counts back from")
    p.add_argument(
        "--min-age-minutes", type=float, default=60.0, help="maintain: snapshots and stray files younger stay"
    )
    p.add_argument(
        "--landing", action="store_true", help="maintain: also delete delivered objects past retention"
    )
    p.add_argument(
        "--table",
        action="append",
        choices=("events", "windows", "alerts", "rejected"),
        help="ingest: only these tables (on AWS, Firehose fills events, windows and alerts itself)",
    )
    p.add_argument("--partitions", action="store_true", help="stats: every partition too")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=_lazy("history_cmds", "cmd_history"))


def _warm_start_command(sub: _Commands) -> None:
    p = sub.add_parser(
        "warm-start",
        help="build shards' checkpoints from the archived history, so a new deployment starts with "
        "what was learned",
    )
    p.add_argument(
        "--days",
        type=_positive_int,
        default=None,
        metavar="N",
        help="days of trade, counted back from the newest archived event (default: as far back as the "
        "core keeps a store, 35 days; the detectors need 22; stock is right from a store's last stock take)",
    )
    p.add_argument("--shard", metavar="ID", help="build this open shard only (one ECS task per shard)")
    p.add_argument(
        "--workers", type=_positive_int, default=1, metavar="N", help="shards built at once, one process each"
    )
    p.add_argument("--force", action="store_true", help="replace checkpoints the shards already have")
    p.add_argument("--archive", metavar="DIR", help="read a local copy of the archive instead of S3")
    p.add_argument(
        "--source", choices=("auto", "tables", "archive"), default="auto", help="as for query (default: auto)"
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON, no progress bars")
    p.set_defaults(handler=_lazy("warm", "cmd_warm_start"))


def _ingest_command(sub: _Commands) -> None:
    p = sub.add_parser("ingest", help="a CSV stock list or JSON-lines inventory file into the stream")
    p.add_argument("file", metavar="FILE", nargs="?", help="a local file or s3://bucket/key")
    p.add_argument("--format", choices=("auto", "csv", "jsonl"), default="auto", help="default: by name")
    p.add_argument("--watch", action="store_true", help="ingest every upload to incoming/ until stopped")
    p.set_defaults(handler=_lazy("produce", "cmd_ingest"))


def _loadtest_command(sub: _Commands) -> None:
    p = sub.add_parser("loadtest", help="producer load test: throughput, latency, zero lost records")
    p.add_argument("--stores", type=_positive_int, default=10, help="number of store partition keys")
    p.add_argument("--rate", type=_positive_float, default=None, help="records/s (default: saturate)")
    p.add_argument("--duration", type=_positive_float, default=10.0, help="seconds of putting")
    p.add_argument("--shards", type=_positive_int, default=None, help="shards of a stream it creates")
    p.add_argument("--stream", default=None, help="stream (default: the app's; --embedded: a new one)")
    p.add_argument("--embedded", action="store_true", help="start an embedded local AWS and test against it")
    p.add_argument("--verify", action="store_true", help="read the stream back even for a large run")
    p.add_argument("--shard-records", type=_positive_int, default=1000, help="records/s per shard limit")
    p.add_argument("--shard-bytes", type=_positive_int, default=1024 * 1024, help="bytes/s per shard limit")
    p.add_argument(
        "--no-limiter",
        action="store_true",
        help="no client-side per-shard limit: Kinesis throttles, the writer backs off and retries",
    )
    p.add_argument("--json", metavar="FILE", help="also write the result as JSON to FILE")
    p.set_defaults(handler=_lazy("produce", "cmd_loadtest"))


_COMMANDS: Final[tuple[Callable[[_Commands], None], ...]] = (
    _demo_command,
    _local_aws_command,
    _provision_command,
    _simulate_command,
    _replay_command,
    _process_command,
    _dispatch_command,
    _inventory_command,
    _alerts_command,
    _backtest_command,
    _serve_command,
    _kcl_processor_command,
    _kcl_worker_command,
    _query_command,
    _report_command,
    _kpis_command,
    _history_command,
    _warm_start_command,
    _ingest_command,
    _loadtest_command,
)


def _lazy(group: str, name: str) -> Handler:
    """Import a command's module (``shelfstream.commands.<group>``) only when it runs, so `--help`
    stays fast."""

    def run(args: argparse.Namespace) -> int:
        import importlib

        handler: Handler = getattr(importlib.import_module(f"shelfstream.commands.{group}"), name)
        return handler(args)

    return run


def _aws_message(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        op = getattr(exc, "operation_name", "call")
        return f"AWS {op} failed: {err.get('Code', 'Unknown')}: {err.get('Message', '')}".rstrip(": ")
    if isinstance(exc, NoCredentialsError):
        return "no AWS credentials found: configure a profile or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
    if isinstance(exc, NoRegionError):
        return "no AWS region configured: set AWS_REGION"
    return f"AWS error: {exc}"


def main(argv: Sequence[str] | None = None) -> int:
    from foundation import logs

    parser = build_parser()
    args = parser.parse_args(argv)
    logs.configure(args.log_level or ("WARNING" if args.command == "demo" else "INFO"))
    try:
        code: Any = args.handler(args)
    except UsageError as exc:
        print(f"shelfstream: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ShelfstreamError as exc:
        print(f"shelfstream: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except (ClientError, BotoCoreError) as exc:
        print(f"shelfstream: error: {_aws_message(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("shelfstream: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    return int(code or 0)


def run_async(coro: Any) -> Any:
    return asyncio.run(coro)


if __name__ == "__main__":
    sys.exit(main())
