"""`shelfstream backtest`: the processor's core over a JSON-lines file, with no AWS at all.

Lines are applied in file order, exactly as the processor would read them from one shard per store
(a store's events are in one shard, in order, and the core keeps state per store).

Besides the files of docs/contract.md section 4 it writes `windows.jsonl`: every closed event-time window
(what the processor archives through Firehose), so detection can be inspected window by window.

`--workers N` splits the file by store over N processes, as Kinesis splits stores over shards: every
worker reads and decodes the whole file and keeps the events of its own stores (stores go to workers
by their size in a sample of the file, largest first to the least busy; every worker gets the same
plan), runs a core over them in file order,
and the parent merges the outputs. The files are the same as one worker's: alerts in (ts, store,
kind, id) order, windows in (end, store) order, rejected lines by line number, stock and counts added
up; anomaly alerts too, but for what a store's peers decide: a store borrows the shape of the
other stores of its core until its own history outweighs it, so a split may judge a borderline
window of a store's first week differently (and flag a borderline window later, inside an incident
already alerted). Each worker follows the event time of the whole file (the newest valid sale or refund before
each line), so windows close and events are late where one core's would. One case differs: a repeat
of an event with a later time than the first (ignored by the core as a duplicate) moves the event
time of a split run, where one core never saw it move (docs/decisions.md, record 24).
"""

from __future__ import annotations

import heapq
import multiprocessing as mp
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO, Final

import msgspec
import orjson

from foundation.contract import Refund, Rejection, Sale, alert_kind, encode, format_ts
from foundation.errors import ShelfstreamError, UsageError
from foundation.rejects import kept_line
from processors.core import CoreConfig, CoreStats, ShardCore
from processors.core.detectors.fleet_shape import (
    FleetShape,
    FleetShapeError,
    decode_shape,
    encode_shape,
    merge_shapes,
)
from processors.core.processor import decode_record
from processors.core.windows import AheadRun
from processors.trailing_silence import TrailingSilence


@dataclass(frozen=True)
class BacktestResult:
    summary: dict[str, object]
    inventory: dict[str, dict[str, int]]


_CHUNK = 1 << 20
_PROGRESS_EVERY = 50_000


def _chunks(source: IO[bytes]) -> Iterator[list[bytes]]:
    """The lines of `source` without their "\\n", about a megabyte at a time (whatever a pipe has)."""
    read = getattr(source, "read1", source.read)
    carry = b""
    while True:
        data: bytes = read(_CHUNK)
        if not data:
            break
        lines = (carry + data).split(b"\n") if carry else data.split(b"\n")
        carry = lines.pop()
        yield lines
    if carry:
        yield [carry]


def open_input(path: str) -> IO[bytes]:
    if path == "-":
        return sys.stdin.buffer
    file = Path(path)
    if not file.exists():
        raise UsageError(f"input file {path} does not exist")
    if file.is_dir():
        raise UsageError(f"input {path} is a directory, not a JSON-lines file")
    return file.open("rb")


def run_backtest(
    path: str,
    out_dir: str,
    config: CoreConfig | None = None,
    progress: Callable[[int], None] | None = None,
    workers: int = 1,
    fleet_prior: FleetShape | None = None,
) -> BacktestResult:
    """Run the core over `path`; write alerts.jsonl, inventory.json, rejected.jsonl, windows.jsonl,
    summary.json, and fleet.json (the shape of a day the run's stores taught, which a later run can
    take as its `fleet_prior`: what the rest of a fleet knows before this input begins).

    With `workers` > 1 the file is split by store over that many processes (a store's events stay
    in order in one of them) and their outputs merged; the files are the same as with one worker."""
    if workers < 1:
        raise UsageError("--workers must be at least 1")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out_dir} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    config = config or CoreConfig(archive=False)
    started = time.perf_counter()
    cpu_started = time.process_time()
    source = open_input(path)
    spooled: Path | None = None
    if path == "-":
        # Standard input is read twice (the core, then the KPIs): keep a copy.
        spooled, _ = _readable_path(source, out)
        spooled = spooled.rename(out / ".kpi-input.jsonl")
        source = spooled.open("rb")
    try:
        if workers == 1:
            part = _single(source, config, out / ".part-0", progress, fleet_prior)
            parts = [part]
        else:
            parts = _split(source, config, out, workers, progress, fleet_prior)
    finally:
        if source is not sys.stdin.buffer:
            source.close()
    result = _merge(parts, out, time.perf_counter() - started, time.process_time() - cpu_started)
    for part in parts:
        for name in _PART_FILES:
            (part.folder / name).unlink(missing_ok=True)
        part.folder.rmdir()
    kpi_rows = write_kpis(spooled or Path(path), out)
    result.summary["kpi_rows"] = kpi_rows
    (out / "summary.json").write_bytes(encode(result.summary) + b"\n")
    if spooled is not None:
        spooled.unlink(missing_ok=True)
    return result


