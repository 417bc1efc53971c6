"""Checkpoint size and the time to write and read it, for one shard of many stores.

A core takes `--days` of a simulated fleet (`--stores` stores, benchmarks/scenario.py), then its state
is turned into checkpoint objects (head, dedup runs, detector pieces) and back, in CPU time, best of
`--repeat`: what a shard pays at every checkpoint of a new owner (every piece encoded) and at a restore.
The objects are not sent anywhere: S3's own time is in the soak benchmark.

    python -m benchmarks.checkpoint_state [--stores 100] [--days 14] [--docs docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from benchmarks.detect import write_docs
from benchmarks.scenario import ScenarioConfig, generate
from processors.core import CoreConfig, ShardCore


def measure(stores: int, days: int, repeat: int, seed: int) -> dict[str, float]:
    _, lines = generate(ScenarioConfig(seed=seed, stores=stores, days=days, warmup_days=1))
    core = ShardCore(CoreConfig(archive=False))
    for i, line in enumerate(lines):
        core.apply(line.encode() if isinstance(line, str) else line, i)
        if i % 10_000 == 0:
            core.drain()
    core.drain()
    best_save = best_load = float("inf")
    parts = core.checkpoint_parts()
    for _ in range(repeat):
        core._pieces.clear()  # a new owner's first save: every detector encoded
        started = time.process_time()
        parts = core.checkpoint_parts()
        best_save = min(best_save, time.process_time() - started)
        started = time.process_time()
        ShardCore.from_parts(parts.head, parts.runs, parts.pieces)
        best_load = min(best_load, time.process_time() - started)
    pieces = sum(len(b) for b in parts.pieces.values())
    runs = sum(16 + r.nbytes for r in parts.runs.values())
    return {
        "events": len(lines),
        "head": len(parts.head),
        "pieces": pieces,
        "per_store": pieces / max(len(parts.pieces), 1),
        "runs": runs,
        "save_s": best_save,
        "load_s": best_load,
    }


def table(stores: int, days: int, repeat: int, m: dict[str, float]) -> list[str]:
    kib = 1024
    return [
        f"{stores} stores, {days} days ({m['events']:,.0f} events) in one core; CPU time, best of {repeat}.",
        "",
        "| head | detector pieces | per store | dedup runs | total | write (all pieces) | restore |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {m['head'] / kib:,.0f} KiB | {m['pieces'] / kib:,.0f} KiB | {m['per_store'] / kib:,.1f} KiB "
        f"| {m['runs'] / kib:,.0f} KiB | {(m['head'] + m['pieces'] + m['runs']) / kib / kib:,.1f} MiB "
        f"| {m['save_s']:.2f} s | {m['load_s']:.2f} s |",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stores", type=int, default=100)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1001)
    parser.add_argument("--docs", type=Path, help="write the table between the checkpoint-state markers")
    args = parser.parse_args(argv)
    m = measure(args.stores, args.days, args.repeat, args.seed)
    lines = table(args.stores, args.days, args.repeat, m)
    print("\n".join(lines))
    if args.docs:
        write_docs(args.docs, lines, "checkpoint-state")
    return 0


if __name__ == "__main__":
    sys.exit(main())
