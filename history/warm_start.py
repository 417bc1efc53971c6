"""`shelfstream warm-start`: each open shard's checkpoint built from the archived history.

A new deployment (a new stack, a stream with another shard count) or a lost checkpoint would start
with empty detectors and forecasts, and alert nothing useful for weeks. Here each open shard's core
is built from the last `days` of the archive, through `ShardCore.apply`, exactly as the processor
applies records, and saved as that shard's checkpoint with no sequence number: the processor then
reads the shard from its oldest retained record (TRIM_HORIZON), and the dedup memory the warm start
built from the archive's last day skips what the archive already held (docs/decisions.md, record
on warm starts).

The stores of a shard are those whose partition key (the store id) hashes into the shard's range, as
Kinesis routes them. Each shard's events come from the archive in event-time order (ties: store,
then event id): the archive keeps no stream order, and event time is the order a store's events
were made in. One shard is built per process (`workers`), each reading only its own stores.
"""

from __future__ import annotations

import asyncio
import logging
import math
import multiprocessing as mp
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from config import Settings
from foundation.aws.lineage import ShardInfo
from foundation.contract import alert_kind, format_ts
from foundation.errors import ShelfstreamError, UsageError
from foundation.timeunits import DAY_MS, MINUTE_MS
from processors.core import CoreConfig, ShardCore

log = logging.getLogger(__name__)

BATCH_ROWS: Final = 20_000  # archive rows converted and applied at a time (and a progress step)
# The contract's fields of an event, as the archive's events table has them (history/archive.py).
_TIME_FIELDS: Final = ("ts", "window_start", "window_end")
_FIELDS: Final = (
    "event_id",
    "type",
    "store_id",
    "product_id",
    "quantity",
    "unit_price",
    "count",
    "transaction_id",
    "reason",
    "delivery_id",
    "truck_id",
    "name",
    "category",
    "price",
    "restock_threshold",
    "target_stock",
    "timezone",
    "alert_id",
    "verdict",
    "note",
    "by",
)


def needed_days(config: CoreConfig) -> int:
    """Days of history a shard's detectors and forecasts need to be as a long-running one's.

    The seasonal detector judges a slot of the week by itself once it has seen `full_weeks` of it
    (before, it leans on the store's day profile and the fleet's shape); the forecast wants
    `min_history_ms` of sales and a week of hours of the week (its hour-of-week averages and the
    products' shares, whose half-life is a week). The longest of these, plus one day: the archive's
    newest day is partial, so whole weeks need a day more."""
    det = config.detection
    restock = config.restock
    needs = [
        det.full_weeks * 7 if det.kind != "off" else 0,
        det.warmup_days,
        det.own_days,
        math.ceil(restock.min_history_ms / DAY_MS),
        math.ceil(restock.share_half_life_ms / DAY_MS),
        7,  # the forecast's hour-of-week averages: one of each hour of the week
    ]
    return max(needs) + 1


def default_days(config: CoreConfig) -> int | None:
    """How far back a warm start reads by default: as far as the core remembers a store
    (`store_retention_ms`, 35 days; None: no limit), not only what the detector needs. Stock is a
    running sum: a store's on-hand is right only from its last stock take (`count`) or its first
    event on, and both can be weeks old; the detectors need the last `needed_days` of it."""
    retention = config.store_retention_ms
    return max(math.ceil(retention / DAY_MS), needed_days(config)) if retention > 0 else None


# --- which shards, which stores ------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardJob:
    """One shard to build: its id, its stores and how many archived events they have."""

    shard_id: str
    stores: tuple[str, ...]
    events: int


GAP_SLACK_MS: Final = 5 * MINUTE_MS  # producers' batching and clocks: a shorter gap is not a gap


