"""Every benchmark in one run (`make bench`), written to docs/benchmarks.md with the machine it ran on.

Sizes are cut so the whole run stays under 15 minutes: the engines side by side (ours, Bytewax,
Pathway; 5 runs of each on two files), end-to-end latency (1,000 probes at 1,000 events/s), the
detection benchmark on two seeds, and the real KCL (failover of a killed leader and of a killed
non-leader, events/s through one and two workers, the daemon's and a record processor's memory; its
three KCL applications run side by side, so the dead leader's 2-minute lock overlaps the rest). Each
runs as its own process (its own CPU figures, its own embedded AWS, no shared state). The top of the
page gives every section's time and status; a section that fails is named on stderr and the run
exits 1 after writing the page.
The producer load test runs against an embedded AWS started here, whose Kinesis enforces Kinesis's
per-shard limits (foundation/aws/kinesis_limits.py): once with the writer's own per-shard limiter, once
without it, so Kinesis throttles and the writer's retries and back-off are what is measured.

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
from dataclasses import asdict, dataclass
from pathlib import Path

from config import Settings
from foundation.aws.clients import aio_client, point_at
from foundation.aws.embedded import EmbeddedAws
from producers.loadtest import LoadtestResult, describe, ensure_stream, run_loadtest

BENCH_TIMEOUT_S = 600
ENGINES_TIMEOUT_S = 1800
KCL_TIMEOUT_S = 600
# Runs per engine and file, as the engines benchmark does on its own: medians of 5.
ENGINE_RUNS = 5
LOADTEST_ATTEMPTS = 20  # calls one batch may take before its records are dead-lettered (and so lost)


@dataclass
class Section:
    """One section of the run: its title, how long it took, and why it failed (empty if it did not)."""

    title: str
    seconds: float
    failure: str = ""


def _module(name: str, *args: str, timeout_s: int = BENCH_TIMEOUT_S) -> tuple[str, float, int, str]:
    """Run ``python -m name args``: (its output, seconds, exit status, its last error line)."""
    began = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-m", name, *args],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return (
            f"(stopped after {timeout_s} s)",
            time.perf_counter() - began,
            1,
            f"stopped after {timeout_s} s",
        )
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    return done.stdout.strip(), time.perf_counter() - began, done.returncode, errors[-1] if errors else ""


def _failed(section: Section) -> None:
    print(f"make bench: section FAILED: {section.title}: {section.failure}", file=sys.stderr, flush=True)


def section_table(sections: list[Section], total: float) -> list[str]:
    """The top of the page: every section's time and status, then the whole run's."""
    rows = ["| section | seconds | status |", "| --- | ---: | --- |"]
    for section in sections:
        status = f"FAILED: {section.failure}" if section.failure else "ok"
        rows.append(f"| {section.title} | {section.seconds:.0f} | {status} |")
    rows.append(f"| whole run | {total:.0f} | {sum(1 for s in sections if s.failure)} failed |")
    return rows


async def _loadtests() -> list[tuple[str, LoadtestResult]]:
    settings = Settings()
    results: list[tuple[str, LoadtestResult]] = []
    async with aio_client("kinesis", settings) as kinesis:
        # (label, shards, offered rate or None to saturate, the writer's own per-shard limiter on).
        # Without the limiter one shard is used: the embedded AWS takes about two shards' quota at
        # most, so one shard is what a writer can surely push past its quota.
        runs: list[tuple[str, int, float | None, bool]] = [
            ("2 shards, saturate, the writer's per-shard limiter at Kinesis's quota", 2, None, True),
            (
                "1 shard, saturate, no client-side limiter: Kinesis throttles, the writer backs off",
                1,
                None,
                False,
            ),
            ("2 shards, 1,000 records/s offered", 2, 1000.0, True),
        ]
        for i, (label, shards, rate, limiter) in enumerate(runs):
            stream = f"bench-loadtest-{i}"
            await ensure_stream(kinesis, stream, shards)
            result = await run_loadtest(
                kinesis,
                settings,
                stream,
                stores=16,
                rate=rate,
                duration_s=10.0,
                verify=True,
                limiter=limiter,
                max_attempts=LOADTEST_ATTEMPTS,
            )
            results.append((label, result))
    return results


def kept_sections(path: Path) -> str:
    """The sections other commands write into the same page (`make bench-restock`, `-soak`, `-warm`),
    kept as they are: each from its heading (or its begin marker) to its end marker."""
    if not path.exists():
        return ""
    text = path.read_text(encoding="utf-8")
    kept: list[str] = []
    for heading, name in (("\n## Restocking", "bench-restock"), ("", "bench-soak"), ("", "bench-warm")):
        begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
        start = text.find(heading) if heading else text.find(begin)
        stop = text.find(end)
        if start >= 0 and stop >= 0:
            kept.append(text[start : stop + len(end)].strip("\n"))
    return "".join(f"\n{section}\n" for section in kept)


def _loadtest_section(
    title: str, section: Section, rows: list[str], loadtests: list[tuple[str, LoadtestResult]]
) -> list[str]:
    limited, unlimited = loadtests[0][1], loadtests[1][1]
    return [
        f"## {title}",
        "",
        f"{section.seconds:.0f} s, {'FAILED: ' + section.failure if section.failure else 'ok'}.",
        "",
        "Quota 1,000 records/s per shard, 16 stores, 10 s of putting, "
        "every record read back (`shelfstream loadtest --embedded [--no-limiter]`). The embedded Kinesis "
        "refuses entries over 1,000 records/s or 1 MiB/s per shard with "
        "ProvisionedThroughputExceededException, as Kinesis does; the writer retries only the refused "
        f"entries, with exponential back-off and full jitter, up to {LOADTEST_ATTEMPTS} calls per batch.",
        "",
        *rows,
        "",
        f"With its limiter the writer reaches {limited.quota_fraction:.1%} of the quota with "
        f"{limited.throttles:,} throttled entries; without it, {unlimited.quota_fraction:.1%} with "
        f"{unlimited.throttles:,} throttled entries, retried after {unlimited.backoffs:,} back-off waits. "
        f"Records lost: {'none' if all(not r.lost and not r.failed for _, r in loadtests) else 'SOME'}.",
        "",
        "Raw results: " + "; ".join(f"{label}: `{asdict(r)}`" for label, r in loadtests),
        "",
    ]


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
    timed: list[Section] = []

    load_title = "Producer load test (embedded AWS, Kinesis's per-shard limits enforced)"
    began = time.perf_counter()
    try:
        with EmbeddedAws(kinesis_limits=True) as aws:
            point_at(aws.endpoint)
            loadtests = asyncio.run(_loadtests())
    except Exception as exc:  # the other sections still run; the run fails at the end
        timed.append(Section(load_title, time.perf_counter() - began, f"{type(exc).__name__}: {exc}"))
        _failed(timed[-1])
        loadtests = []
    else:
        lost = [label for label, r in loadtests if r.failed or r.lost]
        timed.append(
            Section(
                load_title, time.perf_counter() - began, f"records lost in: {'; '.join(lost)}" if lost else ""
            )
        )
        if lost:
            _failed(timed[-1])
    rows = [
        "| run | records/s | of the shards' quota | PutRecords p50 / p95 / p99 ms | throttled entries | "
        "retried entries | back-off waits, s | most calls for a batch | lost | CPU s / 10k |",
        "| --- | ---: | ---: | --- | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for label, r in loadtests:
        rows.append(
            f"| {label} | {r.achieved_rps:,.0f} | {r.quota_fraction:.1%} | {r.put_latency_p50_ms} / "
            f"{r.put_latency_p95_ms} / {r.put_latency_p99_ms} | {r.throttles:,} | {r.retries:,} | "
            f"{r.backoffs:,}, {r.backoff_s:.1f} | {r.most_attempts} | {r.lost} | {r.cpu_s_per_10k:.3f} |"
        )
        print("\n".join(describe(r)), flush=True)
    if loadtests:
        sections += _loadtest_section(load_title, timed[-1], rows, loadtests)
    else:
        sections += [f"## {load_title}", "", f"{timed[-1].seconds:.0f} s, FAILED: {timed[-1].failure}", ""]

    # (title, module, arguments, whether its output is Markdown already rather than a log to fence)
    benches: list[tuple[str, str, list[str], bool]] = [
        (
            "End-to-end latency at 1,000 events/s, default settings (`python -m benchmarks.latency`)",
            "benchmarks.latency",
            ["--duration", "30", "--probes", "1000"],
            True,
        ),
        (
            f"Speed: our core, Bytewax and Pathway on the same job (`python -m benchmarks.engines --runs "
            f"{ENGINE_RUNS}`)",
            "benchmarks.engines",
            ["--runs", str(ENGINE_RUNS)],
            True,
        ),
        (
            "Where the core's time goes (`python -m benchmarks.profile_core`, also in "
            "benchmarks/core-speed-experiments.md)",
            "benchmarks.profile_core",
            ["--docs", "benchmarks/core-speed-experiments.md"],
            True,
        ),
        (
            "Detection (`make bench-detect`, seeds 1001 and 1002)",
            "benchmarks.detect",
            ["--seeds", "1001", "1002", "--docs", "docs/detection.md"],
            False,
        ),
    ]
    # The real KCL (Java daemon, kinesis-local): its own start-up waits need a longer bound.
    benches.append(
        (
            "The KCL MultiLangDaemon: throughput, failover, memory (`python -m benchmarks.kcl`)",
            "benchmarks.kcl",
            [],
            True,
        )
    )
    for title, name, bench_args, markdown in benches:
        limits = {"benchmarks.engines": ENGINES_TIMEOUT_S, "benchmarks.kcl": KCL_TIMEOUT_S}
        limit = limits.get(name, BENCH_TIMEOUT_S)
        print(f"make bench: {title} ...", file=sys.stderr, flush=True)
        output, seconds, code, last_error = _module(name, *bench_args, timeout_s=limit)
        print(output, flush=True)
        failure = f"exit status {code}" + (f": {last_error}" if last_error else "") if code else ""
        timed.append(Section(title, seconds, failure))
        if failure:
            _failed(timed[-1])
        body = [output] if markdown else ["```", output, "```"]
        verdict = f"FAILED, {failure}" if failure else "exit status 0"
        sections += [f"## {title}", "", f"{seconds:.0f} s, {verdict}.", "", *body, ""]

    total = time.perf_counter() - started
    header = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m benchmarks.run_all`); do not edit by hand.",
        "",
        f"Machine: {_machine()}. Run on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"whole run: {total:.0f} s.",
        "",
        *section_table(timed, total),
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    kept = kept_sections(args.out)  # written by their own commands (make bench-restock)
    args.out.write_text("\n".join(header + sections) + kept)
    print(f"wrote {args.out} ({total:.0f} s)", flush=True)
    failed = [section for section in timed if section.failure]
    if failed:
        print(
            f"make bench: FAILED: {len(failed)} of {len(timed)} sections: "
            + "; ".join(f"{section.title}: {section.failure}" for section in failed),
            file=sys.stderr,
            flush=True,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