def write_kpis(path: Path, out: Path) -> int:
    """``kpis.jsonl``: the daily inventory KPIs of the input's valid events (processors/core/kpis.py, the same
    implementation as `shelfstream kpis`), one object per store, product and local day. A repeated
    (store_id, event_id) counts once, as the processor's dedup has it."""
    from processors.core.kpis import PRODUCT_FIELDS, compute, kpi_event

    seen: set[tuple[str, str]] = set()
    events = []
    with path.open("rb") as source:
        for lines in _chunks(source):
            for raw in lines:
                if not raw.strip():
                    continue
                ev = decode_record(raw.rstrip(b"\r"))
                if isinstance(ev, Rejection):
                    continue
                key = (ev.store_id, ev.event_id)
                if key in seen:
                    continue
                seen.add(key)
                events.append(kpi_event(ev))
    rows, _, _ = compute(events)
    with (out / "kpis.jsonl").open("wb") as fh:
        for row in rows:
            fh.write(orjson.dumps({f: row[f] for f in PRODUCT_FIELDS}) + b"\n")
    return len(rows)


_PART_FILES = ("alerts.jsonl", "rejected.jsonl", "windows.jsonl")


@dataclass(frozen=True)
class _Part:
    """What one core made of its share of the file: its effects in files, its counts, its stock."""

    folder: Path
    stats: CoreStats
    inventory: dict[str, dict[str, int]]
    cpu_s: float  # CPU time of a worker process (0 for the core in the calling process)
    fleet: FleetShape | None = None  # the shape of a day its stores taught
    # What became of the operators' `feedback` events: applied, unknown_alert, no_detector
    feedback: dict[str, int] = field(default_factory=dict)
    # Anomaly alerts about the time after a store's last event, dropped at the input's end, and
    # waiting ones withdrawn before it (TrailingSilence)
    after_last_event: int = 0
    cancelled: int = 0


