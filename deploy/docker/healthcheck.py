#!/usr/bin/env python3
"""Container health check: is the running shelfstream command still making progress?

Long-running commands (``process``, ``dispatch``, ``simulate``, ``kcl-processor``) touch a heartbeat
file (``SHELFSTREAM_OPS__HEALTH_FILE``, default ``/tmp/shelfstream-health``) every few seconds while they
are healthy. A hung event loop stops touching it; this check then fails and ECS replaces the task.

Under the KCL MultiLangDaemon (``--idle-unless-running kcl-processor``) a worker that holds no
lease runs no record processor and writes no heartbeat, yet is healthy: so the heartbeat is only
required while a record processor has been running longer than ``--max-age``. Standard library
only: it runs in the image's Python with no imports from the app.

Exit status 0 healthy, 1 unhealthy (what Docker and ECS expect), with one line on stderr saying why.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HEALTH_FILE = "/tmp/shelfstream-health"
DEFAULT_MAX_AGE_S = 60.0


@dataclass(frozen=True)
class Verdict:
    healthy: bool
    reason: str


@dataclass(frozen=True)
class Proc:
    pid: int
    argv: tuple[str, ...]
    age_s: float


def heartbeat_age(path: Path, now: float) -> float | None:
    """Seconds since the heartbeat file was last touched; None when there is no file."""
    try:
        return max(0.0, now - path.stat().st_mtime)
    except FileNotFoundError:
        return None


def processes(proc_root: Path) -> Iterator[Proc]:
    """Every process visible in ``proc_root`` (``/proc``) with its argv and age in seconds."""
    try:
        uptime_s = float((proc_root / "uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for entry in proc_root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:  # the process ended while we looked
            continue
        argv = tuple(part.decode("utf-8", "replace") for part in raw.split(b"\0") if part)
        # Field 22 (starttime, in clock ticks since boot) counts from after the ")" closing comm.
        fields = stat.rsplit(")", 1)[-1].split()
        try:
            started_s = int(fields[19]) / ticks
        except (IndexError, ValueError):
            continue
        yield Proc(pid=int(entry.name), argv=argv, age_s=max(0.0, uptime_s - started_s))


def runs_subcommand(proc: Proc, subcommand: str) -> bool:
    """True for ``shelfstream <subcommand>`` however it was launched (console script or python -m)."""
    for i, arg in enumerate(proc.argv):
        if Path(arg).name == "shelfstream" or arg.endswith("shelfstream.cli"):
            return subcommand in proc.argv[i + 1 :]
    return False


def check(
    health_file: Path,
    max_age_s: float,
    now: float,
    idle_unless_running: str | None = None,
    procs: Sequence[Proc] = (),
) -> Verdict:
    age = heartbeat_age(health_file, now)
    if age is not None and age <= max_age_s:
        return Verdict(True, f"heartbeat {age:.0f}s old")
    if idle_unless_running is not None:
        workers = [p for p in procs if runs_subcommand(p, idle_unless_running)]
        if not workers:
            return Verdict(True, f"no {idle_unless_running} running (idle worker)")
        if all(p.age_s <= max_age_s for p in workers):
            return Verdict(True, f"{idle_unless_running} starting")
    if age is None:
        return Verdict(False, f"no heartbeat file at {health_file}")
    return Verdict(False, f"heartbeat {age:.0f}s old (limit {max_age_s:.0f}s) at {health_file}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    env = os.environ
    # The grouped name, else the flat one of earlier releases (as the app's settings read them).
    default = env.get("SHELFSTREAM_OPS__HEALTH_FILE") or env.get(
        "SHELFSTREAM_HEALTH_FILE", DEFAULT_HEALTH_FILE
    )
    parser.add_argument("--file", default=default)
    parser.add_argument("--max-age", type=float, default=DEFAULT_MAX_AGE_S, help="seconds (default 60)")
    parser.add_argument(
        "--idle-unless-running",
        metavar="SUBCOMMAND",
        help="healthy without a heartbeat while no `shelfstream SUBCOMMAND` process is running",
    )
    parser.add_argument("--proc", default="/proc", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    procs = list(processes(Path(args.proc))) if args.idle_unless_running else []
    verdict = check(Path(args.file), args.max_age, time.time(), args.idle_unless_running, procs)
    print(("healthy: " if verdict.healthy else "unhealthy: ") + verdict.reason, file=sys.stderr)
    return 0 if verdict.healthy else 1


if __name__ == "__main__":
    raise SystemExit(main())
