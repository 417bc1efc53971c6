"""Where the whole core's time goes: `backtest` under cProfile, its own time grouped by part of the core.

cProfile slows every Python call down (a call costs more than most of the work in it), so the shares
are the figure to read, not the absolute times: they say which part an optimisation should aim at.
Parts: decoding and validating (msgspec and the contract's checks), event time (`ts_ms`), dedup,
stock (processors/core/stock_ledger.py), the demand forecast (demand.py) and the restock policy
(restock_policy.py) that reads it, the per-event loop itself (`ShardCore.apply`, with the window
update of a sale inlined), windows (processors/core/windows.py), the daily KPIs (kpis.py), detection
and window records (monitor, detectors/, tails, explain and the river/scipy calls under them),
reading the file and writing the outputs (backtest.py), the rest.

    python -m benchmarks.profile_core [--docs benchmarks/core-speed-experiments.md]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.engines import FILES, machine
from benchmarks.scenario import write
from processors.backtest import run_backtest
from processors.core import CoreConfig

PARTS: list[tuple[str, tuple[str, ...]]] = [
    ("decode and validate", ("msgspec.json.Decoder", "__post_init__", "decode_event", "decode_record")),
    ("event time (`ts_ms`)", ("(ts_ms)",)),
    ("dedup", ("dedup.py",)),
    ("stock (stock_ledger.py)", ("stock_ledger.py",)),
    ("restock demand forecast (demand.py)", ("demand.py",)),
    ("restock policy (restock_policy.py)", ("restock_policy.py",)),
    ("the per-event loop (`apply`, a sale's window update inlined)", ("processor.py",)),
    ("windows (windows.py)", ("windows.py",)),
    ("daily KPIs (kpis.py)", ("kpis.py",)),
    (
        "detection and window records",
        ("monitor.py", "/detectors/", "tails.py", "explain.py", "/river/", "/scipy/", "msgspec.json.Encoder"),
    ),
    ("reading and writing (backtest.py)", ("backtest.py", "rstrip", "isspace", "split", "write", "read")),
]


def _part(where: str) -> str:
    for name, needles in PARTS:
        if any(n in where for n in needles):
            return name
    return "other"


def profile(path: Path, work: Path) -> tuple[int, dict[str, float], float]:
    config = CoreConfig(archive=False)
    warm = work.with_suffix(".warm.jsonl")
    with path.open("rb") as fh:  # a short run first: imports and caches are not what is measured
        warm.write_bytes(b"".join(fh.readline() for _ in range(20_000)))
    run_backtest(str(warm), str(work), config)
    profiler = cProfile.Profile()
    profiler.enable()
    result = run_backtest(str(path), str(work), config)
    profiler.disable()
    stats = pstats.Stats(profiler)
    parts: dict[str, float] = {}
    raw: dict[tuple[str, int, str], Any] = stats.stats  # type: ignore[attr-defined]
    for (filename, line, func), (_, _, tottime, _, callers) in raw.items():
        if filename == "~" and "msgspec.json" not in func:
            # A builtin (dict.get, set.add, ...): its time goes to the parts that called it.
            for (c_file, c_line, c_func), (_, _, c_tt, _) in callers.items():
                name = _part(f"{c_file}:{c_line}({c_func})")
                parts[name] = parts.get(name, 0.0) + c_tt
            continue
        where = f"{filename}:{line}({func})" if filename != "~" else func
        parts[_part(where)] = parts.get(_part(where), 0.0) + tottime
    total = sum(parts.values())
    return int(str(result.summary["events_read"])), parts, total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=Path, help="write the table between the profile-core markers")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    columns: list[tuple[str, int, dict[str, float], float]] = []
    with tempfile.TemporaryDirectory(prefix="shelfstream-profile-") as tmp:
        for i, (label, cfg) in enumerate(FILES.items()):
            folder = Path(tmp) / f"f{i}"
            write(cfg, folder)
            events, parts, total = profile(folder / "events.jsonl", Path(tmp) / f"out{i}")
            columns.append((label, events, parts, total))
    names = [name for name, _ in PARTS] + ["other"]
    head = "| part of the whole core | " + " | ".join(f"{label}" for label, *_ in columns) + " |"
    lines = [
        f"Machine: {machine()}; `python -m benchmarks.profile_core`, {time.perf_counter() - began:.0f} s. "
        "Share of the profiled time of `backtest` (cProfile's own time per function, grouped):",
        "",
        head,
        "| --- |" + " ---: |" * len(columns),
    ]
    for name in names:
        lines.append(
            f"| {name} | "
            + " | ".join(f"{parts.get(name, 0.0) / total:.0%}" for _, _, parts, total in columns)
            + " |"
        )
    print("\n".join(lines))
    if args.docs:
        from benchmarks.detect import write_docs

        write_docs(args.docs, lines, "profile-core")
    return 0


if __name__ == "__main__":
    sys.exit(main())
