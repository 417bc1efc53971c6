"""Detector time per closed window against the number of stores in one core.

A core closes every store's windows at once, and the monitor judges them one by one: nothing a
window does may cost more because more stores share the core (docs/deploy.md puts 250 stores on a
shard). The monitor is fed the windows a core would close (15-minute windows and the hourly ones
every 15 minutes, each store's sales drawn from a day shape with Poisson noise, a week of them in
the stores' own zones), and only `AnomalyMonitor.window_closed` is timed, in CPU time, best of
`--repeat` runs: the same days and the same detectors for 10, 100 and 1,000 stores.

    python -m benchmarks.detect_scale [--stores 10 100 1000] [--days 8] [--docs docs/detection.md]

Target: per-window time at 1,000 stores within 1.5x of 10 stores.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections import Counter
from pathlib import Path

from benchmarks.detect import write_docs
from foundation.timeunits import DAY_MS, HOUR_MS, MINUTE_MS
from processors.core import CoreConfig
from processors.core.detectors import DetectorConfig
from processors.core.effects import Effects
from processors.core.monitor import AnomalyMonitor
from processors.core.windows import WindowResult

SLOT_MS = 15 * MINUTE_MS
T0 = 1_785_715_200_000  # 2026-08-03T00:00:00Z, a Monday
ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney")
TARGET = 1.5


def _poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    if mean > 30:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _shape(local_hour: float, weekday: int) -> float:
    """Sales per 15 minutes at a local hour: open 9-20 (10-18 on Sundays), a lunch peak."""
    open_, close = (10, 18) if weekday == 6 else (9, 20)
    if not open_ <= local_hour < close:
        return 0.0
    lunch = 6.0 * math.exp(-((local_hour - 12.5) ** 2) / 2.0)
    return 4.0 + lunch + 3.0 * math.exp(-((local_hour - 17.5) ** 2))


def measure(stores: int, days: int, seed: int) -> tuple[float, int, int]:
    """(CPU seconds in window_closed, windows judged, anomaly alerts) for one run."""
    rng = random.Random(seed)
    config = CoreConfig(archive=False, detection=DetectorConfig())
    specs = config.window_specs()
    monitor = AnomalyMonitor(config.detection, specs)
    short, long_ = specs[0], specs[1]
    ids = [f"store-{i:04d}" for i in range(stores)]
    offsets = {}
    for i, store in enumerate(ids):
        zone = ZONES[i % len(ZONES)]
        monitor.set_zone(store, zone)
        offsets[store] = {"UTC": 0, "Europe/Berlin": 2, "America/New_York": -4, "Asia/Tokyo": 9}.get(zone, 10)
    size = {s: rng.uniform(0.5, 2.0) for s in ids}
    recent: dict[str, list[tuple[int, float]]] = {s: [] for s in ids}
    out = Effects()
    alerts: Counter[str] = Counter()
    spent = 0.0
    judged = 0
    for slot in range(days * 96):
        start = T0 + slot * SLOT_MS
        batch: list[WindowResult] = []
        for store in ids:
            local = start + offsets[store] * HOUR_MS
            hour = (local % DAY_MS) / HOUR_MS
            weekday = ((local // DAY_MS) + 3) % 7
            sales = _poisson(rng, size[store] * _shape(hour, weekday))
            revenue = sales * 12.5
            batch.append(
                WindowResult(store, short, start, start + SLOT_MS, sales, sales, sales, revenue, 0, 0, 0, 0.0)
            )
            window = recent[store]
            window.append((sales, revenue))
            del window[:-4]
            if len(window) == 4:
                total = sum(s for s, _ in window)
                batch.append(
                    WindowResult(
                        store,
                        long_,
                        start + SLOT_MS - long_.size_ms,
                        start + SLOT_MS,
                        total,
                        total,
                        total,
                        sum(r for _, r in window),
                        0,
                        0,
                        0,
                        0.0,
                    )
                )
        began = time.process_time()
        for w in batch:
            monitor.window_closed(w, out, alerts, {})
        spent += time.process_time() - began
        judged += len(batch)
        out = Effects()
    return spent, judged, alerts["anomaly"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stores", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--days", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--docs", type=Path, help="write the table into this Markdown file")
    args = parser.parse_args(argv)
    rows = []
    per_window: dict[int, float] = {}
    for n in args.stores:
        best: tuple[float, int, int] | None = None
        for _ in range(args.repeat):
            got = measure(n, args.days, args.seed)
            if best is None or got[0] < best[0]:
                best = got
        assert best is not None
        spent, judged, anomalies = best
        per_window[n] = spent / judged * 1e6
        rows.append((n, judged, spent, per_window[n], anomalies))
        print(f"{n} stores: {judged:,} windows, {per_window[n]:.1f} us a window", flush=True)
    base = per_window[min(per_window)]
    lines = [
        "| stores in the core | windows judged | CPU s | us per window | vs fewest | anomalies |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for n, judged, spent, us, anomalies in rows:
        lines.append(f"| {n:,} | {judged:,} | {spent:.2f} | {us:.1f} | {us / base:.2f}x | {anomalies} |")
    worst = max(per_window.values()) / base
    verdict = "met" if worst <= TARGET else "NOT met"
    lines += [
        "",
        f"{args.days} days, best of {args.repeat} runs, the same seed for every size. Target: per-window "
        f"time at the most stores within {TARGET}x of the fewest: {verdict} ({worst:.2f}x).",
    ]
    print("\n" + "\n".join(lines))
    if args.docs:
        write_docs(args.docs, lines, marker="bench-scale")
    return 0 if worst <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
