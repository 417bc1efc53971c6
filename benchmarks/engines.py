"""Speed side by side: our core against Bytewax and Pathway, each a whole process on the same files.

The job every engine runs (benchmarks/peers/job.py): decode JSON lines, validate, drop repeated
(store_id, event_id), per-store 15-minute tumbling windows (2 minutes of allowed lateness) of sales,
units, revenue, refunds and refunded amount, and stock per store and product. Ours runs it as
`shelfstream backtest --detector off` with the hourly window off (SHELFSTREAM_WINDOWS__HOPPING_S=0)
and the catalog's threshold rule for restocking (SHELFSTREAM_RESTOCK__POLICY=threshold: the peers
forecast no demand; ours still raises the threshold's requests and alerts, which they do not);
it also runs the whole core (both windows, the detector, alerts), with one worker and with
`--workers 2`.

Every engine runs as its own process, `--runs` times (5) per file, and the figures are medians of
the runs: CPU seconds (user + system of the process and its children, from wait4), wall seconds,
peak memory (the largest resident set of one process, through GNU time's %M), events per second
of CPU (per core) and of wall. The outputs of every peer are compared with ours (windows and final
stock). The whole core's own rate (events over the CPU time of `backtest` itself, without the
interpreter's start and imports) is given too, against its target of 250,000 events/s.

    python -m benchmarks.engines [--runs 5] [--docs docs/benchmarks.md] [--json FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import orjson

from benchmarks.scenario import ScenarioConfig, write
from foundation.contract import parse_ts

# Four busy days of 16 supermarket-sized stores, and two weeks of 12 small ones (the detector
# warmed up after the first week).
FILES: dict[str, ScenarioConfig] = {
    "busy days (16 large stores, 4 days)": ScenarioConfig(
        seed=7, stores=16, days=4, warmup_days=4, size_scale=5.0
    ),
    "two weeks (12 small stores, 14 days)": ScenarioConfig(seed=8, stores=12, days=14, warmup_days=7),
}
CORE_TARGET = 250_000
PEER_FACTOR = 1.5
WORKERS_TARGET = 1.8
TIME = shutil.which("time", path="/usr/bin:/bin") or "/usr/bin/time"  # GNU time, for peak memory
MONEY_TOLERANCE = 0.011  # revenue is rounded to cents in our window records


@dataclass
class Engine:
    key: str
    label: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    comparable: bool = True  # does the same job (its outputs are compared)


@dataclass
class Figures:
    engine: str
    label: str
    file: str
    events: int
    runs: int
    cpu_s: float
    wall_s: float
    peak_rss_mb: float
    events_per_cpu_s: float
    events_per_wall_s: float
    failures: int
    core_cpu_s: float | None = None  # ours: CPU time of backtest itself (no start-up, no imports)
    compare: str = ""


def _engines(events: Path, out: Path) -> list[Engine]:
    py = sys.executable
    cli = [py, "-m", "shelfstream.cli", "--log-level", "WARNING", "backtest", str(events)]
    same_job = {"SHELFSTREAM_WINDOWS__HOPPING_S": "0", "SHELFSTREAM_RESTOCK__POLICY": "threshold"}
    return [
        Engine(
            "ours-job",
            "shelfstream, the same job (`backtest --detector off`, 15-min windows, threshold restock rule)",
            [*cli, "--out", str(out / "ours-job"), "--detector", "off"],
            same_job,
        ),
        Engine(
            "bytewax",
            "Bytewax 0.21 (dataflow, one worker)",
            [py, "-m", "benchmarks.peers.bytewax_job", str(events), str(out / "bytewax")],
        ),
        Engine(
            "pathway",
            "Pathway 0.33 (static mode)",
            [py, "-m", "benchmarks.peers.pathway_job", str(events), str(out / "pathway")],
        ),
        Engine(
            "ours-core",
            "shelfstream, whole core (`backtest`: 15-min and hourly windows, detection, forecast, alerts)",
            [*cli, "--out", str(out / "ours-core")],
            comparable=False,
        ),
        Engine(
            "ours-core-2",
            "shelfstream, whole core, `backtest --workers 2`",
            [*cli, "--out", str(out / "ours-core-2"), "--workers", "2"],
            comparable=False,
        ),
        # The machine's own ceiling for two workers: two independent one-worker runs at once (twice
        # the events). Two busy processes on these cores each run slower than one alone.
        Engine(
            "ours-pair",
            "two one-worker whole-core backtests at once (the machine's ceiling for 2 workers)",
            [
                "/bin/sh",
                "-c",
                " ".join(shlex.quote(a) for a in [*cli, "--out", str(out / "ours-pair-a")])
                + " & "
                + " ".join(shlex.quote(a) for a in [*cli, "--out", str(out / "ours-pair-b")])
                + " & wait",
            ],
            comparable=False,
        ),
    ]


def _run_once(engine: Engine, log: Path) -> tuple[float, float, float, int]:
    """(CPU s, wall s, peak RSS MB, exit status) of one run of the engine as a process.

    CPU comes from wait4 (the process and the children it waited for). Peak memory does not: a
    child's maxrss starts at its parent's size at fork, and this process holds the generated files,
    so the engine is started by GNU time (a process of a few MB) and its %M is read instead."""
    env = {**os.environ, **engine.env, "PYTHONHASHSEED": "0"}
    rss_file = log.with_suffix(".rss")
    argv = [TIME, "-f", "%M", "-o", str(rss_file), *engine.argv]
    with log.open("ab") as err:
        began = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - began
    proc.returncode = os.waitstatus_to_exitcode(status)
    lines = rss_file.read_text().split() if rss_file.exists() else []
    rss_mb = int(lines[-1]) / 1024 if lines and lines[-1].isdigit() else float("nan")
    return usage.ru_utime + usage.ru_stime, wall, rss_mb, proc.returncode


def _ours_windows(path: Path) -> dict[tuple[str, int], tuple[float, ...]]:
    result = {}
    for line in path.read_bytes().splitlines():
        w = orjson.loads(line)
        if w["kind"] != "tumbling" or (w["lines"] == 0 and w["refund_lines"] == 0):
            continue
        key = (w["store_id"], parse_ts(w["window_start"]))
        result[key] = (w["lines"], w["units"], w["revenue"], w["refund_lines"], w["refund_amount"])
    return result


def _peer_windows(path: Path) -> dict[tuple[str, int], tuple[float, ...]]:
    result = {}
    for line in path.read_bytes().splitlines():
        w = orjson.loads(line)
        if w["sales"] == 0 and w["refunds"] == 0:
            continue
        key = (w["store_id"], int(w["start_ms"]))
        result[key] = (w["sales"], w["units"], w["revenue"], w["refunds"], w["refund_amount"])
    return result


def _same(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return (
        a[0] == b[0]
        and a[1] == b[1]
        and a[3] == b[3]
        and abs(a[2] - b[2]) <= MONEY_TOLERANCE
        and abs(a[4] - b[4]) <= MONEY_TOLERANCE
    )


def compare(ours_dir: Path, peer_dir: Path) -> str:
    """One sentence: how the peer's windows and stock compare with ours."""
    ours, theirs = _ours_windows(ours_dir / "windows.jsonl"), _peer_windows(peer_dir / "windows.jsonl")
    both = ours.keys() & theirs.keys()
    equal = sum(_same(ours[k], theirs[k]) for k in both)
    differ = [k for k in both if not _same(ours[k], theirs[k])]
    sales_gap = sum(theirs[k][0] - ours[k][0] + theirs[k][3] - ours[k][3] for k in differ)
    stock_ours = _flat(orjson.loads((ours_dir / "inventory.json").read_bytes()))
    stock_theirs = _flat(orjson.loads((peer_dir / "inventory.json").read_bytes()))
    # Products never moved (only a catalog entry) have no stock line in a peer: compare what both hold.
    common = stock_ours.keys() & stock_theirs.keys()
    stock_equal = sum(stock_ours[k] == stock_theirs[k] for k in common)
    text = (
        f"windows: {equal:,} of {len(ours):,} identical"
        + (f", {len(differ)} differ ({sales_gap:+d} sale and refund events in them)" if differ else "")
        + (f", {len(ours.keys() - theirs.keys())} only ours" if ours.keys() - theirs.keys() else "")
        + (f", {len(theirs.keys() - ours.keys())} only theirs" if theirs.keys() - ours.keys() else "")
        + f"; stock: {stock_equal:,} of {len(common):,} identical"
    )
    moved_only_ours = {k for k in stock_ours.keys() - stock_theirs.keys() if stock_ours[k] != 0}
    if stock_theirs.keys() - stock_ours.keys() or moved_only_ours:
        text += f", {len(stock_theirs.keys() ^ stock_ours.keys())} products in one only"
    return text