def stream_gap(kinesis: Any, stream: str, shard_ids: Sequence[str], newest_ms: int) -> str | None:
    """Whether the stream starts after the archive ends: a warm checkpoint has the processor read from
    the stream's oldest record, so records that arrived after the archive's newest event but are no
    longer in the stream are in neither. Said, not guessed away (None: no gap seen). Judged by
    arrival time (a record arrives after its event time), so a late producer can only hide a gap
    smaller than its lateness, never invent one."""
    oldest: int | None = None
    for shard_id in shard_ids:
        iterator = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        for _ in range(5):  # a trimmed stretch can answer empty pages before the first record
            resp = kinesis.get_records(ShardIterator=iterator, Limit=1)
            if resp["Records"]:
                arrived = int(resp["Records"][0]["ApproximateArrivalTimestamp"].timestamp() * 1000)
                oldest = arrived if oldest is None else min(oldest, arrived)
                break
            iterator = resp.get("NextShardIterator")
            if not iterator or not resp.get("MillisBehindLatest"):
                break
    if oldest is None or oldest <= newest_ms + GAP_SLACK_MS:
        return None
    return (
        f"the stream's oldest record arrived at {format_ts(oldest)}, after the archive's newest event "
        f"({format_ts(newest_ms)}): events in between may be in neither, so stock and windows can be "
        "short of them until the next stock take"
    )


def open_shards(kinesis: Any, stream: str) -> list[ShardInfo]:
    """The stream's open shards (a closed one has an ending sequence number: its stores live on in
    its children), from ListShards, every page."""
    shards: list[ShardInfo] = []
    args: dict[str, Any] = {"StreamName": stream}
    while True:
        resp = kinesis.list_shards(**args)
        shards.extend(
            ShardInfo.from_api(s)
            for s in resp["Shards"]
            if not s.get("SequenceNumberRange", {}).get("EndingSequenceNumber")
        )
        token = resp.get("NextToken")
        if not token:
            return shards
        args = {"NextToken": token}


def plan_shards(
    shards: Sequence[ShardInfo], store_events: Mapping[str, int], only: str | None = None
) -> list[ShardJob]:
    """Each open shard with the archived stores its hash-key range owns (every store lands in exactly
    one, as Kinesis routes its records). `only`: that shard alone (one ECS task per shard)."""
    if only is not None and only not in {s.shard_id for s in shards}:
        listed = ", ".join(s.shard_id for s in shards) or "none"
        raise UsageError(f"shard {only} is not an open shard of the stream (open shards: {listed})")
    jobs = []
    for shard in shards:
        if only is not None and shard.shard_id != only:
            continue
        stores = tuple(sorted(s for s in store_events if shard.owns(s)))
        jobs.append(ShardJob(shard.shard_id, stores, sum(store_events[s] for s in stores)))
    return jobs


# --- the archive, as records ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ArchiveSpan:
    """What the archive holds from `since_ms` on: events per store, and the newest event time."""

    since_ms: int
    newest_ms: int
    store_events: dict[str, int]

    @property
    def events(self) -> int:
        return sum(self.store_events.values())


def record_of(row: Mapping[str, Any]) -> bytes:
    """An event's JSON record from its archived row, as `_select` reads it: the contract's fields that
    are set (unknown extra fields do not change what the core does)."""
    return orjson.dumps({name: value for name, value in row.items() if value is not None})


# The rows a warm start applies: the window's, and every `store` and `product` event before it (a
# store's time zone and catalog are said once, when it starts trading; without them its days are UTC's).
_WANTED: Final = "\"ts\" >= ? OR \"type\" IN ('store', 'product')"


def _select() -> str:
    """The contract's fields of the events table, times in the contract's form (formatted by DuckDB,
    a column at a time: in Python it cost more than building the record)."""
    times = [f'strftime("{t}", \'%Y-%m-%dT%H:%M:%S.%gZ\') AS "{t}"' for t in _TIME_FIELDS]
    return ", ".join([*(f'"{f}"' for f in _FIELDS), *times])


