"""The real KCL on this machine: failover time, events/s through one worker and through two, memory.

The Java MultiLangDaemon (KCL 3.1.3) leases kinesis-local's shards through the embedded AWS's DynamoDB
and runs one `shelfstream kcl-processor` per leased shard; effects and snapshots go to the embedded AWS
(shelfstream/kcl_local.py sets it up, as for `shelfstream kcl-worker --local`). Three KCL applications
(each its own stream of 4 shards) run side by side, so the two minutes a dead leader's lock takes to
expire are spent measuring the rest:

- "leader": two workers; once one leads and every lease is held, the leader is killed;
- "one worker" and "two workers": throughput. A burst of events put while the workers already hold
  every lease, timed from the first put until the S3 snapshots hold exactly the independent ledger's
  stock (so it includes the last checkpoint, at most SHELFSTREAM_CHECKPOINTS__EVERY_S = 1 s late);
- "two workers" then loses its non-leader to SIGKILL; a third, idle worker of that application
  takes its leases.

Failover is measured from the kill (SIGKILL to launcher, daemon and processors, while events keep
coming) until the survivor's daemon found each of the dead worker's leases assigned to it (its log),
until its record processor there started, and until that stored its first checkpoint (processing
again). Every daemon runs the
deployed lease settings (deploy/kcl/shelfstream.properties: failoverTimeMillis,
leaseAssignmentIntervalMillis), except two things that keep each run to the worker count it states:
variance balancing is off, and the two-worker application lets a worker hold at most 2 leases (so
its two workers hold 2 each, and the leader cannot take the killed worker's). Memory: resident set
of each Java daemon and of each record processor, sampled during the bursts (peak).

    python -m benchmarks.kcl [--events 8000] [--json FILE] [--docs FILE] [--logs DIR]
                             [--set leaseAssignmentIntervalMillis=20000]     Markdown on stdout
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import orjson

from config import Settings
from foundation.aws.embedded import EmbeddedAws
from foundation.aws.provision import provision
from foundation.contract import format_ts
from processors.checkpoints import load_all_sync
from shelfstream.kcl_local import JAR_DIR, KCL_DIR, KclWorker, check_jars, kinesis_local, rss_bytes

T0 = 1_785_571_200_000
SHARDS = 4
STORES = 64
WAIT_S = 120.0
LEADER_WAIT_S = 300.0  # the leader's lock alone lasts 120 s (KCL 3.1.3, fixed)
# The lease settings the deployed daemon runs with, read from its properties file.
LEASE_KEYS = ("failoverTimeMillis", "leaseAssignmentIntervalMillis")
# Variance balancing off: a run keeps the workers it states (failover assigns expired leases, which
# is not balancing and happens at every assignment run).
NO_BALANCING = {"varianceBalancingFrequency": "1000000"}


def deployed_lease_settings(path: Path = KCL_DIR / "shelfstream.properties") -> dict[str, str]:
    found: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() in LEASE_KEYS:
            found[key.strip()] = value.strip()
    missing = set(LEASE_KEYS) - set(found)
    if missing:
        raise RuntimeError(f"{path} sets no {', '.join(sorted(missing))}")
    return found


@dataclass
class Run:
    label: str
    workers: int
    events: int
    seconds: float
    events_per_s: float
    java_rss_mib: list[float] = field(default_factory=list)
    processor_rss_mib: float = 0.0
    processors: int = 0


@dataclass
class Failover:
    killed: str
    shards_moved: int
    assigned_s: list[float]
    lease_taken_s: list[float]
    processing_again_s: list[float]


class Bench:
    """The embedded AWS and kinesis-local, shared by every application of the run."""

    def __init__(self, aws: EmbeddedAws, kinesis_endpoint: str, workdir: Path) -> None:
        self.aws = aws
        self.kinesis_endpoint = kinesis_endpoint
        self.workdir = workdir
        self.env = {
            "AWS_ENDPOINT_URL": aws.endpoint,
            "AWS_ENDPOINT_URL_KINESIS": kinesis_endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        os.environ.update(self.env)
        self.kinesis = boto3.client("kinesis")
        self.s3 = boto3.client("s3")
        self.ddb = boto3.client("dynamodb")
        self.lease_settings = deployed_lease_settings()

    @contextlib.contextmanager
    def app(self, label: str, properties: dict[str, str] | None = None) -> Iterator[App]:
        app = App(self, label, {**self.lease_settings, **NO_BALANCING, **(properties or {})})
        try:
            yield app
        finally:
            app.close()


class App:
    """One KCL application (lease table) over its own 4-shard stream, its workers and its ledger."""

    def __init__(self, bench: Bench, label: str, properties: dict[str, str]) -> None:
        uid = uuid.uuid4().hex[:10]
        self.bench = bench
        self.label = label
        self.properties = properties
        self.settings = Settings(
            aws={
                "stream_name": f"bench-{uid}-events",
                "bucket": f"bench-{uid}",
                "archive_firehose": f"bench-{uid}-archive",
                "windows_firehose": f"bench-{uid}-windows",
                "alerts_firehose": f"bench-{uid}-alerts-archive",
                "alerts_topic": f"bench-{uid}-alerts",
                "restock_queue": f"bench-{uid}-restock",
                "restock_dlq": f"bench-{uid}-restock-dlq",
                "alerts_queue": f"bench-{uid}-alerts-inbox",
                "incoming_queue": f"bench-{uid}-incoming",
                "shard_count": SHARDS,
            },
            api={"dashboard_queue": f"bench-{uid}-alerts-inbox-dashboard"},
            checkpoints={"every_s": 1.0},
        )
        provision(self.settings)
        self.application = f"bench-{uid}"
        self.workers: list[KclWorker] = []
        self.ledger = Ledger()
        self._trickle: tuple[threading.Event, threading.Thread] | None = None

    def start_worker(self) -> KclWorker:
        worker = KclWorker(
            f"{self.application}-{len(self.workers)}",
            self.settings,
            self.application,
            self.bench.workdir,
            self.bench.env,
            self.bench.kinesis_endpoint,
            self.bench.aws.endpoint,
            self.properties,
        ).start()
        self.workers.append(worker)
        return worker

    def owners(self) -> dict[str, str]:
        try:
            items = self.bench.ddb.scan(TableName=self.application, ConsistentRead=True)["Items"]
        except self.bench.ddb.exceptions.ResourceNotFoundException:
            return {}  # no daemon has created the lease table yet
        return {i["leaseKey"]["S"]: i.get("leaseOwner", {}).get("S", "") for i in items}

    def held_by(self, worker: KclWorker) -> set[str]:
        wid = worker.worker_id()
        return {shard for shard, owner in self.owners().items() if wid and owner == wid}

    def stock(self) -> dict[str, dict[str, int]]:
        merged: dict[str, dict[str, int]] = {}
        for checkpoint in load_all_sync(self.bench.s3, self.settings.aws.bucket, self.settings):
            merged.update(checkpoint.core.inventory())
        return merged

    def caught_up(self) -> bool:
        return self.stock() == self.ledger.stock

    def put(self, events: list[dict[str, Any]]) -> None:
        for start in range(0, len(events), 500):
            batch = events[start : start + 500]
            resp = self.bench.kinesis.put_records(
                StreamName=self.settings.aws.stream_name,
                Records=[{"Data": orjson.dumps(e), "PartitionKey": e["store_id"]} for e in batch],
            )
            if resp["FailedRecordCount"]:
                raise RuntimeError(f"{resp['FailedRecordCount']} records were not put")

    def warm_up(self) -> None:
        """A stock take per store; every processor has started and checkpointed once."""
        self.put(self.ledger.events(STORES))
        until(self.caught_up, f"the {self.label} application's warm-up")

    def start_trickle(self, per_s: int) -> None:
        """Events at `per_s` a second, in quarter-second batches, until stop_trickle."""
        stop = threading.Event()

        def run() -> None:
            while not stop.wait(0.25):
                self.put(self.ledger.events(max(1, per_s // 4)))

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self._trickle = (stop, thread)

    def stop_trickle(self) -> None:
        if self._trickle is not None:
            stop, thread = self._trickle
            stop.set()
            thread.join()
            self._trickle = None

    def close(self) -> None:
        self.stop_trickle()
        for worker in self.workers:  # nothing left to measure: no graceful shutdown to wait for
            worker.kill()
        for worker in self.workers:
            worker.stop(timeout=30)
        firehose = boto3.client("firehose")
        for name in (
            self.settings.aws.archive_firehose,
            self.settings.aws.windows_firehose,
            self.settings.aws.alerts_firehose,
        ):
            with contextlib.suppress(Exception):
                firehose.delete_delivery_stream(DeliveryStreamName=name)


def until(check: Callable[[], bool], what: str, timeout: float = WAIT_S, every: float = 0.5) -> float:
    began = time.monotonic()
    while not check():
        if time.monotonic() - began > timeout:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)
    return time.monotonic() - began


class Ledger:
    def __init__(self) -> None:
        self.stock: dict[str, dict[str, int]] = {}
        self.n = 0
        self._lock = threading.Lock()

    def events(self, count: int) -> list[dict[str, Any]]:
        out = []
        with self._lock:
            for _ in range(count):
                store = f"store-{self.n % STORES:03d}"
                item = self.stock.setdefault(store, {})
                if "milk" not in item:
                    event = {"type": "count", "store_id": store, "product_id": "milk", "count": 1_000_000}
                    item["milk"] = 1_000_000
                else:
                    event = {
                        "type": "sale",
                        "store_id": store,
                        "product_id": "milk",
                        "quantity": 1,
                        "unit_price": 1.5,
                    }
                    item["milk"] -= 1
                event |= {"event_id": f"e{self.n}", "ts": format_ts(T0 + self.n)}
                out.append(event)
                self.n += 1
        return out


class RssSampler:
    """Peak resident set of each worker's Java daemon, and of any one of its record processors."""

    def __init__(self, workers: list[KclWorker]) -> None:
        self.workers = workers
        self.java: dict[str, int] = {}
        self.processor = 0
        self.processors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        for worker in self.workers:
            with contextlib.suppress(Exception):  # a process that ends between listing and reading
                self.java[worker.name] = max(self.java.get(worker.name, 0), worker.rss_bytes())
                pids = worker.processors()
                self.processors = max(self.processors, len(pids))
                for pid in pids:
                    self.processor = max(self.processor, rss_bytes(pid))

    def _run(self) -> None:
        self.sample()
        while not self._stop.wait(0.5):
            self.sample()

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def burst(app: App, workers: list[KclWorker], events: int) -> Run:
    """`events` put at once while `workers` hold every lease; until the snapshots hold the ledger."""
    held = {shard for worker in workers for shard in app.held_by(worker)}
    if len(held) != SHARDS:
        raise RuntimeError(f"{app.label}: the workers hold {len(held)} of the {SHARDS} leases")
    batch = app.ledger.events(events)
    with RssSampler(workers) as rss:
        began = time.monotonic()
        app.put(batch)
        until(app.caught_up, f"the {app.label} burst to be processed")
        seconds = time.monotonic() - began
        rss.sample()
    n = len(workers)
    return Run(
        label=f"{n} worker{'s' if n > 1 else ''}, {SHARDS} shards",
        workers=n,
        events=events,
        seconds=round(seconds, 1),
        events_per_s=round(events / seconds, 0),
        java_rss_mib=[round(v / 2**20, 0) for v in rss.java.values()],
        processor_rss_mib=round(rss.processor / 2**20, 0),
        processors=rss.processors,
    )


