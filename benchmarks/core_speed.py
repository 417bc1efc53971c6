"""Core speed: the whole core in `backtest` against a decode-only pass over the same file, same run.

The file is a busy week: 16 supermarket-sized stores (benchmarks/scenario.py with `size_scale` 5,
about 2,000 sales a day each, 650,000 events), so the per-window work (windows, detection, records)
is weighed against a realistic number of events. The smaller stores of the detection benchmark are
timed as well, for reference: there a window holds only a few events, and the per-window work shows.

Rates are events per second of CPU time of this process (one core), best of `--repeat` runs, so
other work on the machine does not count; wall-clock rates are printed next to them.

    python -m benchmarks.core_speed [--events FILE] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.detect import write_docs
from benchmarks.scenario import ScenarioConfig, write
from foundation.contract import decode_event
from processors.backtest import run_backtest
from processors.core import CoreConfig

TARGET = 200_000
BUSY = ScenarioConfig(seed=7, stores=16, days=7, warmup_days=7, size_scale=5.0)
SMALL = ScenarioConfig(seed=8, stores=12, days=14, warmup_days=7)


@dataclass(frozen=True)
class Timing:
    cpu_s: float
    wall_s: float


def _best(fn: Callable[[], object], repeat: int) -> Timing:
    best = Timing(float("inf"), float("inf"))
    for _ in range(repeat):
        gc.collect()
        cpu, wall = time.process_time(), time.perf_counter()
        fn()
        took = Timing(time.process_time() - cpu, time.perf_counter() - wall)
        if took.cpu_s < best.cpu_s:
            best = took
    return best


def decode_only(path: Path) -> int:
    """Read the file line by line and decode every line, as the core's first step does."""
    n = 0
    with path.open("rb") as fh:
        for line in fh:
            decode_event(line.rstrip(b"\r\n"))
            n += 1
    return n


def measure(path: Path, repeat: int, work: Path) -> tuple[int, Timing, Timing, dict[str, object]]:
    events = decode_only(path)
    decode = _best(lambda: decode_only(path), repeat)
    summary: dict[str, object] = {}

    def core() -> None:
        result = run_backtest(str(path), str(work / "out"), CoreConfig(archive=False))
        summary.update(result.summary)

    full = _best(core, repeat)
    return events, decode, full, summary


def _line(label: str, events: int, t: Timing) -> str:
    return f"| {label} | {events / t.cpu_s:,.0f} | {events / t.wall_s:,.0f} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=Path, help="a JSON-lines file instead of the generated busy week")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-small", action="store_true", help="skip the small-store reference run")
    parser.add_argument("--docs", type=Path, help="write the results table into this Markdown file")
    args = parser.parse_args(argv)
    lines: list[str] = []
    verdict = ""
    with tempfile.TemporaryDirectory(prefix="shelfstream-speed-") as tmp:
        work = Path(tmp)
        files: list[tuple[str, Path]] = []
        if args.events is not None:
            files.append((args.events.name, args.events))
        else:
            write(BUSY, work / "busy")
            files.append(("busy week: 16 large stores, 7 days", work / "busy" / "events.jsonl"))
            if not args.no_small:
                write(SMALL, work / "small")
                files.append(("two weeks: 12 small stores, 14 days", work / "small" / "events.jsonl"))
        lines += ["| file, pass | events/s (CPU) | events/s (wall) |", "| --- | ---: | ---: |"]
        for i, (label, path) in enumerate(files):
            events, decode, full, summary = measure(path, args.repeat, work)
            lines.append(_line(f"{label} ({events:,} events), decode only", events, decode))
            lines.append(_line(f"{label}, whole core in backtest", events, full))
            if i == 0:
                rate = events / full.cpu_s
                verdict = (
                    f"Whole core at {rate:,.0f} events/s, {decode.cpu_s / full.cpu_s:.0%} of the decode-only "
                    f"rate; target >= {TARGET:,}: {'met' if rate >= TARGET else 'NOT met'}."
                )
            alerts, late = summary.get("alerts"), summary.get("late_events")
            print(f"{label}: {events:,} events, {late} late, alerts {alerts}", flush=True)
    out = [*lines, "", verdict]
    print("\n".join(out))
    if args.docs:
        write_docs(args.docs, out, "bench-core")
    return 0


if __name__ == "__main__":
    sys.exit(main())