class ArchiveReader:
    """The archived events (history/archive.py: the Iceberg tables, S3, or a local copy), read by
    DuckDB: the span to warm from, and one shard's stores' events in event-time order."""

    def __init__(self, settings: Settings, archive_dir: str | None, source: str) -> None:
        from foundation.aws.clients import sync_client
        from history.archive import open_source

        def s3() -> Any:  # opened only when the source is S3
            return sync_client("s3", settings)

        self._source, self.note = open_source(settings, archive_dir, s3, source)

    def describe(self) -> str:
        return str(self._source.describe())

    def span(self, days: int | None) -> ArchiveSpan | None:
        """The last `days` of the archive (counted back from its newest event; None: all of it), and
        before them each store's `store` and `product` events (its time zone and catalog, said once
        when it starts trading); None when the archive is empty."""
        import datetime as dt

        from history.archive import open_archive

        with open_archive(self._source, ["events"]) as archive:
            found = archive.con.execute(
                'SELECT epoch_ms(min("ts")), epoch_ms(max("ts")) FROM events'
            ).fetchone()
            if found is None or found[1] is None:
                return None
            oldest, newest = int(found[0]), int(found[1])
            since = oldest if days is None else max(oldest, newest - days * DAY_MS)
            rows = archive.con.execute(
                f"SELECT store_id, count(*) FROM events WHERE ({_WANTED}) AND store_id IS NOT NULL "
                "GROUP BY store_id",
                [dt.datetime.fromtimestamp(since / 1000, dt.UTC).replace(tzinfo=None)],
            ).fetchall()
        return ArchiveSpan(since, newest, {str(store): int(n) for store, n in rows})

    def events(self, stores: Iterable[str], since_ms: int) -> Iterator[list[bytes]]:
        """The records of these stores from `since_ms` on, in event-time order, a batch at a time."""
        import datetime as dt

        from history.archive import ArchiveFilter, open_archive

        wanted = frozenset(stores)
        if not wanted:
            return
        since = dt.datetime.fromtimestamp(since_ms / 1000, dt.UTC).replace(tzinfo=None)
        keep = ArchiveFilter(stores=wanted)  # the stores' setup events may be older than `since`
        with open_archive(self._source, ["events"], keep) as archive:
            relation = archive.con.sql(
                f'SELECT {_select()} FROM events WHERE {_WANTED} ORDER BY "ts", store_id, event_id',
                params=[since],
            )
            for batch in relation.to_arrow_reader(BATCH_ROWS):
                yield [record_of(row) for row in batch.to_pylist()]


# --- one shard ---------------------------------------------------------------------------------------------


@dataclass
class ShardResult:
    shard_id: str
    stores: int
    events: int  # records applied
    valid: int
    duplicates: int
    # What the history's events would have raised again: counted, never sent (they were, live)
    effects: dict[str, int] = field(default_factory=dict)
    checkpoint_bytes: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # the process's CPU time for the shard: its cost on a machine shared with others


def build_core(
    config: CoreConfig, batches: Iterable[list[bytes]], progress: Callable[[int], None] | None = None
) -> tuple[ShardCore, Counter[str], int]:
    """A core with the records applied in order, as a live shard applies them. Effects are drained
    after each batch and only counted: the history's alerts and requests went out when it happened,
    and a new deployment must not page anyone about last month. Returns the core, the counted
    effects and how many records were applied."""
    core = ShardCore(config)
    counted: Counter[str] = Counter()
    applied = 0
    for batch in batches:
        apply = core.apply
        for raw in batch:
            apply(raw)
        applied += len(batch)
        effects = core.drain()
        counted["restock_request"] += len(effects.requests)
        counted.update(alert_kind(a) for a in effects.alerts)
        if progress is not None:
            progress(len(batch))
    return core, +counted, applied


async def _save(settings: Settings, shard_id: str, core: ShardCore) -> int:
    from foundation.aws.clients import AioClients
    from processors.checkpoints import S3Checkpoints

    async with AioClients(settings, "s3") as clients:
        store = S3Checkpoints(clients["s3"], settings.aws.bucket, settings)
        # No sequence number: the processor reads the shard from TRIM_HORIZON, and the dedup memory
        # built here skips the records the archive already held.
        report = await store.save(shard_id, None, core)
        return report.total_bytes


@dataclass(frozen=True)
class _Task:
    settings: dict[str, Any]
    archive_dir: str | None
    source: str
    job: ShardJob
    since_ms: int


_progress_queue: Any = None


def _init_worker(queue: Any) -> None:
    global _progress_queue
    _progress_queue = queue
    from foundation import logs

    logs.configure("WARNING")