def _log_ts(worker: KclWorker, msg: str, shards: set[str], after: float) -> dict[str, float]:
    """Wall-clock times of the first `msg` log line per shard at or after `after`."""
    seen: dict[str, float] = {}
    for line in worker.log_text().splitlines():
        if not line.startswith("{"):
            continue
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            shard = entry.get("shard_id")
            if entry.get("msg") == msg and shard in shards and shard not in seen:
                ts = datetime.fromisoformat(entry["ts"]).timestamp()
                if ts >= after:
                    seen[shard] = ts
    return seen


def _assigned_ts(worker: KclWorker, shards: set[str], after: float) -> dict[str, float]:
    """When the daemon found each shard's lease assigned to it (its DynamoDBLeaseDiscoverer's line)."""
    seen: dict[str, float] = {}
    for line in worker.log_text().splitlines():
        if "New leases assigned to worker" not in line or line.startswith("{"):
            continue
        with contextlib.suppress(ValueError):
            ts = datetime.fromisoformat(line.split(" ", 1)[0].replace("Z", "+00:00")).timestamp()
            if ts < after:
                continue
            for shard in shards - set(seen):
                if shard in line:
                    seen[shard] = ts
    return seen


class Kill:
    """SIGKILL to one worker while events keep coming; when its shards work again on the survivor."""

    def __init__(self, app: App, victim: KclWorker, survivor: KclWorker, what: str) -> None:
        self.app, self.victim, self.survivor, self.what = app, victim, survivor, what
        self.moved = app.held_by(victim)
        if not self.moved:
            raise RuntimeError(f"{app.label}: the worker to kill holds no lease")
        self.killed_at = time.time()
        victim.kill()

    def done(self) -> bool:
        return len(_log_ts(self.survivor, "checkpoint", self.moved, self.killed_at)) == len(self.moved)

    def result(self, timeout: float) -> Failover:
        until(self.done, f"the {self.app.label} failover", timeout=timeout)
        self.app.stop_trickle()
        assigned = _assigned_ts(self.survivor, self.moved, self.killed_at)
        taken = _log_ts(self.survivor, "shard initialized", self.moved, self.killed_at)
        again = _log_ts(self.survivor, "checkpoint", self.moved, self.killed_at)
        until(self.app.caught_up, f"the {self.app.label} stock to match after the failover")
        return Failover(
            killed=self.what,
            shards_moved=len(self.moved),
            assigned_s=sorted(round(t - self.killed_at, 1) for t in assigned.values()),
            lease_taken_s=sorted(round(t - self.killed_at, 1) for t in taken.values()),
            processing_again_s=sorted(round(t - self.killed_at, 1) for t in again.values()),
        )


