"""Warm start: how long `warm-start` takes for 30 days of 100 stores, and whether the week after it
detects and restocks as a processor that ran the whole time does.

A fleet (benchmarks/local_scenario.py: time zones, closed days, labelled incidents) trades for
`--days` + 7 days. The first `--days` are the archive (JSON-lines objects, as the processor archives
them); the stream holds the archive's last day again (its retention) and then the week after.

- warm start: `history.warm_start.plan` and `run` over that archive, `--workers` processes, with
  the checkpoints saved to the embedded S3 (the command's whole path but the S3 download), timed;
  each shard's checkpoint is then loaded and reads the stream.
- continuous: each shard's core read every event from the first day.
- cold start: each shard's core started empty on the stream (a new deployment without warm start).

Each shard's core reads its stores' events in arrival order, as a shard does. Over the week after,
the anomaly alerts are scored as benchmarks/detect_fleet.py scores them (incidents and false alerts
that start in the week) and the restock requests and stock-outs raised are compared.

    python -m benchmarks.warm_start [--stores 100] [--days 30] [--shards 4] [--workers 2] [--docs FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.detect_fleet import Alert, Tally, score
from benchmarks.local_scenario import FleetConfig, write
from benchmarks.scenario import read_labels
from foundation.aws.lineage import ShardInfo
from foundation.contract import Anomaly, AnomalyWithdrawn, RestockRequest, alert_kind, parse_ts
from foundation.timeunits import DAY_MS
from processors.backtest import route_of
from processors.core import CoreConfig, ShardCore

WEEK_DAYS = 7
SEED = 1001
TOP = 2**128 - 1


def even_shards(n: int) -> list[ShardInfo]:
    """n shards splitting the hash-key space evenly, as CreateStream makes them."""
    step = (TOP + 1) // n
    return [
        ShardInfo(f"shardId-{i:012d}", (), i * step, TOP if i == n - 1 else (i + 1) * step - 1)
        for i in range(n)
    ]


@dataclass
class Run:
    """What one way of starting raised over the week after."""

    anomalies: list[Alert] = field(default_factory=list)
    withdrawn: set[str] = field(default_factory=set)
    requests: dict[str, RestockRequest] = field(default_factory=dict)
    kinds: Counter[str] = field(default_factory=Counter)

    def take(self, core: ShardCore, cut_ms: int) -> None:
        effects = core.drain()
        for request in effects.requests:
            if parse_ts(request.ts) >= cut_ms:
                self.requests[request.alert_id] = request
                self.kinds["restock_request"] += 1
        for alert in effects.alerts:
            if isinstance(alert, AnomalyWithdrawn):
                self.withdrawn.add(alert.withdrawn_alert_id)
            elif isinstance(alert, Anomaly):
                start = parse_ts(alert.window_start)
                if start >= cut_ms:
                    end = parse_ts(alert.window_end)
                    self.anomalies.append(Alert(alert.store_id, start, end, 0, alert.alert_id))
            if parse_ts(alert.ts) >= cut_ms:
                self.kinds[alert_kind(alert)] += 1

    def standing(self) -> list[Alert]:
        return [a for a in self.anomalies if a.alert_id not in self.withdrawn]


def feed(core: ShardCore, lines: Iterable[bytes], run: Run, cut_ms: int) -> None:
    for n, raw in enumerate(lines):
        core.apply(raw)
        if n % 5000 == 4999:
            run.take(core, cut_ms)
    core.finish()
    run.take(core, cut_ms)


def split_lines(path: Path, shards: list[ShardInfo]) -> dict[str, list[bytes]]:
    by_shard: dict[str, list[bytes]] = {s.shard_id: [] for s in shards}
    owner: dict[str, str] = {}
    for line in path.read_bytes().splitlines():
        store, _ = route_of(line)
        shard = owner.get(store)
        if shard is None:
            shard = owner[store] = next(s.shard_id for s in shards if s.owns(store))
        by_shard[shard].append(line)
    return by_shard


def ts_of(line: bytes) -> int:
    _, ts = route_of(line)
    return parse_ts(ts) if ts else 0


def write_archive(lines: list[bytes], root: Path, per_object: int = 1000) -> None:
    """The archive as the embedded Firehose leaves it: JSON lines, about a thousand an object."""
    folder = root / "events" / "2026" / "01" / "01" / "00"
    folder.mkdir(parents=True, exist_ok=True)
    for n, i in enumerate(range(0, len(lines), per_object)):
        (folder / f"archive-{n:06d}").write_bytes(
            b"".join(line + b"\n" for line in lines[i : i + per_object])
        )


async def load_cores(settings: Any, shard_ids: list[str]) -> dict[str, ShardCore]:
    from foundation.aws.clients import AioClients
    from processors.checkpoints import S3Checkpoints

    cores = {}
    async with AioClients(settings, "s3") as clients:
        store = S3Checkpoints(clients["s3"], settings.aws.bucket, settings)
        for shard_id in shard_ids:
            checkpoint = await store.load(shard_id)
            assert checkpoint is not None
            assert checkpoint.sequence_number is None
            cores[shard_id] = checkpoint.core
    return cores


def warm_start_timed(
    archive: Path, shards: list[ShardInfo], workers: int, work: Path
) -> tuple[dict[str, Any], dict[str, ShardCore]]:
    """`warm-start` over the archive with the embedded AWS (its stream has these shards)."""
    import boto3

    from config import Settings
    from foundation.aws.clients import point_at
    from foundation.aws.embedded import EmbeddedAws
    from history import warm_start

    with EmbeddedAws(port=0, kinesis_limits=False) as aws:
        point_at(aws.endpoint)
        settings = Settings(
            aws={"bucket": "bench-warm", "stream_name": "bench-warm"},
            history={"tables_catalog": str(work / "no-tables.db"), "archive_mirror": str(work / "no-mirror")},
        )
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=settings.aws.bucket)
        kinesis = boto3.client("kinesis")
        kinesis.create_stream(StreamName=settings.aws.stream_name, ShardCount=len(shards))
        listed = warm_start.open_shards(kinesis, settings.aws.stream_name)
        assert [(s.start_hash, s.end_hash) for s in listed] == [(s.start_hash, s.end_hash) for s in shards]
        began = time.perf_counter()
        plan = warm_start.plan(settings, kinesis, s3, archive_dir=str(archive), source="archive")
        result = warm_start.run(settings, plan, workers=workers, archive_dir=str(archive), source="archive")
        seconds = time.perf_counter() - began
        cores = asyncio.run(load_cores(settings, [s.shard_id for s in listed]))
    summary = result.summary()
    summary["seconds_with_plan"] = round(seconds, 1)
    by_position = {s.shard_id: c for s, c in zip(shards, (cores[x.shard_id] for x in listed), strict=True)}
    return summary, by_position


def week_tally(run: Run, incidents: list[Any], meta: dict[str, Any], cut_ms: int, lateness_ms: int) -> Tally:
    """detect_fleet's scoring over the incidents and alerts that start in the week after the cut,
    with the week's open store-days."""
    week = [i for i in incidents if i.start_ms >= cut_ms]
    result = score(run.standing(), week, meta, lateness_ms)
    tally = result.total
    tally.store_days = sum(
        1
        for s in meta["stores"].values()
        for start, is_open in zip(s["day_starts"], s["open"], strict=False)
        if is_open and start >= cut_ms
    )
    return tally


