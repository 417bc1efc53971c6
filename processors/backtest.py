"""`shelfstream backtest`: the processor's core over a JSON-lines file, with no AWS at all.

Lines are applied in file order, exactly as the processor would read them from one shard per store
(a store's events are in one shard, in order, and the core keeps state per store).

Besides the files of CONTRACT.md section 4 it writes `windows.jsonl`: every closed event-time window
(what the processor archives through Firehose), so detection can be inspected window by window.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from foundation.contract import alert_kind, encode
from foundation.errors import UsageError
from foundation.rejects import kept_line
from processors.core import CoreConfig, ShardCore


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
) -> BacktestResult:
    """Run the core over `path`; write alerts.jsonl, inventory.json, rejected.jsonl, windows.jsonl,
    summary.json."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out_dir} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    core = ShardCore(config or CoreConfig(archive=False))
    started = time.perf_counter()
    source = open_input(path)
    alerts_file = (out / "alerts.jsonl").open("wb")
    rejected_file = (out / "rejected.jsonl").open("wb")
    windows_file = (out / "windows.jsonl").open("wb")
    files = (alerts_file, rejected_file, windows_file)
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
            _write_effects(core, *files)
            if progress is not None:
                for mark in range(
                    (first // _PROGRESS_EVERY + 1) * _PROGRESS_EVERY, line_no + 1, _PROGRESS_EVERY
                ):
                    progress(mark)
        core.finish()
        _write_effects(core, *files)
    finally:
        for file in files:
            file.close()
        if source is not sys.stdin.buffer:
            source.close()
    seconds = time.perf_counter() - started
    stats = core.stats
    summary: dict[str, object] = {
        "events_read": stats.events_read,
        "events_valid": stats.events_valid,
        "events_rejected": stats.events_rejected,
        "duplicates_ignored": stats.duplicates_ignored,
        "late_events": stats.late_events,
        "alerts": dict(sorted(stats.alerts.items())),
        "seconds": round(seconds, 3),
        "events_per_second": round(stats.events_read / seconds, 1) if seconds > 0 else 0.0,
    }
    inventory = core.inventory()
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


__all__ = ["BacktestResult", "alert_kind", "run_backtest"]