def the_leader(a: KclWorker, b: KclWorker) -> tuple[KclWorker, KclWorker] | None:
    """(leader, the other) once both daemons run their worker loop and one leads."""
    if not (a.ready() and b.ready()) or a.is_leader() == b.is_leader():
        return None
    return (a, b) if a.is_leader() else (b, a)


def run(bench: Bench, events: int, say: Callable[[str], None]) -> tuple[list[Run], list[Failover]]:
    with contextlib.ExitStack() as stack:
        leader = stack.enter_context(bench.app("leader"))
        one = stack.enter_context(bench.app("one-worker"))
        two = stack.enter_context(bench.app("two-worker", {"maxLeasesForWorker": "2"}))
        # Every application's first workers at once: on an empty lease table each daemon waits the
        # KCL's random 1-30 s before one of them creates the leases (fixed in KCL 3.1.3).
        la, lb = leader.start_worker(), leader.start_worker()
        oa = one.start_worker()
        ta, tb = two.start_worker(), two.start_worker()

        # The leader application: once one worker leads and every lease is held, the leader dies.
        until(
            lambda: (
                the_leader(la, lb) is not None
                and all(leader.owners().values())
                and len(leader.owners()) == SHARDS
            ),
            "the leader application's leases",
        )
        leader.warm_up()
        found = the_leader(la, lb)
        assert found is not None
        say("leader application ready; killing its leader")
        leader.start_trickle(20)  # light: the other applications measure meanwhile
        killed_leader = Kill(leader, found[0], found[1], "the leader")

        # Two workers, at most 2 leases each: once both run, each holds 2. A third, idle, stands by
        # for the leases of the one that does not lead (the leader may not take more than 2).
        until(lambda: len(two.held_by(ta)) == 2 and len(two.held_by(tb)) == 2, "the two workers' leases")
        two_leader = the_leader(ta, tb)
        assert two_leader is not None
        tc = two.start_worker()
        until(lambda: tc.ready() and bool(tc.worker_id()), "a standby worker")
        until(lambda: len(one.held_by(oa)) == SHARDS, "the one-worker application's leases")
        one.warm_up()
        two.warm_up()

        say("bursts")
        runs = [burst(one, [oa], events), burst(two, [ta, tb], events)]

        say("killing a worker that does not lead")
        two.start_trickle(100)
        killed_other = Kill(two, two_leader[1], tc, "a worker that does not lead")
        other = killed_other.result(timeout=WAIT_S)
        say(f"waiting for the leader's lock to expire ({time.time() - killed_leader.killed_at:.0f} s so far)")
        lead = killed_leader.result(timeout=LEADER_WAIT_S)
        return runs, [lead, other]