def measure(stores: int, days: int, shards_n: int, workers: int, work: Path) -> dict[str, Any]:
    began = time.perf_counter()
    fleet_dir = work / f"fleet-{SEED}-{stores}x{days + WEEK_DAYS}"
    if not (fleet_dir / "meta.json").exists():
        write(FleetConfig(seed=SEED, stores=stores, days=days + WEEK_DAYS, late_store_day=0), fleet_dir)
    generated_s = time.perf_counter() - began
    meta = json.loads((fleet_dir / "meta.json").read_text())
    incidents = read_labels(fleet_dir / "labels.jsonl")
    shards = even_shards(shards_n)
    lines = split_lines(fleet_dir / "events.jsonl", shards)
    first = min(min(s["day_starts"]) for s in meta["stores"].values())
    cut_ms = first + days * DAY_MS  # the week after starts here
    archived = [line for ls in lines.values() for line in ls if ts_of(line) < cut_ms]
    archive = work / "archive"
    if not archive.exists():
        write_archive(archived, archive)
    config = CoreConfig()

    warm_summary, warm_cores = warm_start_timed(archive, shards, workers, work)
    runs = {"continuous": Run(), "warm start": Run(), "cold start": Run()}
    for shard in shards:
        mine = lines[shard.shard_id]
        # The stream: what it retains of the archive (its last day) and the week after, in arrival order.
        stream = [line for line in mine if ts_of(line) >= cut_ms - DAY_MS]
        feed(ShardCore(config), mine, runs["continuous"], cut_ms)
        feed(warm_cores[shard.shard_id], stream, runs["warm start"], cut_ms)
        feed(ShardCore(config), stream, runs["cold start"], cut_ms)
    tallies = {
        name: week_tally(run, incidents, meta, cut_ms, config.allowed_lateness_ms)
        for name, run in runs.items()
    }
    continuous_ids = set(runs["continuous"].requests)
    return {
        "stores": stores,
        "days": days,
        "shards": shards_n,
        "workers": workers,
        "events": sum(len(ls) for ls in lines.values()),
        "archived_events": len(archived),
        "generated_s": round(generated_s, 1),
        "warm_start": warm_summary,
        "week": {
            name: {
                "f1": round(t.f1, 3),
                "precision": round(t.precision, 3),
                "recall": round(t.recall, 3),
                "detected": t.detected,
                "incidents": t.incidents,
                "false_incidents": t.false_incidents,
                "false_per_100_store_days": round(t.false_per_100_store_days, 2),
                "store_days": t.store_days,
                "restock_requests": len(run.requests),
                "forecast_requests": sum(1 for r in run.requests.values() if r.reason == "forecast"),
                "requests_as_continuous": len(set(run.requests) & continuous_ids),
                "out_of_stock": run.kinds["out_of_stock"],
            }
            for (name, run), t in zip(runs.items(), tallies.values(), strict=True)
        },
        "seconds": round(time.perf_counter() - began, 1),
    }