def warm_shard(task: _Task, progress: Callable[[str, int], None] | None = None) -> ShardResult:
    """Build one shard's core from the archive and save it as the shard's checkpoint."""
    from config import core_config

    began = time.perf_counter()
    cpu_began = time.process_time()
    settings = Settings(**task.settings)
    job = task.job
    reader = ArchiveReader(settings, task.archive_dir, task.source)
    report = progress or _queue_progress

    core, counted, applied = build_core(
        core_config(settings),
        reader.events(job.stores, task.since_ms),
        lambda n: report(job.shard_id, n),
    )
    size = asyncio.run(_save(settings, job.shard_id, core))
    stats = core.stats
    result = ShardResult(
        job.shard_id,
        len(job.stores),
        applied,
        stats.events_valid,
        stats.duplicates_ignored,
        dict(sorted(counted.items())),
        size,
        time.perf_counter() - began,
        time.process_time() - cpu_began,
    )
    return result


def _logged(result: ShardResult) -> ShardResult:
    """One structured line per shard built, from the process that drives them (a worker's own lines
    would cut through the progress bars)."""
    log.info(
        "shard warm-started",
        extra={
            "shard_id": result.shard_id,
            "stores": result.stores,
            "events": result.events,
            "duplicates": result.duplicates,
            "checkpoint_bytes": result.checkpoint_bytes,
            "seconds": round(result.seconds, 3),
        },
    )
    return result


def _queue_progress(shard_id: str, n: int) -> None:
    if _progress_queue is not None:
        _progress_queue.put((shard_id, n))


# --- the whole run -----------------------------------------------------------------------------------------


@dataclass
class WarmStartResult:
    source: str
    days: int
    since: str
    until: str
    shards: list[ShardResult]
    seconds: float

    def summary(self) -> dict[str, Any]:
        effects: Counter[str] = Counter()
        for shard in self.shards:
            effects.update(shard.effects)
        return {
            "source": self.source,
            "days": self.days,
            "since": self.since,
            "until": self.until,
            "shards": len(self.shards),
            "stores": sum(s.stores for s in self.shards),
            "events": sum(s.events for s in self.shards),
            "duplicates": sum(s.duplicates for s in self.shards),
            "effects_not_sent": dict(sorted(effects.items())),
            "checkpoint_bytes": sum(s.checkpoint_bytes for s in self.shards),
            "seconds": round(self.seconds, 3),
            "cpu_seconds": round(sum(s.cpu_seconds for s in self.shards), 3),
            "per_shard": [
                {
                    "shard_id": s.shard_id,
                    "stores": s.stores,
                    "events": s.events,
                    "checkpoint_bytes": s.checkpoint_bytes,
                    "seconds": round(s.seconds, 3),
                    "cpu_seconds": round(s.cpu_seconds, 3),
                }
                for s in self.shards
            ],
        }


def existing_checkpoints(s3: Any, settings: Settings, shard_ids: Iterable[str]) -> list[str]:
    """The shards among these that already have a checkpoint head."""
    from botocore.exceptions import ClientError

    prefix = f"{settings.prefixes.checkpoints}{settings.aws.stream_name}/"
    found = []
    for shard_id in shard_ids:
        try:
            s3.head_object(Bucket=settings.aws.bucket, Key=f"{prefix}{shard_id}.ckpt")
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in {"404", "NoSuchKey", "NotFound"}:
                continue
            raise
        found.append(shard_id)
    return found


@dataclass
class WarmStartPlan:
    """What a warm start will do, worked out before any shard is built."""

    days: int  # days of trade it reads (the window's, whole days up)
    span: ArchiveSpan
    jobs: list[ShardJob]
    source: str
    note: str | None


