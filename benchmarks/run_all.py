"""Every benchmark in one run (`make bench`), written to docs/benchmarks.md with the machine it ran on.

Sizes are cut so the whole run stays under 10 minutes: the detection benchmark on two seeds, the core
speed on the busy week once. End-to-end latency, the faust-streaming peer and the real KCL (failover,
events/s through one and two workers, the daemon's memory) run too; each benchmark
runs as its own process (its own CPU figures, its own embedded AWS, no shared state).
The producer load test runs against an embedded AWS started here, with the per-shard limit set below
what the embedded AWS sustains, so the figure shows the limiter, not the emulator.

    python -m benchmarks.run_all [--out docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from config import Settings
from foundation.aws.clients import aio_client, point_at
from foundation.aws.embedded import EmbeddedAws
from producers.loadtest import LoadtestResult, describe, ensure_stream, run_loadtest

BENCH_TIMEOUT_S = 240
KCL_TIMEOUT_S = 600
LOADTEST_SHARDS = 2
LOADTEST_LIMIT = 500  # records/s per shard: below the ~2,000/s the embedded AWS took here


def _module(name: str, *args: str, timeout: int = BENCH_TIMEOUT_S) -> tuple[str, float, int]:
    """Run ``python -m name args`` and return (its output, seconds, exit status)."""
    began = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-m", name, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"(stopped after {timeout} s)", time.perf_counter() - began, 1
    return done.stdout.strip(), time.perf_counter() - began, done.returncode


async def _loadtests() -> list[tuple[str, LoadtestResult]]:
    settings = Settings()
    results: list[tuple[str, LoadtestResult]] = []
    async with aio_client("kinesis", settings) as kinesis:
        runs = [
            ("saturate, limit 500 records/s per shard", None, LOADTEST_LIMIT),
            ("1,000 records/s offered, Kinesis's own limits", 1000.0, 1000),
        ]
        for i, (label, rate, limit) in enumerate(runs):
            stream = f"bench-loadtest-{i}"
            await ensure_stream(kinesis, stream, LOADTEST_SHARDS)
            result = await run_loadtest(
                kinesis,
                settings,
                stream,
                stores=16,
                rate=rate,
                duration_s=10.0,
                shard_records_per_s=limit,
                verify=True,
            )
            results.append((label, result))
    return results


def kept_sections(path: Path) -> str:
    """The sections other commands write into the same page (between their markers), kept as they are."""
    if not path.exists():
        return ""
    text = path.read_text(encoding="utf-8")
    start = text.find("\n## Restocking")
    end = text.find("<!-- bench-restock:end -->")
    return "" if start < 0 or end < 0 else text[start : end + len("<!-- bench-restock:end -->")] + "\n"


def _machine() -> str:
    return (
        f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    sections: list[str] = []
    status = 0

    with EmbeddedAws() as aws:
        point_at(aws.endpoint)
        loadtests = asyncio.run(_loadtests())
    rows = [
        "| run | records/s | quota used | PutRecords p50 / p95 / p99 ms | retries | throttles | failed | "
        "lost | CPU s / 10k |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, r in loadtests:
        rows.append(
            f"| {label} | {r.achieved_rps:,.0f} | {r.quota_fraction:.1%} | {r.put_latency_p50_ms} / "
            f"{r.put_latency_p95_ms} / {r.put_latency_p99_ms} | {r.retries} | {r.throttles} | {r.failed} | "
            f"{r.lost} | {r.cpu_s_per_10k:.3f} |"
        )
        print("\n".join(describe(r)), flush=True)
        if r.failed or r.lost:
            status = 1
    saturated = loadtests[0][1]
    sections += [
        "## Producer load test (embedded AWS)",
        "",
        f"{LOADTEST_SHARDS} shards, 16 stores, 10 s of putting, every record read back "
        "(`shelfstream loadtest --embedded`).",
        "",
        *rows,
        "",
        f"Saturating: {saturated.quota_fraction:.1%} of the shards' quota (target >= 95%: "
        f"{'met' if saturated.quota_fraction >= 0.95 else 'NOT met'}); zero lost records: "
        f"{'yes' if all(not r.lost and not r.failed for _, r in loadtests) else 'NO'}.",
        "",
        "Raw results: " + "; ".join(f"{label}: `{asdict(r)}`" for label, r in loadtests),
        "",
    ]

    # (title, module, arguments, whether its output is Markdown already rather than a log to fence)
    benches: list[tuple[str, str, list[str], bool]] = [
        (
            "End-to-end latency at 1,000 events/s (`python -m benchmarks.latency`)",
            "benchmarks.latency",
            ["--duration", "30", "--probes", "60"],
            True,
        ),
        (
            "Side by side with faust-streaming (`python -m benchmarks.faust_peer`)",
            "benchmarks.faust_peer",
            ["--events", "20000"],
            True,
        ),
        (
            "Core speed (`make bench-core`, busy week, one repeat)",
            "benchmarks.core_speed",
            ["--repeat", "1"],
            False,
        ),
        (
            "Detection (`make bench-detect`, seeds 1001 and 1002)",
            "benchmarks.detect",
            ["--seeds", "1001", "1002"],
            False,
        ),
    ]
    # The real KCL (Java daemon, kinesis-local): its own start-up waits need a longer bound.
    benches.append(
        (
            "The KCL MultiLangDaemon: throughput, failover, memory (`python -m benchmarks.kcl`)",
            "benchmarks.kcl",
            ["--events", "12000"],
            True,
        )
    )
    for title, name, bench_args, markdown in benches:
        output, seconds, code = _module(
            name, *bench_args, timeout=KCL_TIMEOUT_S if name == "benchmarks.kcl" else BENCH_TIMEOUT_S
        )
        print(output, flush=True)
        status = status or code
        body = [output] if markdown else ["```", output, "```"]
        sections += [f"## {title}", "", f"{seconds:.0f} s, exit status {code}.", "", *body, ""]

    total = time.perf_counter() - started
    header = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m benchmarks.run_all`); do not edit by hand.",
        "",
        f"Machine: {_machine()}. Whole run: {total:.0f} s.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    kept = kept_sections(args.out)  # written by their own commands (make bench-restock)
    args.out.write_text("\n".join(header + sections) + kept)
    print(f"wrote {args.out} ({total:.0f} s)", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