SECTION = "## The KCL MultiLangDaemon: throughput, failover, memory (`python -m benchmarks.kcl`)"


def write_section(path: Path, lines: list[str]) -> None:
    """Replace (or append) this benchmark's section of docs/benchmarks.md, as `make bench` writes it."""
    import platform

    stamp = (
        f"Run {datetime.now().astimezone():%Y-%m-%d %H:%M %Z} on {os.cpu_count()} cores "
        f"({platform.machine()}), load average {os.getloadavg()[0]:.1f} at the end."
    )
    section = [SECTION, "", stamp, "", *lines, ""]
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    if SECTION in text:
        head, rest = text.split(SECTION, 1)
        tail = rest[rest.find("\n## ") + 1 :] if "\n## " in rest else ""
        text = head + "\n".join(section) + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + "\n".join(section)
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=8_000, help="events in each throughput burst")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    parser.add_argument(
        "--docs", type=Path, help="also put the section into this Markdown file (docs/benchmarks.md)"
    )
    parser.add_argument("--logs", type=Path, help="keep the daemons' logs in this directory")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"run with another value of a deployed lease setting ({', '.join(LEASE_KEYS)}), to compare",
    )
    args = parser.parse_args(argv)
    overrides: dict[str, str] = {}
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in LEASE_KEYS or not value.isdigit():
            parser.error(f"--set takes {' or '.join(LEASE_KEYS)}=<milliseconds>, not {item!r}")
        overrides[key] = value
    check_jars(JAR_DIR)
    # A SIGTERM (or Ctrl-C) unwinds the context managers, which stop the daemons and kinesis-local.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(1))
    import tempfile

    began = time.monotonic()

    def say(what: str) -> None:
        print(f"[kcl {time.monotonic() - began:5.0f} s] {what}", file=sys.stderr, flush=True)

    with (
        tempfile.TemporaryDirectory(prefix="bench-kcl-") as tmp,
        EmbeddedAws() as aws,
        kinesis_local(Path(tmp) / "kinesis-local") as kinesis_endpoint,
    ):
        bench = Bench(aws, kinesis_endpoint, args.logs or Path(tmp) / "kcl")
        bench.lease_settings.update(overrides)
        runs, (lead, other) = run(bench, args.events, say)
        lease = bench.lease_settings
    seconds = time.monotonic() - began
    say("done")

    lines = [
        f"KCL 3.1.3 MultiLangDaemon, kinesis-local for Kinesis, the embedded AWS (moto) for DynamoDB, S3, "
        f"SQS, SNS and Firehose, all on this machine; {SHARDS} shards per application, {STORES} stores; "
        f"{'other' if overrides else 'the deployed'} lease settings (failoverTimeMillis "
        f"{lease['failoverTimeMillis']}, leaseAssignmentIntervalMillis "
        f"{lease['leaseAssignmentIntervalMillis']}). {seconds:.0f} s in all.",
        "",
        "| run | events | seconds | events/s | Java daemon RSS, MiB (peak) | record processors | "
        "one record processor RSS, MiB (peak) |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for r in runs:
        lines.append(
            f"| {r.label} | {r.events:,} | {r.seconds} | {r.events_per_s:,.0f} | "
            f"{' / '.join(f'{v:.0f}' for v in r.java_rss_mib)} | {r.processors} | {r.processor_rss_mib:.0f} |"
        )
    lines += [
        "",
        "| worker killed (SIGKILL, events coming) | its shards | seconds after the kill: lease assigned to "
        "the survivor (its daemon's log) | record processor started there | first checkpoint there "
        "(processing again) |",
        "| --- | ---: | --- | --- | --- |",
    ]
    for f in (lead, other):
        lines.append(
            f"| {f.killed} | {f.shards_moved} of {SHARDS} | {', '.join(map(str, f.assigned_s))} | "
            f"{', '.join(map(str, f.lease_taken_s))} | "
            f"{', '.join(map(str, f.processing_again_s))} |"
        )
    lines += [
        "",
        "Stock equal to the ledger after each failover. A dead leader's shards wait for its lock in "
        "the CoordinatorState table to expire: 2 minutes, fixed in KCL 3.1.3, which a survivor checks "
        "every 30 s (benchmarks/kcl-experiments.md); any other worker's shards move once the leader sees "
        "their leases unrenewed for failoverTimeMillis, at its next assignment run.",
        "",
        "The three applications run at once: both bursts happen while the dead leader's lock runs out, "
        "with its survivor running and 20 events/s going into that application, and the two-worker "
        "application's idle standby running during its burst. All share this machine's cores with the "
        "embedded AWS and kinesis-local, so the second worker shows what the KCL spreads, not added "
        "hardware, and the events/s move with the machine's load from run to run.",
    ]
    print("\n".join(lines))
    if args.docs:
        write_section(args.docs, lines)
    if args.json:
        args.json.write_text(
            json.dumps(
                {"runs": [asdict(r) for r in runs], "failover": [asdict(lead), asdict(other)]}, indent=2
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