class _PartWriter:
    def __init__(self, core: ShardCore, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.core = core
        self.folder = folder
        self.files = tuple((folder / name).open("wb") for name in _PART_FILES)
        self.hold = TrailingSilence()

    def write(self) -> None:
        _write_effects(self.core, self.hold, *self.files)

    def close(self, cpu_s: float = 0.0) -> _Part:
        """The part's files closed; alerts still waiting were about the end of their store's data."""
        self.hold.end()
        for file in self.files:
            file.close()
        feedback = self.core.feedback_outcomes()
        return _Part(
            self.folder,
            self.core.stats,
            self.core.inventory(),
            cpu_s,
            self.core.fleet_shape(),
            feedback,
            self.hold.dropped,
            self.hold.cancelled,
        )


def _single(
    source: IO[bytes],
    config: CoreConfig,
    folder: Path,
    progress: Callable[[int], None] | None,
    fleet_prior: FleetShape | None,
) -> _Part:
    core = ShardCore(config)
    core.set_fleet_prior(fleet_prior)
    writer = _PartWriter(core, folder)
    try:
        apply = core.apply
        line_no = 0
        # Lines are read a chunk at a time (reading them one by one cost as much as the core's
        # windows); effects are written once per chunk, in the order the core made them.
        for lines in _chunks(source):
            first = line_no
            for line in lines:
                line_no += 1
                raw = line.rstrip(b"\r\n")
                if not raw or raw.isspace():
                    continue
                apply(raw, line_no)
            writer.write()
            _report(progress, first, line_no)
        core.finish()
        writer.write()
    finally:
        part = writer.close()
    return part


def _report(progress: Callable[[int], None] | None, first: int, last: int) -> None:
    if progress is not None:
        for mark in range((first // _PROGRESS_EVERY + 1) * _PROGRESS_EVERY, last + 1, _PROGRESS_EVERY):
            progress(mark)


# --- split by store over worker processes ----------------------------------------------------------


def _split(
    source: IO[bytes],
    config: CoreConfig,
    out: Path,
    workers: int,
    progress: Callable[[int], None] | None,
    fleet_prior: FleetShape | None,
) -> list[_Part]:
    """Every worker reads the whole file and keeps the lines of its own stores (`plan_split`). The parent only
    waits: sending each line through a pipe cost it as much CPU as a worker's core, and on a machine
    of N cores that parent was the N+1st process."""
    path, spooled = _readable_path(source, out)
    plan = plan_split(path, workers)
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    pipes = []
    procs = []
    answers: list[object] = []
    try:
        for k in range(workers):
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(
                target=_worker,
                args=(
                    theirs,
                    config,
                    out / f".part-{k}",
                    path,
                    k,
                    plan,
                    k == 0 and progress is not None,
                    fleet_prior,
                ),
                name=f"backtest-{k}",
                daemon=True,
            )
            proc.start()
            theirs.close()
            pipes.append(ours)
            procs.append(proc)
        # Worker 0 reports its progress through the file (all of them read all of it).
        lasts: list[object] = []
        for pipe in pipes:
            while True:
                message = pipe.recv()
                if isinstance(message, tuple) and message[0] == "progress":
                    _report(progress, message[1], message[2])
                    continue
                lasts.append(message)
                break
        failed = [last for last in lasts if isinstance(last, str)]
        if failed:
            raise ShelfstreamError(f"backtest worker failed: {failed[0]}")
        # Every worker closes its windows up to the same point: the last data of the whole file.
        known = [last for last in lasts if isinstance(last, int)]
        end = max(known) if known else None
        for pipe in pipes:
            pipe.send(end)
        answers = [pipe.recv() for pipe in pipes]
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()
        if spooled:
            path.unlink(missing_ok=True)
    failed = [a for a in answers if isinstance(a, str)]
    if failed:
        raise ShelfstreamError(f"backtest worker failed: {failed[0]}")
    return [a for a in answers if isinstance(a, _Part)]


@dataclass(frozen=True)
class _Plan:
    workers: int
    stores: dict[str, int]  # store id -> worker, for the stores the sample saw


class _Route(msgspec.Struct):
    store_id: str = ""
    ts: str = ""


_route_decoder: Final = msgspec.json.Decoder(_Route)
_TS_LEN: Final = len("2026-08-01T10:15:30.123Z")


def route_of(raw: bytes) -> tuple[str, str | None]:
    """(store id, event time) of a record, for splitting it by store; the time only in the contract's
    canonical form (None: not read here). One light decode of two fields (msgspec skips the rest
    without building it: cheaper than cutting them out of the bytes), by the parser the core uses, so
    every spelling of a store gives its one id and a store never lands in two workers."""
    try:
        routed = _route_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return "", None
    ts = routed.ts
    canonical = len(ts) == _TS_LEN and ts[10] == "T" and ts[23] == "Z"
    return routed.store_id, ts if canonical else None


_SAMPLES: Final = 16
_SAMPLE_BYTES: Final = 256 * 1024


def plan_split(path: Path, workers: int) -> _Plan:
    """Which worker takes which store, by the stores' sizes in a sample of the file.

    Stores differ a lot in size (a supermarket sells ten times what a corner shop does), so dealing
    them out in turn can give one worker most of the work. A few evenly spaced slices of the file
    are counted, and the stores go, largest first, to the worker with the least work so far. Stores
    the sample missed are dealt out in turn as they appear. Every worker gets this plan, so a store
    is in exactly one worker whatever the sample saw."""
    counts: dict[str, int] = {}
    size = path.stat().st_size
    with path.open("rb") as fh:
        for i in range(_SAMPLES):
            fh.seek(size * i // _SAMPLES)
            data = fh.read(_SAMPLE_BYTES)
            lines = data.split(b"\n")
            for line in lines[1:-1] if i else lines[:-1]:  # whole lines only
                store, _ = route_of(line)
                counts[store] = counts.get(store, 0) + 1
    load = [0] * workers
    stores: dict[str, int] = {}
    for store, count in sorted(counts.items(), key=lambda sc: (-sc[1], sc[0])):
        k = min(range(workers), key=lambda w: (load[w], w))
        stores[store] = k
        load[k] += count
    return _Plan(workers, stores)


def _readable_path(source: IO[bytes], out: Path) -> tuple[Path, bool]:
    """A path every worker can open: the input file itself, or standard input copied to a file."""
    name = getattr(source, "name", None)
    if isinstance(name, str) and source is not sys.stdin.buffer and Path(name).is_file():
        return Path(name), False
    spool = out / ".input.jsonl"
    with spool.open("wb") as fh:
        while data := source.read(_CHUNK):
            fh.write(data)
    return spool, True


def _worker(
    pipe: Connection,
    config: CoreConfig,
    folder: Path,
    path: Path,
    me: int,
    plan: _Plan,
    report: bool,
    fleet_prior: FleetShape | None,
) -> None:
    try:
        core = ShardCore(config)
        core.set_fleet_prior(fleet_prior)
        writer = _PartWriter(core, folder)
        apply = core.apply_decoded
        advance = core.advance_watermark
        windows = core.window_engine()
        assigned = dict(plan.stores)
        workers = plan.workers
        # Every line's store comes from a light decode (`route_of`); an event of ours is then decoded
        # whole and applied. The file's event time before each line, as one core over the whole file knows
        # it (only valid sales and refunds move it there), so every worker's windows close, and its
        # events are late, at the same points as one core's. Another worker's record matters only
        # when its time reaches our next pane close (below that it closes nothing): only then is it
        # decoded, to know whether it is a valid sale or refund. Canonical times compare as strings.
        newest = -1
        # One core's guard against a till with a wrong clock (WindowEngine.ahead), on the file's time;
        # while a run of events far ahead is open, every record is decoded, as one core sees each.
        run = AheadRun()
        max_ahead = windows.max_ahead_ms if windows is not None else 0
        close_ms: int | None = None
        close_at = ""  # the next pane close, canonical; "" until our windows start
        line_no = 0
        with path.open("rb") as source:
            for lines in _chunks(source):
                first = line_no
                for line in lines:
                    line_no += 1
                    raw = line.rstrip(b"\r\n")
                    if not raw or raw.isspace():
                        continue
                    store, ts = route_of(raw)
                    k = assigned.get(store)
                    if k is None:
                        k = assigned[store] = len(assigned) % workers
                    if k == me:
                        ev = decode_record(raw)
                        if windows is not None and newest > windows.newest_ms:
                            if newest >= windows.next_close_ms:
                                advance(newest)
                            else:
                                windows.newest_ms = newest
                        apply(ev, raw, line_no)
                    elif windows is not None and (ts is None or ts >= close_at or run.count):
                        ev = decode_record(raw)
                    else:
                        continue
                    if type(ev) is Sale or type(ev) is Refund:
                        ts_ms = ev.ts_ms
                        if ts_ms > newest:
                            if newest < 0 or ts_ms - newest <= max_ahead:
                                newest = ts_ms
                                run.count = 0
                            elif run.add(ev.store_id, ts_ms):
                                newest = ts_ms
                    if windows is not None and windows.next_close_ms != close_ms:
                        close_ms = windows.next_close_ms
                        close_at = format_ts(close_ms) if windows.started else ""
                writer.write()
                if report:
                    pipe.send(("progress", first, line_no))
        if newest >= 0:
            advance(newest)
        writer.write()
        pipe.send(core.last_data_ms())
        core.finish(pipe.recv())
        writer.write()
        pipe.send(writer.close(time.process_time()))
    except Exception as exc:  # reported to the parent, which fails the run
        pipe.send(f"{type(exc).__name__}: {exc}")
    finally:
        pipe.close()


# --- one set of output files from the parts ----------------------------------------------------------


def _alert_order(line: bytes) -> tuple[str, str, str, str]:
    alert = orjson.loads(line)
    return (alert["ts"], alert["store_id"], alert["kind"], alert["alert_id"])


def _window_order(line: bytes) -> tuple[str, str]:
    window = orjson.loads(line)
    return (window["window_end"], window["store_id"])


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def _merge(parts: list[_Part], out: Path, seconds: float, cpu_s: float) -> BacktestResult:
    """Write the output files from the parts, in an order that does not depend on the split:
    alerts by (ts, store, kind, id); windows by (end, store), a store's windows of one end in the
    order the core made them; rejected lines by line number."""
    alerts = sorted((line for p in parts for line in _lines(p.folder / "alerts.jsonl")), key=_alert_order)
    (out / "alerts.jsonl").write_bytes(b"".join(line + b"\n" for line in alerts))
    windows = sorted((line for p in parts for line in _lines(p.folder / "windows.jsonl")), key=_window_order)
    (out / "windows.jsonl").write_bytes(b"".join(line + b"\n" for line in windows))
    with (out / "rejected.jsonl").open("wb") as fh:
        streams = [_lines(p.folder / "rejected.jsonl") for p in parts]
        for line in heapq.merge(*streams, key=lambda line: orjson.loads(line)["line"]):
            fh.write(line + b"\n")
    stats = CoreStats()
    inventory: dict[str, dict[str, int]] = {}
    feedback: Counter[str] = Counter()
    after_last = cancelled = 0
    for part in parts:
        stats.add(part.stats)
        inventory.update(part.inventory)
        feedback.update(part.feedback)
        after_last += part.after_last_event
        cancelled += part.cancelled
    inventory = dict(sorted(inventory.items()))
    # The alerts as written: those about the time after a store's last event are not (TrailingSilence)
    written = Counter(stats.alerts)
    written["anomaly"] -= after_last + cancelled
    written["anomaly_withdrawn"] -= cancelled
    written = +written
    summary: dict[str, object] = {
        "events_read": stats.events_read,
        "events_valid": stats.events_valid,
        "events_rejected": stats.events_rejected,
        "duplicates_ignored": stats.duplicates_ignored,
        "late_events": stats.late_events,
        "alerts": dict(sorted(written.items())),
        # anomaly alerts about the time after a store's last event: the input's end, not its sales
        "alerts_after_last_event_dropped": after_last,
        # operators' feedback events: applied, or why not (an unknown alert, a store without detector)
        "feedback": dict(sorted(feedback.items())),
        "workers": len(parts),
        "seconds": round(seconds, 3),
        "events_per_second": round(stats.events_read / seconds, 1) if seconds > 0 else 0.0,
        # CPU time of the run (every worker's included), so speed can be measured on a busy machine.
        "cpu_seconds": round(cpu_s + sum(p.cpu_s for p in parts), 3),
    }
    (out / "inventory.json").write_bytes(encode(inventory) + b"\n")
    shapes = [p.fleet for p in parts if p.fleet is not None]
    fleet = merge_shapes(shapes, shapes[0].slots_per_day) if shapes else None
    if fleet is not None:
        (out / "fleet.json").write_bytes(encode_shape(fleet) + b"\n")
    (out / "summary.json").write_bytes(encode(summary) + b"\n")
    return BacktestResult(summary, inventory)


def _write_effects(
    core: ShardCore,
    hold: TrailingSilence,
    alerts_file: IO[bytes],
    rejected_file: IO[bytes],
    windows_file: IO[bytes],
) -> None:
    effects = core.drain()
    if effects.windows:
        windows_file.write(b"\n".join(effects.windows) + b"\n")
    for request in effects.requests:
        alerts_file.write(encode(request) + b"\n")
    for alert in hold.admit(effects.alerts, core.newest_event_times()):
        alerts_file.write(encode(alert) + b"\n")
    for rejected in effects.rejected:
        # The record as text for people and byte-exact in base64 (it may not be UTF-8).
        rejected_file.write(kept_line(rejected.reason, rejected.record, {"line": int(rejected.ref)}))


def read_fleet_prior(path: str) -> FleetShape:
    """A fleet shape from a file (`backtest --fleet-prior`): an earlier run's fleet.json, or one
    built from the archive; a file that is not one is a usage error, with the reason."""
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"--fleet-prior {path} is not a file")
    try:
        return decode_shape(file.read_bytes())
    except FleetShapeError as exc:
        raise UsageError(f"--fleet-prior {path}: {exc}") from None


__all__ = ["BacktestResult", "alert_kind", "read_fleet_prior", "run_backtest"]
