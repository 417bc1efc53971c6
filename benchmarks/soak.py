"""Soak: one shard at its full write rate (1,000 events/s) for a month of event time, fed as fast as it goes.

What runs (and what does not), exactly:
- The dedup memory of one `ShardCore` (default settings: 24 h horizon, 15-minute buckets) takes every
  id of 30 days at 1,000/s: 2.59 billion ids. They are 96-bit keys drawn uniformly at random (as the
  BLAKE2b digests of real (store, event id) pairs are), handed over per 15-minute bucket, sorted, through
  `Dedup.add_many`: the same buckets, runs, sealing and expiry as event by event, without 2.59 billion
  Python calls (the per-event cost of the whole core is measured separately, below).
- The rest of the core runs for real on a thin stream through `ShardCore.apply`: 40 stores open at a
  time, 2 closing for good and 2 opening every day, sales, restocks and stock takes, windows and
  detection, with a 7-day store retention, so closed stores must leave the state.
- Exactness is checked all along, event by event: after every bucket, 20 earlier ids at random
  distances up to the horizon (must be repeats), ids just past the horizon (documented: they count
  again) and 20 new ids (must be new: a false duplicate would be a lost real event).
- Checkpoints go to the embedded S3 (moto, in its own process, so this process's RSS is the shard's
  alone). Every `--s3-every` days: a catch-up save (everything since the last one), then `--samples`
  checkpoints 5 s of events apart, each writing what changed (the write time target is on these), then a
  restore in a fresh process (head + every run it names), whose time and equality are checked.
Reported every simulated day: RSS, ids held, bytes per id, checkpoint size; on S3 days the write and
restore figures. A PNG of the curves goes to docs/, the figures into docs/benchmarks.md.

    python -m benchmarks.soak [--days 30] [--rate 1000] [--s3-every 3] [--docs docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import subprocess
import sys
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from config import Settings, core_config
from foundation.aws.clients import AioClients
from foundation.contract import format_ts
from foundation.timeunits import DAY_MS, DAY_S
from processors.checkpoints import S3Checkpoints, return_large_buffers_to_the_system
from processors.core import ShardCore
from processors.core.dedup import Dedup

T0 = 1_785_542_400_000  # 2026-08-01T00:00:00Z
SHARD = "shardId-000000000000"
MARK = "bench-soak"


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Day:
    day: int
    ids_fed: int
    ids_held: int
    rss_mb: float
    dedup_mb: float
    bytes_per_id: float
    rss_bytes_per_id: float
    checkpoint_mb: float
    stores_held: int
    stores_forgotten: int
    repeats_checked: int
    repeats_missed: int
    past_horizon_checked: int
    past_horizon_counted_again: int
    new_checked: int
    false_duplicates: int
    feed_s: float
    catch_up_s: float | None = None
    catch_up_mb: float | None = None
    write_s: list[float] = field(default_factory=list)
    write_kb: list[float] = field(default_factory=list)
    restore_s: float | None = None
    restore_rss_mb: float | None = None
    restore_equal: bool | None = None


class Stores:
    """A thin real stream: 40 stores open at a time; every day 2 close for good and 2 open."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.open = [f"store-{i:04d}" for i in range(40)]
        self.next = 40
        self.closed: list[str] = []
        self.n = 0

    def churn(self) -> None:
        for _ in range(2):
            self.closed.append(self.open.pop(self.rng.randrange(len(self.open))))
            self.open.append(f"store-{self.next:04d}")
            self.next += 1

    def events(self, ts_ms: int, span_ms: int) -> list[bytes]:
        out = []
        for store in self.open:
            self.n += 1
            t = ts_ms + self.rng.randrange(span_ms)
            product = f"p{self.rng.randrange(20)}"
            kind = "sale" if self.rng.random() < 0.9 else "restock"
            body: dict[str, Any] = {
                "type": kind,
                "event_id": f"thin-{self.n}",
                "store_id": store,
                "ts": format_ts(t),
                "product_id": product,
                "quantity": self.rng.randrange(1, 4) if kind == "sale" else 30,
            }
            if kind == "sale":
                body["unit_price"] = 2.5
            out.append(orjson.dumps(body))
        out.sort(key=lambda raw: orjson.loads(raw)["ts"])
        return out