def _flat(inventory: dict[str, dict[str, int]]) -> dict[tuple[str, str], int]:
    return {(s, p): n for s, products in inventory.items() for p, n in products.items()}


def measure(label: str, events: Path, work: Path, runs: int, log: Path) -> list[Figures]:
    n_events = sum(1 for _ in events.open("rb"))
    out = work / "out"
    figures: list[Figures] = []
    engines = _engines(events, out)
    samples: dict[str, list[tuple[float, float, float, int]]] = {e.key: [] for e in engines}
    core_cpu: dict[str, list[float]] = {e.key: [] for e in engines}
    # Engines take turns run by run, so a noisy moment of the machine hits them all alike.
    for _ in range(runs):
        for engine in engines:
            shutil.rmtree(out / engine.key, ignore_errors=True)
            samples[engine.key].append(_run_once(engine, log))
            summary = out / engine.key / "summary.json"
            if summary.exists():
                core_cpu[engine.key].append(float(orjson.loads(summary.read_bytes())["cpu_seconds"]))
    for engine in engines:
        rows = samples[engine.key]
        own = core_cpu[engine.key]
        cpu = statistics.median(r[0] for r in rows)
        wall = statistics.median(r[1] for r in rows)
        done = 2 * n_events if engine.key == "ours-pair" else n_events
        figures.append(
            Figures(
                engine=engine.key,
                label=engine.label,
                file=label,
                events=done,
                runs=runs,
                cpu_s=round(cpu, 3),
                wall_s=round(wall, 3),
                peak_rss_mb=round(statistics.median(r[2] for r in rows), 1),
                events_per_cpu_s=round(done / cpu),
                events_per_wall_s=round(done / wall),
                failures=sum(r[3] != 0 for r in rows),
                core_cpu_s=round(statistics.median(own), 3) if own else None,
            )
        )
    for f in figures:
        if f.engine in ("bytewax", "pathway") and not f.failures:
            f.compare = compare(out / "ours-job", out / f.engine)
    return figures