def table(r: dict[str, Any]) -> list[str]:
    w = r["warm_start"]
    per_shard = ", ".join(f"{s['events']:,} events in {s['seconds']:.0f} s" for s in w["per_shard"])
    lines = [
        f"## Warm start: {r['days']} days of {r['stores']} stores, and the week after (`make bench-warm`)",
        "",
        f"{r['stores']} stores, {r['days']} days archived ({r['archived_events']:,} events, "
        f"benchmarks/local_scenario.py seed {SEED}), {r['shards']} shards, `--workers {r['workers']}`; "
        "then the week after (the stream: the archive's last day again, then 7 days).",
        "",
        f"**Warm-start time: {w['seconds']:.0f} s** for {w['events']:,} events of {w['stores']} stores "
        f"({w['events'] / w['seconds']:,.0f} events/s; {w['seconds_with_plan']:.0f} s with the plan: listing "
        f"the shards and counting the archive's stores), {w.get('cpu_seconds', 0):.0f} CPU seconds in the "
        f"workers ({w['events'] / max(w.get('cpu_seconds', 0), 1e-9):,.0f} events per CPU second); per "
        f"shard: {per_shard}; checkpoints {w['checkpoint_bytes'] / 1e6:.1f} MB in all. Not sent again: "
        f"{w['effects_not_sent']}.",
        "",
        "The week after, by how the processor started:",
        "",
        "| start | F1 | precision | recall | detected | false alerts / 100 store-days | restock requests "
        "| of them by forecast | the same as continuous | stock-out alerts |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, k in r["week"].items():
        lines.append(
            f"| {name} | {k['f1']:.3f} | {k['precision']:.3f} | {k['recall']:.3f} | "
            f"{k['detected']}/{k['incidents']} | {k['false_per_100_store_days']:.2f} | "
            f"{k['restock_requests']:,} | {k['forecast_requests']:,} | {k['requests_as_continuous']:,} | "
            f"{k['out_of_stock']:,} |"
        )
    lines += [
        "",
        "Continuous: each shard's core read every event from the first day; warm start: the checkpoints "
        "`warm-start` wrote, then the stream; cold start: empty cores on the stream. The week's incidents "
        'and false alerts are scored as in benchmarks/detect_fleet.py; "the same as continuous" counts '
        "restock requests with the same id (the same store, product and cause).",
        "",
        f"Written by `python -m benchmarks.warm_start` on {os.cpu_count()} cores ({platform.machine()}), "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d', time.gmtime())}, a machine shared "
        f"with other work; {r['events']:,} events in all, {r['seconds']:.0f} s for the whole benchmark.",
    ]
    return lines


def write_docs(path: Path, lines: list[str]) -> None:
    """Replace the warm-start section of the benchmarks page (added at the end if missing)."""
    begin, end = "<!-- bench-warm:begin -->", "<!-- bench-warm:end -->"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    head, _, rest = text.partition(begin)
    _, _, tail = rest.partition(end)
    if not rest:
        head, tail = text.rstrip("\n") + "\n\n", "\n"
    path.write_text(head + begin + "\n" + "\n".join(lines) + "\n" + end + tail, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stores", type=int, default=100)
    parser.add_argument("--days", type=int, default=30, help="days archived before the week after")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work", type=Path, help="keep the fleet and the archive here")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    parser.add_argument("--docs", type=Path, help="write the results into this Markdown file")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="shelfstream-warm-"))
    work.mkdir(parents=True, exist_ok=True)
    result = measure(args.stores, args.days, args.shards, args.workers, work)
    lines = table(result)
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")
    if args.docs:
        write_docs(args.docs, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