def keys(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    hi = np.sort(rng.integers(0, 2**64 - 1, size=n, dtype=np.uint64, endpoint=True))
    lo = rng.integers(0, 2**32 - 1, size=n, dtype=np.uint32, endpoint=True)
    return hi, lo


def digest(core: ShardCore) -> str:
    return orjson.dumps(
        {"inventory": core.inventory(), "requests": sorted(core.open_requests().values())},
        option=orjson.OPT_SORT_KEYS,
    ).decode()


async def restore_probe(settings: Settings) -> None:
    """In a fresh process: load the shard's checkpoint, print time, RSS and what was restored."""
    began = time.perf_counter()
    async with AioClients(settings, "s3") as clients:
        loaded = await S3Checkpoints(clients["s3"], settings.aws.bucket, settings).load(SHARD)
    took = time.perf_counter() - began
    assert loaded is not None
    dedup = loaded.core.dedup_memory()
    print(
        json.dumps(
            {
                "seconds": took,
                "rss_mb": rss_mb(),
                "ids": len(dedup),
                "runs": len(loaded.runs),
                "digest": digest(loaded.core),
                "manifest": repr(dedup.manifest()),
            }
        )
    )


def start_embedded_aws() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "shelfstream.cli", "local-aws", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"http://127.0.0.1:{port}"
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("the embedded AWS did not start")


def core_speed(n: int = 100_000) -> float:
    """Events/s (CPU) of the whole core, event by event, at one shard's rate of event time."""
    settings = Settings()
    core = ShardCore(core_config(settings, archive=True))
    rng = random.Random(5)
    records = [
        orjson.dumps(
            {
                "type": "sale",
                "event_id": f"e{i}",
                "store_id": f"store-{rng.randrange(50):03d}",
                "ts": format_ts(T0 + i),  # 1,000 events/s of event time
                "product_id": f"p{rng.randrange(200)}",
                "quantity": 1,
                "unit_price": 2.0,
            }
        )
        for i in range(n)
    ]
    began = time.process_time()
    for i, raw in enumerate(records):
        core.apply(raw, i)
        if i % 5_000 == 0:
            core.drain()
    return n / (time.process_time() - began)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q)) if values else 0.0