def machine() -> str:
    return (
        f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )


def report(all_figures: list[Figures]) -> tuple[list[str], bool]:
    lines = [
        "| file | engine | CPU s | wall s | peak RSS MB | events/s per core (CPU) | events/s (wall) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for f in all_figures:
        failed = f" ({f.failures} runs failed)" if f.failures else ""
        lines.append(
            f"| {f.file}, {f.events:,} events | {f.label}{failed} | {f.cpu_s:.2f} | {f.wall_s:.2f} | "
            f"{f.peak_rss_mb:,.0f} | {f.events_per_cpu_s:,} | {f.events_per_wall_s:,} |"
        )
    lines += ["", "Outputs against ours on the same job:", ""]
    for f in all_figures:
        if f.compare:
            lines.append(f"- {f.file}, {f.label}: {f.compare}.")
    lines += ["", "Targets:", ""]
    met_all = True
    for file in dict.fromkeys(f.file for f in all_figures):
        rows = {f.engine: f for f in all_figures if f.file == file}
        ours = rows["ours-job"]
        peers = [rows[k] for k in ("bytewax", "pathway") if k in rows and not rows[k].failures]
        if peers:
            best = max(peers, key=lambda f: f.events_per_cpu_s)
            ratio = ours.events_per_cpu_s / best.events_per_cpu_s
            ok = ratio >= PEER_FACTOR
            met_all &= ok
            lines.append(
                f"- {file}: same job, ours {ours.events_per_cpu_s:,} events/s per core against "
                f"{best.label.split(' (')[0]} {best.events_per_cpu_s:,}: {ratio:.2f}x "
                f"(target >= {PEER_FACTOR}x: {'met' if ok else 'NOT met'})."
            )
        core = rows["ours-core"]
        if core.core_cpu_s:
            rate = core.events / core.core_cpu_s
            ok = rate >= CORE_TARGET
            met_all &= ok
            lines.append(
                f"- {file}: whole core {rate:,.0f} events/s of backtest's own CPU time "
                f"({core.events_per_cpu_s:,}/s for the whole process, start-up and imports included; "
                f"target >= {CORE_TARGET:,}: {'met' if ok else 'NOT met'})."
            )
        two = rows.get("ours-core-2")
        if two is not None:
            speedup = core.wall_s / two.wall_s
            ok = speedup >= WORKERS_TARGET
            if file == next(iter(FILES)):
                met_all &= ok
            pair = rows.get("ours-pair")
            ceiling = (
                f"; two independent one-worker runs at once do {2 * core.wall_s / pair.wall_s:.2f}x "
                "the work of one in the same time, this machine's ceiling for two workers"
                if pair is not None and pair.wall_s > 0
                else ""
            )
            lines.append(
                f"- {file}: `--workers 2` {speedup:.2f}x the wall-clock speed of one worker "
                f"(target >= {WORKERS_TARGET}x on the large file: "
                f"{'met' if ok else 'NOT met'}; CPU {two.cpu_s / core.cpu_s:.2f}x of one worker's{ceiling})."
            )
    return lines, met_all


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--files", nargs="+", choices=list(FILES), default=list(FILES))
    parser.add_argument("--events", type=Path, help="one JSON-lines file instead of the generated ones")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    parser.add_argument("--docs", type=Path, help="write the table between the bench-engines markers")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    figures: list[Figures] = []
    with tempfile.TemporaryDirectory(prefix="shelfstream-engines-") as tmp:
        work = Path(tmp)
        log = work / "stderr.log"
        inputs: list[tuple[str, Path]] = []
        if args.events is not None:
            inputs.append((args.events.name, args.events))
        else:
            for label in args.files:
                folder = work / f"file-{len(inputs)}"
                write(FILES[label], folder)
                inputs.append((label, folder / "events.jsonl"))
        for label, path in inputs:
            figures += measure(label, path, work / f"run-{label[:4]}", args.runs, log)
            print(f"{label}: done ({time.perf_counter() - began:.0f} s)", file=sys.stderr, flush=True)
        if any(f.failures for f in figures):
            print(log.read_text(errors="replace")[-3000:], file=sys.stderr)
    lines, _met = report(figures)
    out = [
        f"Machine: {machine()}. {args.runs} runs per engine and file, medians; "
        f"`python -m benchmarks.engines`, {time.perf_counter() - began:.0f} s.",
        "",
        *lines,
    ]
    print("\n".join(out))
    if args.json:
        args.json.write_bytes(orjson.dumps([asdict(f) for f in figures], option=orjson.OPT_INDENT_2))
    if args.docs:
        from benchmarks.detect import write_docs

        write_docs(args.docs, out, "bench-engines")
    return 1 if any(f.failures for f in figures) else 0


if __name__ == "__main__":
    sys.exit(main())
