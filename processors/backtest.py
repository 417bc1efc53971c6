"""`shelfstream backtest`: the processor's core over a JSON-lines file, with no AWS at all.

Lines are applied in file order, exactly as the processor would read them from one shard per store
(a store's events are in one shard, in order, and the core keeps state per store).

Besides the files of CONTRACT.md section 4 it writes `windows.jsonl`: every closed event-time window
(what the processor archives through Firehose), so detection can be inspected window by window.

`--workers N` splits the file by store over N processes, as Kinesis splits stores over shards: the
parent reads the file and sends each line to its store's worker (stores are dealt out in turn as they
first appear), every worker runs a core over its stores in file order, and the parent merges the
outputs. The files are the same as one worker's: alerts in (ts, store, kind, id) order, windows in
(end, store) order, rejected lines by line number, stock and counts added up. One thing differs by
design of the watermark: it is per core, so an event is late in its own worker's event time; over
a file where one store runs more than the allowed lateness behind another, a split can count fewer
late events than one core over the whole file (docs/decisions.md).
"""

from __future__ import annotations

import datetime as dt
import heapq
import multiprocessing as mp
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO, Final

import msgspec
import orjson

from foundation.contract import alert_kind, encode, format_ts, parse_ts
from foundation.errors import ShelfstreamError, UsageError
from foundation.rejects import kept_line
from processors.core import CoreConfig, CoreStats, ShardCore


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
) -> BacktestResult:
    """Run the core over `path`; write alerts.jsonl, inventory.json, rejected.jsonl, windows.jsonl,
    summary.json.

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
    try:
        if workers == 1:
            part = _single(source, config, out / ".part-0", progress)
            parts = [part]
        else:
            parts = _split(source, config, out, workers, progress)
    finally:
        if source is not sys.stdin.buffer:
            source.close()
    result = _merge(parts, out, time.perf_counter() - started, time.process_time() - cpu_started)
    for part in parts:
        for name in _PART_FILES:
            (part.folder / name).unlink(missing_ok=True)
        part.folder.rmdir()
    return result


_PART_FILES = ("alerts.jsonl", "rejected.jsonl", "windows.jsonl")


@dataclass(frozen=True)
class _Part:
    """What one core made of its share of the file: its effects in files, its counts, its stock."""

    folder: Path
    stats: CoreStats
    inventory: dict[str, dict[str, int]]
    cpu_s: float  # CPU time of a worker process (0 for the core in the calling process)


class _PartWriter:
    def __init__(self, core: ShardCore, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.core = core
        self.folder = folder
        self.files = tuple((folder / name).open("wb") for name in _PART_FILES)

    def write(self) -> None:
        _write_effects(self.core, *self.files)

    def close(self, cpu_s: float = 0.0) -> _Part:
        for file in self.files:
            file.close()
        return _Part(self.folder, self.core.stats, self.core.inventory(), cpu_s)


def _single(
    source: IO[bytes], config: CoreConfig, folder: Path, progress: Callable[[int], None] | None
) -> _Part:
    core = ShardCore(config)
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

_STORE_KEY: Final = b'"store_id":"'
_TS_KEY: Final = b'"ts":"'
_TS_LEN: Final = len("2026-08-01T10:15:30.123Z")
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class _Routing(msgspec.Struct):
    store_id: str = ""
    ts: dt.datetime | None = None


_routing_decoder: Final = msgspec.json.Decoder(_Routing)


def route_of(raw: bytes) -> tuple[bytes, bytes]:
    """(store id, event time in the contract's canonical form) of a record, as bytes; b"" for what it
    lacks. Canonical times compare as strings in time order.

    The common form (each key once, `"key":"value"`, no escapes) is cut out of the bytes; anything
    else is decoded, so a store never lands in two workers whatever its spelling."""
    at = raw.find(_STORE_KEY)
    ts_at = raw.find(_TS_KEY)
    if at >= 0 and ts_at >= 0:
        begin = at + 12
        end = raw.find(b'"', begin)
        ts_begin = ts_at + 6
        if (
            end > begin
            and raw[ts_begin + 23 : ts_begin + 25] == b'Z"'
            and raw.find(b"\\", begin, end) < 0
            and raw.find(_STORE_KEY, end) < 0
            and raw.find(_TS_KEY, ts_begin) < 0
        ):
            return raw[begin:end], raw[ts_begin : ts_begin + _TS_LEN]
    try:
        decoded = _routing_decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError):
        return b"", b""
    ts = decoded.ts
    when = b""
    if ts is not None and ts.tzinfo is not None and ts.utcoffset() == dt.timedelta(0):
        when = format_ts((ts - _EPOCH) // dt.timedelta(milliseconds=1)).encode()
    return decoded.store_id.encode("utf-8", "surrogatepass"), when


def _split(
    source: IO[bytes], config: CoreConfig, out: Path, workers: int, progress: Callable[[int], None] | None
) -> list[_Part]:
    """Route lines by store (stores taken in turn as they first appear) to worker processes."""
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    pipes = []
    procs = []
    for k in range(workers):
        ours, theirs = ctx.Pipe()
        proc = ctx.Process(
            target=_worker, args=(theirs, config, out / f".part-{k}"), name=f"backtest-{k}", daemon=True
        )
        proc.start()
        theirs.close()
        pipes.append(ours)
        procs.append(proc)
    try:
        assigned: dict[bytes, int] = {}
        route = route_of
        line_no = 0
        newest = b""
        for lines in _chunks(source):
            first = line_no
            numbers: list[list[int]] = [[] for _ in range(workers)]
            records: list[list[bytes]] = [[] for _ in range(workers)]
            # With each line, the newest event time of the file before it: every worker keeps the
            # watermark one core over the whole file would have (events are late, and windows
            # close, at the same points).
            times: list[list[bytes]] = [[] for _ in range(workers)]
            for line in lines:
                line_no += 1
                raw = line.rstrip(b"\r\n")
                if not raw or raw.isspace():
                    continue
                store, ts = route(raw)
                found = assigned.get(store)
                k = found if found is not None else assigned.setdefault(store, len(assigned) % workers)
                numbers[k].append(line_no)
                records[k].append(raw)
                times[k].append(newest)
                if ts > newest:
                    newest = ts
            for k, pipe in enumerate(pipes):
                if numbers[k]:
                    pipe.send((numbers[k], records[k], times[k]))
            _report(progress, first, line_no)
        for pipe in pipes:
            pipe.send(None)
            pipe.send(newest)
        # Every worker closes its windows up to the same point: the last data of the whole file.
        lasts = [pipe.recv() for pipe in pipes]
        known = [last for last in lasts if last is not None]
        end = max(known) if known else None
        for pipe in pipes:
            pipe.send(end)
        answers = [pipe.recv() for pipe in pipes]
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()
    failed = [a for a in answers if isinstance(a, str)]
    if failed:
        raise ShelfstreamError(f"backtest worker failed: {failed[0]}")
    return [a for a in answers if isinstance(a, _Part)]


def _worker(pipe: Connection, config: CoreConfig, folder: Path) -> None:
    try:
        core = ShardCore(config)
        writer = _PartWriter(core, folder)
        apply = core.apply
        advance = core.advance_watermark
        windows = core.state.windows
        # The file's newest time matters only once it reaches the next pane close (before that it
        # changes nothing an event sees): strings in canonical form compare as times.
        close_ms: int | None = None
        close_at = b""
        while (batch := pipe.recv()) is not None:
            numbers, records, times = batch
            for line_no, raw, newest in zip(numbers, records, times, strict=True):
                if newest >= close_at and newest:
                    advance(parse_ts(newest.decode()))
                apply(raw, line_no)
                if windows is not None and windows.next_close_ms != close_ms:
                    close_ms = windows.next_close_ms
                    close_at = format_ts(close_ms).encode() if windows.started else b""
            writer.write()
        newest = pipe.recv()
        if newest:
            advance(parse_ts(newest.decode()))
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
    for part in parts:
        stats.add(part.stats)
        inventory.update(part.inventory)
    inventory = dict(sorted(inventory.items()))
    summary: dict[str, object] = {
        "events_read": stats.events_read,
        "events_valid": stats.events_valid,
        "events_rejected": stats.events_rejected,
        "duplicates_ignored": stats.duplicates_ignored,
        "late_events": stats.late_events,
        "alerts": dict(sorted(stats.alerts.items())),
        "workers": len(parts),
        "seconds": round(seconds, 3),
        "events_per_second": round(stats.events_read / seconds, 1) if seconds > 0 else 0.0,
        # CPU time of the run (every worker's included), so speed can be measured on a busy machine.
        "cpu_seconds": round(cpu_s + sum(p.cpu_s for p in parts), 3),
    }
    (out / "inventory.json").write_bytes(encode(inventory) + b"\n")
    (out / "summary.json").write_bytes(encode(summary) + b"\n")
    return BacktestResult(summary, inventory)


def _write_effects(
    core: ShardCore, alerts_file: IO[bytes], rejected_file: IO[bytes], windows_file: IO[bytes]
) -> None:
    effects = core.drain()
    if effects.windows:
        windows_file.write(b"\n".join(effects.windows) + b"\n")
    for request in effects.requests:
        alerts_file.write(encode(request) + b"\n")
    for alert in effects.alerts:
        alerts_file.write(encode(alert) + b"\n")
    for rejected in effects.rejected:
        # The record as text for people and byte-exact in base64 (it may not be UTF-8).
        rejected_file.write(kept_line(rejected.reason, rejected.record, {"line": int(rejected.ref)}))


__all__ = ["BacktestResult", "alert_kind", "route_of", "run_backtest"]
