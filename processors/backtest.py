"""`shelfstream backtest`: the processor's core over a JSON-lines file, with no AWS at all.

Lines are applied in file order, exactly as the processor would read them from one shard per store
(a store's events are in one shard, in order, and the core keeps state per store).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from processors.core import CoreConfig, ShardCore
from shelfstream.contract import alert_kind, encode
from shelfstream.errors import UsageError


@dataclass(frozen=True)
class BacktestResult:
    summary: dict[str, object]
    inventory: dict[str, dict[str, int]]


def _lines(source: IO[bytes]) -> Iterator[bytes]:
    for line in source:
        yield line.rstrip(b"\r\n")


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
    """Run the core over `path` and write alerts.jsonl, inventory.json, rejected.jsonl, summary.json."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out_dir} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    core = ShardCore(config or CoreConfig(archive=False))
    started = time.perf_counter()
    source = open_input(path)
    alerts_file = (out / "alerts.jsonl").open("wb")
    rejected_file = (out / "rejected.jsonl").open("wb")
    try:
        apply = core.apply
        line_no = 0
        for line_no, raw in enumerate(_lines(source), start=1):
            if not raw.strip():
                continue
            apply(raw, str(line_no))
            if core.out:
                _write_effects(core, alerts_file, rejected_file)
            if progress is not None and line_no % 50_000 == 0:
                progress(line_no)
        core.finish()
        _write_effects(core, alerts_file, rejected_file)
    finally:
        alerts_file.close()
        rejected_file.close()
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


def _write_effects(core: ShardCore, alerts_file: IO[bytes], rejected_file: IO[bytes]) -> None:
    effects = core.drain()
    for request in effects.requests:
        alerts_file.write(encode(request) + b"\n")
    for alert in effects.alerts:
        alerts_file.write(encode(alert) + b"\n")
    for rejected in effects.rejected:
        rejected_file.write(
            encode(
                {
                    "line": int(rejected.ref),
                    "reason": rejected.reason,
                    "record": rejected.record.decode("utf-8", "replace"),
                }
            )
            + b"\n"
        )


__all__ = ["BacktestResult", "alert_kind", "run_backtest"]