def plan(
    settings: Settings,
    kinesis: Any,
    s3: Any,
    *,
    days: int | None = None,
    shard: str | None = None,
    force: bool = False,
    archive_dir: str | None = None,
    source: str = "auto",
) -> WarmStartPlan:
    """Which shards get which stores' events, or one clear error: no archive, an unknown shard, a
    shard that has a checkpoint already (kept unless `force`)."""
    from botocore.exceptions import ClientError

    from config import core_config

    if days is not None and days < 1:
        raise UsageError("--days must be at least 1")
    config = core_config(settings)
    days = days or default_days(config)
    try:
        shards = open_shards(kinesis, settings.aws.stream_name)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            stream = settings.aws.stream_name
            raise UsageError(
                f"Kinesis stream {stream!r} does not exist: run `shelfstream provision` first"
            ) from None
        raise
    reader = ArchiveReader(settings, archive_dir, source)
    span = reader.span(days)
    if span is None or not span.store_events:
        raise UsageError(
            f"no archived events in {reader.describe()}: nothing to warm-start from "
            "(the processor archives every event it applies: --source archive reads the objects under "
            f"{settings.prefixes.events}, --archive DIR a copy)"
        )
    jobs = plan_shards(shards, span.store_events, shard)
    if not force:
        taken = existing_checkpoints(s3, settings, [j.shard_id for j in jobs])
        if taken:
            raise UsageError(
                f"{len(taken)} shard(s) already have a checkpoint ({', '.join(taken)}): warm-start "
                "replaces a checkpoint only with --force (stop the processor first)"
            )
    covered = math.ceil((span.newest_ms - span.since_ms) / DAY_MS) or 1
    note = reader.note
    gap = stream_gap(kinesis, settings.aws.stream_name, [j.shard_id for j in jobs], span.newest_ms)
    if gap is not None:
        log.warning("warm start: the stream starts after the archive ends", extra={"gap": gap})
        note = f"{note}; {gap}" if note else gap
    if covered < needed_days(config):
        short = (
            f"the archive holds {covered} day(s): the detectors trust a store's slots of the week after "
            f"{needed_days(config)}, and learn the rest live"
        )
        note = f"{note}; {short}" if note else short
    return WarmStartPlan(covered, span, jobs, reader.describe(), note)


def run(
    settings: Settings,
    warm: WarmStartPlan,
    *,
    workers: int = 1,
    archive_dir: str | None = None,
    source: str = "auto",
    progress: Callable[[str, int], None] | None = None,
) -> WarmStartResult:
    """Build and save every planned shard: in this process with one worker, else one process per
    shard, `workers` at a time (each reads only its own stores)."""
    if workers < 1:
        raise UsageError("--workers must be at least 1")
    began = time.perf_counter()
    tasks = [_Task(settings.model_dump(), archive_dir, source, job, warm.span.since_ms) for job in warm.jobs]
    if workers == 1 or len(tasks) <= 1:
        results = [_logged(warm_shard(task, progress)) for task in tasks]
    else:
        results = _in_processes(tasks, workers, progress)
    results.sort(key=lambda r: r.shard_id)
    done = WarmStartResult(
        warm.source,
        warm.days,
        format_ts(warm.span.since_ms),
        format_ts(warm.span.newest_ms),
        results,
        time.perf_counter() - began,
    )
    summary = done.summary()
    summary.pop("per_shard")
    log.info("warm start finished", extra=summary)
    return done


def _in_processes(
    tasks: Sequence[_Task], workers: int, progress: Callable[[str, int], None] | None
) -> list[ShardResult]:
    # Spawned, not forked: the parent holds AWS clients and their threads, which a fork copies
    # half-way through whatever they were doing.
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    results: list[ShardResult] = []
    with ProcessPoolExecutor(
        max_workers=min(workers, len(tasks)), mp_context=ctx, initializer=_init_worker, initargs=(queue,)
    ) as pool:
        pending: set[Future[ShardResult]] = {pool.submit(warm_shard, task) for task in tasks}
        while pending:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            _drain(queue, progress)
            for future in done:
                try:
                    results.append(_logged(future.result()))
                except ShelfstreamError:
                    raise
                except Exception as exc:
                    raise ShelfstreamError(
                        f"warm start of a shard failed: {type(exc).__name__}: {exc}"
                    ) from exc
        _drain(queue, progress)
    return results


def _drain(queue: Any, progress: Callable[[str, int], None] | None) -> None:
    import queue as queues

    while True:
        try:
            shard_id, n = queue.get_nowait()
        except queues.Empty:
            return
        if progress is not None:
            progress(shard_id, n)


__all__ = [
    "ArchiveReader",
    "ShardJob",
    "WarmStartPlan",
    "WarmStartResult",
    "build_core",
    "default_days",
    "needed_days",
    "open_shards",
    "plan",
    "plan_shards",
    "record_of",
    "run",
]