async def soak(args: argparse.Namespace) -> tuple[list[Day], dict[str, Any]]:
    console = Console(stderr=True)
    proc, endpoint = start_embedded_aws()
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    os.environ.update(env)
    uid = uuid.uuid4().hex[:8]
    settings = Settings(
        aws={"stream_name": f"soak-{uid}", "bucket": f"soak-{uid}"},
        processor={"store_retention_s": 7 * DAY_S},
    )
    try:
        import boto3

        boto3.client("s3").create_bucket(Bucket=settings.aws.bucket)
        config = core_config(settings, archive=False)
        core = ShardCore(config)
        dedup: Dedup = core.dedup_memory()
        bucket_ms = config.dedup_bucket_ms
        horizon = config.dedup_horizon_ms
        per_bucket = args.rate * bucket_ms // 1000
        buckets_per_day = DAY_MS // bucket_ms
        rng = np.random.default_rng(args.seed)
        prng = random.Random(args.seed)
        stores = Stores(prng)
        # Samples of fed keys, with their event time, for the repeat probes.
        samples: deque[tuple[int, np.ndarray, np.ndarray]] = deque()
        days: list[Day] = []
        fed = 0
        async with AioClients(settings, "s3") as clients:
            store = S3Checkpoints(clients["s3"], settings.aws.bucket, settings)
            seq = 0
            with Progress(
                TextColumn("soak {task.fields[day]}"),
                BarColumn(),
                TextColumn("{task.completed:,.0f}/{task.total:,.0f} ids"),
                TimeElapsedColumn(),
                console=console,
            ) as bar:
                task = bar.add_task("soak", total=args.days * buckets_per_day * per_bucket, day="day 1")
                for day in range(args.days):
                    began = time.perf_counter()
                    counts = dict.fromkeys(("rep", "miss", "past", "again", "new", "false"), 0)
                    if day:
                        stores.churn()
                    for b in range(buckets_per_day):
                        ts_b = T0 + (day * buckets_per_day + b) * bucket_ms
                        for raw in stores.events(ts_b, bucket_ms):
                            seq += 1
                            core.apply(raw, seq)
                        core.drain()
                        hi, lo = keys(rng, per_bucket)
                        dedup.add_many(hi, lo, ts_b)
                        fed += per_bucket
                        pick = rng.integers(0, per_bucket, size=20)
                        samples.append((ts_b, hi[pick].copy(), lo[pick].copy()))
                        while (
                            samples and samples[0][0] + bucket_ms < dedup.clock_ms - horizon - 4 * bucket_ms
                        ):
                            samples.popleft()
                        clock = dedup.clock_ms
                        for _ in range(20):
                            ts, shi, slo = samples[prng.randrange(len(samples))]
                            k = prng.randrange(len(shi))
                            if clock - ts <= horizon:  # inside H: must be a repeat
                                counts["rep"] += 1
                                counts["miss"] += dedup.first_time_key(int(shi[k]), int(slo[k]), ts)
                            elif ts + bucket_ms <= clock - horizon:  # past H: counts again
                                counts["past"] += 1
                                counts["again"] += dedup.first_time_key(int(shi[k]), int(slo[k]), ts)
                        nhi, nlo = keys(rng, 20)
                        for h, w in zip(nhi.tolist(), nlo.tolist(), strict=True):
                            counts["new"] += 1
                            counts["false"] += not dedup.first_time_key(h, w, ts_b)
                        bar.update(task, advance=per_bucket, day=f"day {day + 1}")
                    feed_s = time.perf_counter() - began
                    parts = core.checkpoint_parts()
                    size = (
                        len(parts.head)
                        + sum(16 + r.nbytes for r in parts.runs.values())
                        + sum(len(b) for b in parts.pieces.values())
                    )
                    ids = len(dedup)
                    row = Day(
                        day=day + 1,
                        ids_fed=fed,
                        ids_held=ids,
                        rss_mb=rss_mb(),
                        dedup_mb=dedup.nbytes / 2**20,
                        bytes_per_id=dedup.nbytes / max(ids, 1),
                        rss_bytes_per_id=rss_mb() * 2**20 / max(ids, 1),
                        checkpoint_mb=size / 2**20,
                        stores_held=len(core.newest_event_times()),
                        stores_forgotten=core.stats.stores_forgotten,
                        repeats_checked=counts["rep"],
                        repeats_missed=counts["miss"],
                        past_horizon_checked=counts["past"],
                        past_horizon_counted_again=counts["again"],
                        new_checked=counts["new"],
                        false_duplicates=counts["false"],
                        feed_s=feed_s,
                    )
                    if day == 0 or (day + 1) % args.s3_every == 0 or day + 1 == args.days:
                        report = await store.save(SHARD, str(seq), core)
                        row.catch_up_s, row.catch_up_mb = report.seconds, report.bytes_written / 2**20
                        for _ in range(args.samples):  # 5 s of events apart: what a live checkpoint writes
                            ts = dedup.clock_ms
                            hi, lo = keys(rng, args.rate * 5)
                            dedup.add_many(hi, lo, ts)
                            fed += args.rate * 5
                            report = await store.save(SHARD, str(seq), core)
                            row.write_s.append(report.seconds)
                            row.write_kb.append(report.bytes_written / 1024)
                        probe = await asyncio.to_thread(
                            subprocess.run,
                            [sys.executable, "-m", "benchmarks.soak", "--restore-probe", settings.aws.bucket],
                            capture_output=True,
                            text=True,
                            check=True,
                            env={**os.environ, **env},
                        )
                        got = json.loads(probe.stdout.strip().splitlines()[-1])
                        row.restore_s, row.restore_rss_mb = got["seconds"], got["rss_mb"]
                        row.restore_equal = (
                            got["ids"] == len(dedup)
                            and got["digest"] == digest(core)
                            and got["manifest"] == repr(dedup.manifest())
                        )
                    days.append(row)
                    print(line(row), file=sys.stderr, flush=True)
        extra = {"core_events_per_s": core_speed(), "endpoint": endpoint}
        return days, extra
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def line(d: Day) -> str:
    text = (
        f"day {d.day:2d}: RSS {d.rss_mb:7.0f} MB, {d.ids_held / 1e6:6.1f} M ids held, "
        f"{d.bytes_per_id:5.2f} B/id (RSS {d.rss_bytes_per_id:5.2f}), checkpoint {d.checkpoint_mb:7.1f} MB, "
        f"stores {d.stores_held}, repeats missed {d.repeats_missed}/{d.repeats_checked}, "
        f"false duplicates {d.false_duplicates}/{d.new_checked}, fed in {d.feed_s:.0f} s"
    )
    if d.restore_s is not None:
        text += (
            f"; write p99 {percentile(d.write_s, 99) * 1000:.0f} ms, restore {d.restore_s:.1f} s"
            f" (equal: {d.restore_equal})"
        )
    return text


