"""The real KCL on this machine: failover time, events/s through one worker and through two, memory.

The Java MultiLangDaemon (KCL 3.1.3) leases kinesis-local's shards through the embedded AWS's DynamoDB
and runs one `shelfstream kcl-processor` per leased shard; effects and snapshots go to the embedded AWS
(shelfstream/kcl_local.py sets it up, as for `shelfstream kcl-worker --local`). Each run uses a fresh
stream and KCL application. Figures:

- every run uses the deployed failoverTimeMillis (10000); only the start-up's shard-sync sleep is 1 s;
- throughput: a burst of events put into a 4-shard stream while the workers already hold every lease,
  from the first put until the S3 snapshots hold exactly the independent ledger's stock (so it includes
  the last checkpoint, at most SHELFSTREAM_CHECKPOINT_EVERY_S = 1 s late);
- failover: two workers share 4 shards with the deployed lease settings (failoverTimeMillis 10000);
  one is killed with SIGKILL (launcher, daemon and processors) while events keep coming; measured from
  the kill until the survivor's record processor for each of the dead worker's shards has started
  (lease taken) and until it stored its first checkpoint there (processing again);
- memory: resident set of each Java daemon, sampled through the runs (peak), and of its processors.

    python -m benchmarks.kcl [--events 12000] [--json FILE]     Markdown on stdout
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
from shelfstream.kcl_local import JAR_DIR, KclWorker, check_jars, kinesis_local, rss_bytes

T0 = 1_785_571_200_000
SHARDS = 4
STORES = 64
WAIT_S = 240.0
# The deployed lease settings (deploy/kcl/shelfstream.properties): with the tests' 3 s, a loaded machine
# renews leases late and workers take them from each other back and forth.
DEPLOYED = {"failoverTimeMillis": "10000"}


@dataclass
class Run:
    label: str
    workers: int
    events: int
    seconds: float
    events_per_s: float
    java_rss_mib: list[float] = field(default_factory=list)
    processor_rss_mib: float = 0.0


@dataclass
class Failover:
    shards_moved: int
    lease_taken_s: list[float]
    processing_again_s: list[float]


class Bench:
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

    @contextlib.contextmanager
    def stack(
        self, workers: int, properties: dict[str, str] | None = None
    ) -> Iterator[tuple[Settings, str, list[KclWorker]]]:
        uid = uuid.uuid4().hex[:10]
        settings = Settings(
            stream_name=f"bench-{uid}-events",
            bucket=f"bench-{uid}",
            archive_firehose=f"bench-{uid}-archive",
            windows_firehose=f"bench-{uid}-windows",
            alerts_firehose=f"bench-{uid}-alerts-archive",
            alerts_topic=f"bench-{uid}-alerts",
            restock_queue=f"bench-{uid}-restock",
            restock_dlq=f"bench-{uid}-restock-dlq",
            alerts_queue=f"bench-{uid}-alerts-inbox",
            incoming_queue=f"bench-{uid}-incoming",
            dashboard_queue=f"bench-{uid}-alerts-inbox-dashboard",
            shard_count=SHARDS,
            checkpoint_every_s=1.0,
        )
        provision(settings)
        application = f"bench-{uid}"
        started = [
            KclWorker(
                f"{application}-{i}",
                settings,
                application,
                self.workdir,
                self.env,
                self.kinesis_endpoint,
                self.aws.endpoint,
                properties,
            ).start()
            for i in range(workers)
        ]
        try:
            yield settings, application, started
        finally:
            for worker in started:
                worker.stop(timeout=60)
            firehose = boto3.client("firehose")
            for name in (settings.archive_firehose, settings.windows_firehose, settings.alerts_firehose):
                with contextlib.suppress(Exception):
                    firehose.delete_delivery_stream(DeliveryStreamName=name)

    def owners(self, application: str) -> dict[str, str]:
        try:
            items = self.ddb.scan(TableName=application, ConsistentRead=True)["Items"]
        except self.ddb.exceptions.ResourceNotFoundException:
            return {}  # the first daemon has not created the lease table yet
        return {i["leaseKey"]["S"]: i.get("leaseOwner", {}).get("S", "") for i in items}

    def stock(self, settings: Settings) -> dict[str, dict[str, int]]:
        merged: dict[str, dict[str, int]] = {}
        for checkpoint in load_all_sync(self.s3, settings.bucket, settings):
            merged.update(checkpoint.core.inventory())
        return merged

    def put(self, settings: Settings, events: list[dict[str, Any]]) -> None:
        for start in range(0, len(events), 500):
            batch = events[start : start + 500]
            resp = self.kinesis.put_records(
                StreamName=settings.stream_name,
                Records=[{"Data": orjson.dumps(e), "PartitionKey": e["store_id"]} for e in batch],
            )
            if resp["FailedRecordCount"]:
                raise RuntimeError(f"{resp['FailedRecordCount']} records were not put")


def until(check: Callable[[], bool], what: str, timeout: float = WAIT_S) -> float:
    began = time.monotonic()
    while not check():
        if time.monotonic() - began > timeout:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)
    return time.monotonic() - began


class Ledger:
    def __init__(self) -> None:
        self.stock: dict[str, dict[str, int]] = {}
        self.n = 0

    def events(self, count: int) -> list[dict[str, Any]]:
        out = []
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
    """Peak resident set of each worker's Java daemon, and of its record processors, sampled."""

    def __init__(self, workers: list[KclWorker]) -> None:
        self.workers = workers
        self.java: dict[str, int] = {}
        self.processors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            for worker in self.workers:
                with contextlib.suppress(Exception):
                    self.java[worker.name] = max(self.java.get(worker.name, 0), worker.rss_bytes())
                    for pid in worker.processors():
                        self.processors = max(self.processors, rss_bytes(pid))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def throughput(bench: Bench, workers: int, events: int) -> Run:
    ledger = Ledger()
    with bench.stack(workers, DEPLOYED) as (settings, application, started):
        # Every lease held, every worker holding some, before the burst.
        until(
            lambda: (
                len(bench.owners(application)) == SHARDS
                and all(bench.owners(application).values())
                and len(set(bench.owners(application).values())) == workers
            ),
            "the leases to be taken",
        )
        warm = ledger.events(STORES)  # a stock take per store: every processor has started
        bench.put(settings, warm)
        until(lambda: bench.stock(settings) == ledger.stock, "the warm-up")
        burst = ledger.events(events)
        with RssSampler(started) as rss:
            began = time.monotonic()
            bench.put(settings, burst)
            until(lambda: bench.stock(settings) == ledger.stock, "the burst to be processed")
            seconds = time.monotonic() - began
        return Run(
            label=f"{workers} worker{'s' if workers > 1 else ''}, {SHARDS} shards",
            workers=workers,
            events=events,
            seconds=round(seconds, 1),
            events_per_s=round(events / seconds, 0),
            java_rss_mib=[round(v / 2**20, 0) for v in rss.java.values()],
            processor_rss_mib=round(rss.processors / 2**20, 0),
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


def is_leader(worker: KclWorker) -> bool:
    """Whether the worker's lease assignment last ran as the leader's (KCL 3 logs it each run)."""
    last = ""
    for line in worker.log_text().splitlines():
        if "is a leader, performing assignment" in line or "is not a leader, ignore" in line:
            last = line
    return "is a leader, performing assignment" in last


def failover(bench: Bench) -> Failover:
    ledger = Ledger()
    with bench.stack(2, DEPLOYED) as (settings, application, (a, b)):
        until(
            lambda: (
                len(set(bench.owners(application).values()) - {""}) == 2
                and all(bench.owners(application).values())
            ),
            "both workers to hold leases",
        )
        bench.put(settings, ledger.events(STORES * 4))
        until(lambda: bench.stock(settings) == ledger.stock, "the first events")
        by_owner: dict[str, set[str]] = {}
        for shard, owner in bench.owners(application).items():
            by_owner.setdefault(owner, set()).add(shard)
        # The worst case: the leader dies (only the leader assigns expired leases, and its DynamoDB
        # lock has to expire before the other worker leads).
        until(lambda: any(is_leader(w) for w in (a, b)), "a leader")
        victim = next(w for w in (a, b) if is_leader(w))
        survivor = b if victim is a else a
        victim_id = next(o for o in by_owner if f"Using workerId: {o}" in victim.log_text())
        moved = by_owner[victim_id]

        stop = threading.Event()

        def trickle() -> None:  # 200 events/s while the failover happens
            while not stop.wait(0.25):
                bench.put(settings, ledger.events(50))

        feeder = threading.Thread(target=trickle, daemon=True)
        feeder.start()
        time.sleep(2)
        killed_at = time.time()
        victim.kill()
        try:
            until(
                lambda: len(_log_ts(survivor, "checkpoint", moved, killed_at)) == len(moved), "the failover"
            )
        finally:
            stop.set()
            feeder.join()
        taken = _log_ts(survivor, "shard initialized", moved, killed_at)
        again = _log_ts(survivor, "checkpoint", moved, killed_at)
        until(lambda: bench.stock(settings) == ledger.stock, "the stock to match after the failover")
        return Failover(
            shards_moved=len(moved),
            lease_taken_s=sorted(round(t - killed_at, 1) for t in taken.values()),
            processing_again_s=sorted(round(t - killed_at, 1) for t in again.values()),
        )


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
    parser.add_argument("--events", type=int, default=12_000, help="events in each throughput burst")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    parser.add_argument(
        "--docs", type=Path, help="also put the section into this Markdown file (docs/benchmarks.md)"
    )
    args = parser.parse_args(argv)
    check_jars(JAR_DIR)
    # A SIGTERM (or Ctrl-C) unwinds the context managers, which stop the daemons and kinesis-local.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(1))
    import tempfile

    with (
        tempfile.TemporaryDirectory(prefix="bench-kcl-") as tmp,
        EmbeddedAws() as aws,
        kinesis_local(Path(tmp) / "kinesis-local") as kinesis_endpoint,
    ):
        bench = Bench(aws, kinesis_endpoint, Path(tmp) / "kcl")
        runs = [throughput(bench, 1, args.events), throughput(bench, 2, args.events)]
        fail = failover(bench)

    lines = [
        f"KCL 3.1.3 MultiLangDaemon, kinesis-local for Kinesis, the embedded AWS (moto) for DynamoDB, S3, "
        f"SQS, SNS and Firehose, all on this machine; {SHARDS} shards, {STORES} stores.",
        "",
        "| run | events | seconds | events/s | Java daemon RSS, MiB (peak) | one record processor RSS, MiB |",
        "| --- | ---: | ---: | ---: | --- | ---: |",
    ]
    for r in runs:
        lines.append(
            f"| {r.label} | {r.events:,} | {r.seconds} | {r.events_per_s:,.0f} | "
            f"{' / '.join(f'{v:.0f}' for v in r.java_rss_mib)} | {r.processor_rss_mib:.0f} |"
        )
    taken = ", ".join(map(str, fail.lease_taken_s))
    again = ", ".join(map(str, fail.processing_again_s))
    lines += [
        "",
        f"Failover (failoverTimeMillis 10000, as deployed): the leader worker, holding "
        f"{fail.shards_moved} of the {SHARDS} shards, killed with SIGKILL while 200 events/s kept "
        f"coming. Lease taken and its record processor started, seconds after the kill: {taken}; "
        f"first checkpoint there (processing again): {again}. Stock equal to the ledger afterwards.",
        "",
        "The two workers share this machine's cores with the embedded AWS and kinesis-local, so the "
        "second worker shows what the KCL spreads, not added hardware.",
    ]
    print("\n".join(lines))
    if args.docs:
        write_section(args.docs, lines)
    if args.json:
        args.json.write_text(
            json.dumps({"runs": [asdict(r) for r in runs], "failover": asdict(fail)}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
