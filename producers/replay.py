"""Feeding the stream: a JSON-lines file as it is, or simulated stores paced in (accelerated) real time."""

from __future__ import annotations

import asyncio
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final, Protocol

import msgspec
import orjson

from foundation.contract import is_store_id
from foundation.errors import UsageError
from foundation.rejects import kept_bytes
from producers.ledger import Ledger
from producers.simulator import SimEvent, StoreSimulator

UNKNOWN_PARTITION_KEY: Final = "unknown"
_READ_CHUNK_LINES: Final = 2000


class RecordSink(Protocol):
    """What the producers need from a writer (KinesisWriter, or a test double)."""

    async def put(self, data: bytes, partition_key: str) -> bool: ...

    async def flush(self) -> None: ...


class _StoreOnly(msgspec.Struct):
    store_id: Any = None


_store_decoder: Final = msgspec.json.Decoder(_StoreOnly)


def partition_key_of(line: bytes) -> str | None:
    """The line's store_id if it is a valid one, else None; decodes nothing else (replay's hot path)."""
    try:
        store_id = _store_decoder.decode(line).store_id
    except Exception:  # not JSON, not an object, not UTF-8, nested too deeply: no store id
        return None
    if is_store_id(store_id):
        return str(store_id)
    return None


@dataclass
class KeptReplayStats:
    records: int = 0  # kept records read
    sent: int = 0  # handed to the writer
    refused: int = 0  # refused by the writer (dead-lettered there)
    unreadable: int = 0  # lines that are not kept records (not JSON objects): left alone


def kept_records(lines: Iterable[bytes], stats: KeptReplayStats) -> Iterator[tuple[bytes, str]]:
    """(exact bytes, partition key) of each kept record (foundation/rejects.py's lines). The key is
    the record's own store_id when it has a valid one, which also mends a record first put under
    another store's key; else the key it was put with, else "unknown".

    The bytes come from ``record_b64``; a line whose ``record_b64`` was removed gives its ``record``
    text, so a record can be mended by hand in a downloaded file and sent again."""
    for line in lines:
        if not line.strip():
            continue
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            stats.unreadable += 1
            continue
        if not isinstance(entry, dict) or not ("record_b64" in entry or "record" in entry):
            stats.unreadable += 1
            continue
        data = kept_bytes(entry)
        stats.records += 1
        put_with = entry.get("partition_key")
        yield (
            data,
            partition_key_of(data)
            or (put_with if isinstance(put_with, str) and is_store_id(put_with) else UNKNOWN_PARTITION_KEY),
        )


async def replay_kept(lines: Iterable[bytes], writer: RecordSink, stats: KeptReplayStats) -> None:
    """Send kept (rejected or dead-lettered) records to the stream again, byte-exact, and flush."""
    for data, key in kept_records(lines, stats):
        if await writer.put(data, key):
            stats.sent += 1
        else:
            stats.refused += 1
    await writer.flush()


@dataclass
class ReplayStats:
    lines: int = 0  # lines read, blank ones included
    sent: int = 0  # records handed to the writer
    blank: int = 0  # skipped
    no_store_id: int = 0  # sent with partition key "unknown" (the processor rejects and keeps them)
    refused: int = 0  # refused by the writer (over 1 MiB) and dead-lettered there


def _open(path: str | Path) -> BinaryIO:
    if str(path) == "-":
        return sys.stdin.buffer
    target = Path(path)
    if not target.exists():
        raise UsageError(f"replay: no such file: {path}")
    if target.is_dir():
        raise UsageError(f"replay: {path} is a directory, not a JSON-lines file")
    try:
        return target.open("rb")
    except OSError as exc:
        raise UsageError(f"replay: cannot read {path}: {exc.strerror or exc}") from exc


def _read_lines(stream: BinaryIO, limit: int) -> list[bytes]:
    lines = []
    for _ in range(limit):
        line = stream.readline()
        if not line:
            break
        lines.append(line)
    return lines


async def replay_file(
    path: str | Path,
    writer: RecordSink,
    progress: Callable[[ReplayStats], None] | None = None,
    *,
    progress_every: int = 1000,
) -> ReplayStats:
    """Produce every non-blank line of a JSON-lines file (``-`` for stdin) as one record, bytes untouched.

    Event times are kept as they are; the partition key is the line's store_id, so each store keeps its
    order. Returns once the writer has flushed everything.
    """
    stats = ReplayStats()
    stream = await asyncio.to_thread(_open, path)
    try:
        while True:
            # File reads happen off the event loop, so a slow disk or pipe never stalls the writer.
            chunk = await asyncio.to_thread(_read_lines, stream, _READ_CHUNK_LINES)
            if not chunk:
                break
            for raw in chunk:
                stats.lines += 1
                line = raw.rstrip(b"\n").rstrip(b"\r")
                if not line.strip():
                    stats.blank += 1
                    continue
                key = partition_key_of(line)
                if key is None:
                    stats.no_store_id += 1
                    key = UNKNOWN_PARTITION_KEY
                if await writer.put(line, key):
                    stats.sent += 1
                else:
                    stats.refused += 1
                if progress is not None and (stats.sent + stats.refused) % progress_every == 0:
                    progress(stats)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    await writer.flush()
    if progress is not None:
        progress(stats)
    return stats


@dataclass
class SimulationStats:
    records_put: int = 0
    refused: int = 0  # refused by the writer (dead-lettered there, not in the ledger)
    ticks: int = 0
    simulated_until_ms: int = 0
    backlog: int = 0  # generated but not produced when the run ended (only under a rate cap)


async def run_simulation(
    writer: RecordSink,
    simulator: StoreSimulator,
    rate: float | None,
    duration_s: float,
    speed: float,
    ledger: Ledger | None,
    clock: Callable[[], float] = time.monotonic,
    *,
    tick_s: float = 0.1,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    progress: Callable[[SimulationStats], None] | None = None,
) -> SimulationStats:
    """Run ``simulator`` for ``duration_s`` seconds of ``clock``, ``speed`` simulated seconds per second.

    ``rate`` caps records per second (None or 0: no cap); when the stores make more than that, simulated
    time waits for the backlog instead of bursting later. Every record the writer takes goes into
    ``ledger`` in the order it was put. Returns after the writer has flushed.
    """
    if rate is not None and rate < 0:
        raise ValueError(f"rate must be >= 0, got {rate}")
    if speed <= 0 or tick_s <= 0:
        raise ValueError("speed and tick_s must be positive")
    cap = rate or None
    burst = max(1.0, cap * tick_s * 2) if cap else 0.0
    tokens = burst
    stats = SimulationStats()
    backlog: deque[SimEvent] = deque()
    sim_ms = float(simulator.position_ms)
    start = last = clock()
    while True:
        now = clock()
        if now - start >= duration_s:
            break
        if cap:
            tokens = min(burst, tokens + (now - last) * cap)
        if not backlog:
            sim_ms += (now - last) * speed * 1000.0
            backlog.extend(simulator.events_until(int(sim_ms)))
        last = now
        allowed = len(backlog) if not cap else min(len(backlog), int(tokens))
        for _ in range(allowed):
            event = backlog.popleft()
            if await writer.put(event.data, event.store_id):
                stats.records_put += 1
                if ledger is not None:
                    ledger.record(event.data)
            else:
                stats.refused += 1
        if cap:
            tokens -= allowed
        stats.ticks += 1
        stats.simulated_until_ms = simulator.position_ms
        if progress is not None:
            progress(stats)
        await sleep(max(0.0, now + tick_s - clock()))
    stats.backlog = len(backlog)
    await writer.flush()
    if progress is not None:
        progress(stats)
    return stats