def plot(days: list[Day], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [d.day for d in days]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    ax = axes[0][0]
    ax.plot(x, [d.rss_mb for d in days], marker="o", label="RSS")
    ax.plot(x, [d.dedup_mb for d in days], marker=".", label="dedup memory")
    ax.axhline(1536, color="red", linestyle="--", label="1.5 GB target")
    ax.set_title("memory of one shard (MB)")
    ax.legend()
    ax = axes[0][1]
    ax.plot(x, [d.bytes_per_id for d in days], marker="o", label="dedup bytes / id")
    ax.plot(x, [d.rss_bytes_per_id for d in days], marker=".", label="RSS bytes / id")
    ax.set_title("bytes per id held")
    ax.legend()
    ax = axes[1][0]
    ax.plot(x, [d.checkpoint_mb for d in days], marker="o")
    ax.set_title("checkpoint size (MB: head + runs it names)")
    ax = axes[1][1]
    s3 = [d for d in days if d.restore_s is not None]
    ax.plot([d.day for d in s3], [percentile(d.write_s, 99) for d in s3], marker="o", label="write p99 (s)")
    ax.plot([d.day for d in s3], [d.restore_s for d in s3], marker="s", label="restore (s)")
    ax.axhline(1.0, color="orange", linestyle="--", label="write target 1 s")
    ax.axhline(30.0, color="red", linestyle=":", label="restore target 30 s")
    ax.set_title("checkpoint write and restore, embedded S3")
    ax.legend()
    for row in axes:
        for a in row:
            a.set_xlabel("simulated day")
    fig.suptitle("soak: one shard, 1,000 events/s, 30 days of event time")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def write_docs(
    path: Path, days: list[Day], extra: dict[str, Any], args: argparse.Namespace, took: float
) -> list[str]:
    after = [d for d in days if d.day >= 3]  # the horizon (1 day) plus a day of seal/expiry turnover
    rss = [d.rss_mb for d in after] or [d.rss_mb for d in days]
    flat = (max(rss) - min(rss)) / max(min(rss), 1)
    writes = [s for d in days for s in d.write_s]
    kbs = [k for d in days for k in d.write_kb]
    restores = [d.restore_s for d in days if d.restore_s is not None]
    last_restore = next((d for d in reversed(days) if d.restore_s is not None), None)
    last_day = last_restore.day if last_restore else "-"
    last_s = last_restore.restore_s or 99.0 if last_restore else 99.0
    missed = sum(d.repeats_missed for d in days)
    checked = sum(d.repeats_checked for d in days)
    false = sum(d.false_duplicates for d in days)
    new = sum(d.new_checked for d in days)
    past = sum(d.past_horizon_checked for d in days)
    again = sum(d.past_horizon_counted_again for d in days)
    lines = [
        f"<!-- {MARK}:begin -->",
        f"## Soak: one shard at 1,000 events/s for {args.days} days (`make bench-soak`)",
        "",
        f"Machine: {os.cpu_count()} cores ({platform.machine()}), Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Whole run: {took:.0f} s.",
        "",
        f"What ran: {days[-1].ids_fed:,} ids ({args.rate:,}/s of event time for {args.days} days) "
        "into one core's "
        "dedup memory (default settings: 24 h horizon, 15-minute buckets), as random 96-bit keys per bucket "
        "(`Dedup.add_many`, same buckets, runs, sealing and expiry as event by event); the rest of the core "
        f"for real on a thin stream ({days[-1].stores_held} stores held at the end, "
        "2 closing for good a day, "
        "7-day store retention); exactness probed event by event after every bucket; checkpoints to the "
        f"embedded S3 (moto, own process) every {args.s3_every} days: a catch-up save, {args.samples} saves "
        "5 s of events apart (the write figures), and a restore in a fresh process. "
        f"The whole core event by event: {extra['core_events_per_s']:,.0f} events/s of CPU "
        f"({args.rate / extra['core_events_per_s'] * 100:.1f}% of a core at {args.rate:,}/s).",
        "",
        "| day | RSS MB | ids held (M) | dedup B/id | RSS B/id | checkpoint MB | stores held / forgotten | "
        "write p50 / p99 ms (KB) | restore s (RSS MB) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for d in days:
        write = (
            f"{percentile(d.write_s, 50) * 1000:.0f} / {percentile(d.write_s, 99) * 1000:.0f} "
            f"({percentile(d.write_kb, 50):.0f})"
            if d.write_s
            else ""
        )
        restore = "" if d.restore_s is None else f"{d.restore_s:.1f} ({d.restore_rss_mb:.0f})"
        if d.restore_equal is False:
            restore += " NOT EQUAL"
        lines.append(
            f"| {d.day} | {d.rss_mb:,.0f} | {d.ids_held / 1e6:.1f} | {d.bytes_per_id:.2f} | "
            f"{d.rss_bytes_per_id:.2f} | {d.checkpoint_mb:,.1f} | {d.stores_held} / {d.stores_forgotten} | "
            f"{write} | {restore} |"
        )
    met = lambda ok: "met" if ok else "NOT met"  # noqa: E731
    lines += [
        "",
        f"- RSS after the horizon (day 3 on): {min(rss):,.0f}-{max(rss):,.0f} MB, spread {flat * 100:.1f}% "
        f"(target within 10%: {met(flat <= 0.10)}); at most {max(d.rss_mb for d in days):,.0f} MB "
        f"(target <= 1,536 MB: {met(max(d.rss_mb for d in days) <= 1536)}).",
        f"- Checkpoint writes of what changed: {len(writes)} saves, "
        f"p50 {percentile(writes, 50) * 1000:.0f} ms, "
        f"p99 {percentile(writes, 99) * 1000:.0f} ms, max {max(writes, default=0) * 1000:.0f} ms, "
        f"{percentile(kbs, 50):.0f} KB each (p50) (target p99 <= 1 s: {met(percentile(writes, 99) <= 1.0)}). "
        "A catch-up save (every run since the last S3 day) is not one of them: "
        + ", ".join(
            f"day {d.day}: {d.catch_up_mb:,.0f} MB in {d.catch_up_s:.1f} s" for d in days if d.catch_up_s
        )
        + ".",
        f"- Restore in a fresh process: {', '.join(f'{s:.1f}' for s in restores)} s; the month-old shard "
        f"(day {last_day}): {last_s:.1f} s (target <= 30 s: {met(last_s <= 30)}); restored state equal "
        f"every time: {all(d.restore_equal for d in days if d.restore_equal is not None)}; "
        f"{sum(r > 30 for r in restores)} of {len(restores)} restores took longer than 30 s "
        "(the machine is shared: see the write and restore times against the feed times).",
        f"- Exactness: {missed} of {checked:,} repeats inside the horizon missed "
        f"(target 0: {met(missed == 0)}); "
        f"{false} false duplicates among {new:,} new ids; {again} of {past:,} repeats past the horizon "
        "counted again (documented behaviour).",
        "",
        "![soak curves](soak.png)",
        f"<!-- {MARK}:end -->",
    ]
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    begin, end = f"<!-- {MARK}:begin -->", f"<!-- {MARK}:end -->"
    if begin in text:
        head, _, rest = text.partition(begin)
        _, _, tail = rest.partition(end)
        text = head.rstrip("\n") + "\n\n" + "\n".join(lines) + tail
    else:
        text = text.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n"
    path.write_text(text, encoding="utf-8")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--rate", type=int, default=1000, help="events per second of event time")
    parser.add_argument("--s3-every", type=int, default=3, help="checkpoint to S3 and restore every N days")
    parser.add_argument("--samples", type=int, default=20, help="live-sized checkpoints per S3 day")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--docs", type=Path, help="write the figures into this Markdown file")
    parser.add_argument("--plot", type=Path, help="write the curves as a PNG")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    parser.add_argument("--restore-probe", metavar="BUCKET", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    return_large_buffers_to_the_system()  # as the processor does
    if args.restore_probe:
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        name = args.restore_probe
        asyncio.run(restore_probe(Settings(aws={"stream_name": name, "bucket": name})))
        return 0
    began = time.perf_counter()
    days, extra = asyncio.run(soak(args))
    took = time.perf_counter() - began
    if args.json:
        args.json.write_text(
            json.dumps({"days": [asdict(d) for d in days], **extra}, indent=1), encoding="utf-8"
        )
    if args.plot:
        plot(days, args.plot)
    if args.docs:
        for text in write_docs(args.docs, days, extra, args, took):
            print(text)
    failed = any(d.repeats_missed or d.false_duplicates or d.restore_equal is False for d in days)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
