"""The real KCL: the Java MultiLangDaemon (KCL 3) leasing kinesis-local's shards through moto's DynamoDB,
running one `shelfstream kcl-processor` per leased shard, with S3, SQS, SNS and Firehose on the embedded
AWS. Each test starts and stops its own daemons; every wait is bounded.

What is checked against an independent ledger (stock per store, computed from the events produced) and
against the same core run over each shard's records in order (the restock requests and alerts that
the embedded mode would send).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest

from config import Settings, core_config
from foundation.aws.embedded import EmbeddedAws
from foundation.aws.lineage import ShardInfo
from foundation.aws.provision import Resources, provision
from foundation.contract import decode_alert, format_ts
from processors.checkpoints import load_all_sync
from processors.core import ShardCore
from processors.core.partition import merge, split
from shelfstream.kcl_local import JAR_DIR, KclWorker, kinesis_local

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.java,
    pytest.mark.npm,
    pytest.mark.daemon,
    pytest.mark.timeout(900),
]

T0 = 1_785_571_200_000
WAIT_S = 150.0  # a bound for each wait; the KCL's own start takes up to ~35 s (a random wait of 1-30 s)


@pytest.fixture(autouse=True, scope="module")
def kcl_jars() -> None:
    """Missing jars fail every test here, never skip one; checked when a test runs, not at import, so a
    lane that leaves the `java` tests out (`make check`) collects this module on a machine without them."""
    if not (JAR_DIR / "amazon-kinesis-client-multilang-3.1.3.jar").exists():  # pragma: no cover
        pytest.fail("the KCL jars are missing: run `make kcl-jars` (make test does)", pytrace=False)


# --- the workload and its ledger ---------------------------------------------------------------------


def store_events(store: str, wave: int, sales: int) -> list[dict[str, Any]]:
    """A stock take of 20 (first wave only), then `sales` sales of 1 or 2: stock falls under the restock
    threshold (5) for the stores that sell most, which raises a restock request and alerts."""
    out: list[dict[str, Any]] = []
    if wave == 0:
        out.append(
            {"type": "count", "event_id": f"{store}-count", "store_id": store, "ts": format_ts(T0)}
            | {"product_id": "milk", "count": 20}
        )
    for i in range(sales):
        t = T0 + (wave * 100 + i + 1) * 1000
        out.append(
            {"type": "sale", "event_id": f"{store}-w{wave}-{i}", "store_id": store, "ts": format_ts(t)}
            | {"product_id": "milk", "quantity": 1 + (i % 2), "unit_price": 1.5}
        )
    return out


@dataclass
class Ledger:
    """Stock per store as the events say it should be, counted here without the core."""

    stock: dict[str, dict[str, int]] = field(default_factory=dict)
    events: int = 0

    def add(self, events: list[dict[str, Any]]) -> None:
        for e in events:
            self.events += 1
            product = self.stock.setdefault(e["store_id"], {})
            if e["type"] == "count":
                product[e["product_id"]] = e["count"]
            elif e["type"] == "sale":
                product[e["product_id"]] = product.get(e["product_id"], 0) - e["quantity"]


def wave(stores: list[str], n: int, sales: Callable[[int], int]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    per_store = [store_events(store, n, sales(i)) for i, store in enumerate(stores)]
    for k in range(max(len(p) for p in per_store)):  # interleaved across stores, in order per store
        events.extend(p[k] for p in per_store if k < len(p))
    return events


# --- the stack: kinesis-local + the embedded AWS + daemons ---------------------------------------------


@dataclass
class Stack:
    settings: Settings
    resources: Resources
    kinesis: Any
    application: str
    workdir: Path
    env: dict[str, str]
    kinesis_endpoint: str
    dynamodb_endpoint: str
    ledger: Ledger = field(default_factory=Ledger)
    workers: list[KclWorker] = field(default_factory=list)

    def worker(self, name: str, **properties: str) -> KclWorker:
        worker = KclWorker(
            name,
            self.settings,
            self.application,
            self.workdir,
            self.env,
            self.kinesis_endpoint,
            self.dynamodb_endpoint,
            properties,
        ).start()
        self.workers.append(worker)
        return worker

    def put(self, events: list[dict[str, Any]]) -> None:
        for start in range(0, len(events), 250):
            batch = events[start : start + 250]
            resp = self.kinesis.put_records(
                StreamName=self.settings.aws.stream_name,
                Records=[{"Data": orjson.dumps(e), "PartitionKey": e["store_id"]} for e in batch],
            )
            assert resp["FailedRecordCount"] == 0
        self.ledger.add(events)

    def shards(self) -> list[dict[str, Any]]:
        return list(self.kinesis.list_shards(StreamName=self.settings.aws.stream_name)["Shards"])

    def records(self) -> dict[str, list[dict[str, Any]]]:
        """Every shard's records in order, read straight from the stream."""
        out: dict[str, list[dict[str, Any]]] = {}
        for shard in self.shards():
            it = self.kinesis.get_shard_iterator(
                StreamName=self.settings.aws.stream_name,
                ShardId=shard["ShardId"],
                ShardIteratorType="TRIM_HORIZON",
            )["ShardIterator"]
            records: list[dict[str, Any]] = []
            while it:
                page = self.kinesis.get_records(ShardIterator=it, Limit=1000)
                records.extend(page["Records"])
                if not page["Records"] and page.get("MillisBehindLatest", 0) == 0:
                    break
                it = page.get("NextShardIterator")
            out[shard["ShardId"]] = records
        return out

    def stock(self) -> dict[str, dict[str, int]]:
        """Stock per store from the S3 snapshots of the live shards."""
        merged: dict[str, dict[str, int]] = {}
        for checkpoint in load_all_sync(boto3.client("s3"), self.resources.bucket, self.settings):
            merged.update(checkpoint.core.inventory())
        return merged

    def leases(self) -> list[dict[str, Any]]:
        ddb = boto3.client("dynamodb", endpoint_url=self.dynamodb_endpoint)
        return list(ddb.scan(TableName=self.application, ConsistentRead=True)["Items"])

    def logs(self) -> str:
        return "\n".join(f"--- {w.name}\n{w.log_text()[-4000:]}" for w in self.workers)

    def until(self, check: Callable[[], bool], what: str, timeout: float = WAIT_S) -> float:
        """Wait for `check`; the seconds it took. Fails with the daemons' last log lines."""
        began = time.monotonic()
        while not check():
            if time.monotonic() - began > timeout:
                pytest.fail(f"timed out waiting for {what}\n{self.logs()}")
            time.sleep(0.25)
        took = time.monotonic() - began
        print(f"{what}: {took:.1f} s")
        return took


@pytest.fixture
def stack(
    local_aws: EmbeddedAws,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[..., Stack]]:
    made: list[Stack] = []
    with kinesis_local(tmp_path / "kinesis-local") as kinesis_endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL_KINESIS", kinesis_endpoint)  # Kinesis there, the rest on moto

        def make(shards: int, **processor: Any) -> Stack:
            settings = make_settings(
                aws={"shard_count": shards}, checkpoints={"every_s": 1.0}, processor=processor
            )
            resources = provision(settings)
            env = {
                "AWS_ENDPOINT_URL": local_aws.endpoint,
                "AWS_ENDPOINT_URL_KINESIS": kinesis_endpoint,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_REGION": "us-east-1",
                "AWS_DEFAULT_REGION": "us-east-1",
            }
            s = Stack(
                settings=settings,
                resources=resources,
                kinesis=boto3.client("kinesis"),
                application=f"kcl-{uuid.uuid4().hex[:10]}",
                workdir=tmp_path / "kcl",
                env=env,
                kinesis_endpoint=kinesis_endpoint,
                dynamodb_endpoint=local_aws.endpoint,
            )
            made.append(s)
            return s

        try:
            yield make
        finally:
            for s in made:
                for worker in s.workers:
                    worker.stop(timeout=30)


# --- what the embedded mode would have sent ----------------------------------------------------------


def expected_effects(stack: Stack) -> tuple[set[str], set[str]]:
    """Restock request ids and alert ids from the same core over each shard's records in order, a
    child shard starting from its parents' final state cut to its range (as the embedded mode does)."""
    requests: set[str] = set()
    alerts: set[str] = set()
    by_shard = stack.records()
    infos = {shard["ShardId"]: ShardInfo.from_api(shard) for shard in stack.shards()}
    final: dict[str, ShardCore] = {}
    for shard_id in by_shard:  # ListShards order: parents before their children
        info = infos[shard_id]
        inherited = [split(final[p], info.owns) for p in info.parents if p in final]
        core = merge(inherited) if inherited else ShardCore(core_config(stack.settings))
        for record in by_shard[shard_id]:
            core.apply(record["Data"], record["SequenceNumber"])
        effects = core.drain()
        requests |= {r.alert_id for r in effects.requests}
        alerts |= {a.alert_id for a in effects.alerts}
        final[shard_id] = core
    return requests, alerts


def received(stack: Stack) -> tuple[list[str], list[str]]:
    """Restock request ids on the restock queue and alert ids on the alerts inbox (SNS -> SQS)."""
    sqs = boto3.client("sqs")

    def drain(url: str) -> list[str]:
        ids: list[str] = []
        while True:
            got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            if not got.get("Messages"):
                return ids
            for message in got["Messages"]:
                body = message["Body"]
                with_envelope = json.loads(body)
                if "Message" in with_envelope and "TopicArn" in with_envelope:
                    body = with_envelope["Message"]
                ids.append(decode_alert(body).alert_id)
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

    return drain(stack.resources.restock_queue_url), drain(stack.resources.alerts_queue_url)


def lease_checkpoints(stack: Stack) -> dict[str, str]:
    return {item["leaseKey"]["S"]: item["checkpoint"]["S"] for item in stack.leases()}


def owners(stack: Stack) -> dict[str, str]:
    return {item["leaseKey"]["S"]: item.get("leaseOwner", {}).get("S", "") for item in stack.leases()}


def processor_log(worker: KclWorker) -> list[dict[str, Any]]:
    """The record processors' JSON log lines, as the daemon passes their stderr on."""
    lines = []
    for line in worker.log_text().splitlines():
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
    return lines


def worker_id(worker: KclWorker) -> str:
    """The KCL worker id the daemon picked (it names the lease owner in DynamoDB)."""
    wid = worker.worker_id()
    if not wid:
        raise AssertionError(f"no worker id in {worker.log_path}")
    return wid


def assert_same_effects(stack: Stack) -> None:
    want_requests, want_alerts = expected_effects(stack)
    got_requests, got_alerts = received(stack)
    assert want_requests, "the workload should raise restock requests"
    assert set(got_requests) == want_requests
    assert set(got_alerts) == want_alerts


# --- tests ---------------------------------------------------------------------------------------------


def test_one_worker_two_shards_then_a_split_while_it_runs(stack: Callable[[int], Stack]) -> None:
    s = stack(2)
    stores = [f"store-{i:02d}" for i in range(8)]
    s.put(wave(stores, 0, lambda i: 4 + 2 * i))  # stores 5-7 sell below the threshold
    worker = s.worker("one")
    s.until(lambda: s.stock() == s.ledger.stock, "the stock in S3 to equal the ledger")

    # Both checkpoints: the S3 snapshot (above) and the KCL's lease checkpoint at each shard's last record.
    last = {shard: records[-1]["SequenceNumber"] for shard, records in s.records().items()}
    s.until(lambda: lease_checkpoints(s) == last, "the lease checkpoints at each shard's last record")
    assert len(set(owners(s).values())) == 1  # one worker holds both leases

    # Resharding while it runs: split shard 0; its stores continue in the two children.
    parent, other = s.shards()
    low, high = int(parent["HashKeyRange"]["StartingHashKey"]), int(parent["HashKeyRange"]["EndingHashKey"])
    s.kinesis.split_shard(
        StreamName=s.settings.aws.stream_name,
        ShardToSplit=parent["ShardId"],
        NewStartingHashKey=str((low + high) // 2),
    )
    s.until(
        lambda: (
            s.kinesis.describe_stream_summary(StreamName=s.settings.aws.stream_name)[
                "StreamDescriptionSummary"
            ]["StreamStatus"]
            == "ACTIVE"
        ),
        "the split",
        timeout=30,
    )
    s.put(wave(stores, 1, lambda i: 2 + i % 2))
    children = [x["ShardId"] for x in s.shards() if x.get("ParentShardId") == parent["ShardId"]]
    assert len(children) == 2
    s.until(lambda: s.stock() == s.ledger.stock, "the children to be processed")

    lines = processor_log(worker)
    ended = [
        x["ts"] for x in lines if x.get("msg") == "shard ended" and x.get("shard_id") == parent["ShardId"]
    ]
    started = {x["shard_id"]: x["ts"] for x in lines if x.get("msg") == "shard initialized"}
    assert len(ended) == 1
    assert set(children) <= set(started)
    assert all(started[child] >= ended[0] for child in children)  # the parent to its end, then children
    # The parent's stores live on in exactly one child each, cut from the parent's state.
    live = {c.shard_id: c for c in load_all_sync(boto3.client("s3"), s.resources.bucket, s.settings)}
    assert sorted(live) == sorted([*children, other["ShardId"]])
    owned = [set(live[child].core.inventory()) for child in children]
    assert owned[0].isdisjoint(owned[1])
    assert owned[0] | owned[1] == set(stores) - set(live[other["ShardId"]].core.inventory())
    # Effects as the core gives them over each store's events in order (parent, then its children).
    assert_same_effects(s)

    # SIGTERM: every live processor gets shutdownRequested and checkpoints. The exit status is the
    # daemon's own verdict: KCL 3.1.3 also waits for the ended parent's consumer, which never reports,
    # so after a split its graceful shutdown runs out the grace and the launcher says 143 (docs/kcl.md);
    # test 2 checks the exit 0 of a worker that saw no shard end.
    before = len(processor_log(worker))
    worker.terminate()
    assert worker.wait(timeout=40 + 15) in (0, 143)  # within shutdownGraceMillis (LOCAL_PROPERTIES)
    final = {x["shard_id"] for x in processor_log(worker)[before:] if x.get("msg") == "checkpoint"}
    assert final == set(live)


def test_two_workers_share_leases_one_dies_with_kill_9_then_one_stops_with_sigterm(
    stack: Callable[[int], Stack],
) -> None:
    s = stack(4)
    stores = [f"store-{i:02d}" for i in range(16)]
    s.put(wave(stores, 0, lambda i: 3 + (i % 4) * 2))  # then 2 more: every 4th store runs low
    a, b = s.worker("a"), s.worker("b")

    # The leases are shared: each worker holds some, and together they process everything.
    s.until(lambda: s.stock() == s.ledger.stock, "both workers to catch up")
    s.until(lambda: len(set(owners(s).values()) - {""}) == 2, "each worker to hold leases")
    held = owners(s)

    # kill -9 of the worker that is not the leader, while events keep coming. (Only the leader assigns
    # expired leases; when the leader dies, its DynamoDB lock must expire first, which takes minutes:
    # benchmarks/kcl.py measures that case.)
    by_owner: dict[str, list[str]] = {}
    for shard, owner in held.items():
        by_owner.setdefault(owner, []).append(shard)
    s.until(lambda: a.is_leader() != b.is_leader(), "one leader among the two")
    victim, survivor = (b, a) if a.is_leader() else (a, b)
    victim_id = worker_id(victim)
    s.put(wave(stores, 1, lambda i: 2))
    victim.kill()
    assert victim.wait(timeout=10) == -9  # the whole task: launcher, daemon and processors
    s.put(wave(stores, 2, lambda i: 2 + i % 3))

    # The survivor takes the dead worker's leases after the failover time and resumes from the checkpoints.
    s.until(lambda: set(owners(s).values()) == {worker_id(survivor)}, "the failover")
    s.until(lambda: s.stock() == s.ledger.stock, "the stock to equal the ledger after the failover")
    resumed = [
        line
        for line in processor_log(survivor)
        if line.get("msg") == "shard initialized" and line.get("shard_id") in by_owner[victim_id]
    ]
    assert {line["shard_id"] for line in resumed} == set(by_owner[victim_id])
    # Each taken-over shard resumed from a stored state (S3) and a lease checkpoint, not from the start.
    assert all(line["state_checkpoint"] is not None for line in resumed)

    # A new worker joins; SIGTERM to the survivor hands everything over gracefully.
    c = s.worker("c")
    s.until(c.ready, "a third worker to join")
    grace_s = 40.0  # shutdownGraceMillis in LOCAL_PROPERTIES
    before = len(processor_log(survivor))
    mine = {shard for shard, owner in owners(s).items() if owner == worker_id(survivor)}
    survivor.terminate()
    began = time.monotonic()
    assert survivor.wait(timeout=grace_s + 15) == 0
    assert time.monotonic() - began < grace_s + 15
    # shutdownRequested reached each of its processors, and each stored its state and checkpointed.
    final = {line["shard_id"] for line in processor_log(survivor)[before:] if line.get("msg") == "checkpoint"}
    assert mine
    assert final >= mine
    s.put(wave(stores, 3, lambda i: 1))
    s.until(lambda: set(owners(s).values()) == {worker_id(c)}, "the new worker to hold every lease")
    s.until(lambda: s.stock() == s.ledger.stock, "the new worker to catch up")
    last = {shard: records[-1]["SequenceNumber"] for shard, records in s.records().items()}
    s.until(lambda: lease_checkpoints(s) == last, "the lease checkpoints at each shard's end")
    # Nothing lost, nothing counted twice (stock above); each restock request and alert by its id.
    assert_same_effects(s)


def test_a_silent_shard_follows_the_other_shards_event_time_across_processes(
    stack: Callable[..., Stack],
) -> None:
    """Two stores, one in each shard: both trade for half an hour, then only one trades on for another
    90 minutes. The silent store's record processor has nothing to read and no other shard in its
    process; it learns the other shard's event time from the shard clocks table (the daemon calls it
    with empty batches) and follows it 10 minutes behind, closing the silent store's windows once that
    clock is past them by the idle bound, so its silence is judged while it lasts, as in the embedded
    mode."""
    s = stack(2, idle_shard_patience_s=1.0, shard_clock_every_s=0.5)
    ranges = [
        (int(x["HashKeyRange"]["StartingHashKey"]), int(x["HashKeyRange"]["EndingHashKey"]))
        for x in s.shards()
    ]

    def shard_of(store: str) -> int:
        key = int.from_bytes(hashlib.md5(store.encode()).digest(), "big")
        return next(i for i, (low, high) in enumerate(ranges) if low <= key <= high)

    names = [f"store-{i:02d}" for i in range(40)]
    quiet = next(n for n in names if shard_of(n) == 0)
    busy = next(n for n in names if shard_of(n) == 1)

    def sale(store: str, minute: int) -> dict[str, Any]:
        return {
            "type": "sale",
            "event_id": f"{store}-m{minute}",
            "store_id": store,
            "ts": format_ts(T0 + minute * 60_000),
            "product_id": "milk",
            "quantity": 1,
            "unit_price": 1.5,
        }

    s.put(
        [sale(store, m) for m in range(30) for store in (quiet, busy)]
        + [sale(busy, m) for m in range(30, 120)]
    )
    s.worker("one")
    s3 = boto3.client("s3")
    # It follows to minute 109 (10 minutes behind); a silent store's panes close once that clock is
    # the idle bound (5 min) and the lateness (2 min) past them: up to minute 102, the window ending
    # at minute 90.
    until = format_ts(T0 + 90 * 60_000)

    def quiet_windows_to() -> str:
        listed = s3.list_objects_v2(Bucket=s.resources.bucket, Prefix=s.settings.prefixes.windows)
        ends = []
        for obj in listed.get("Contents", []):
            for line in s3.get_object(Bucket=s.resources.bucket, Key=obj["Key"])["Body"].read().splitlines():
                record = json.loads(line) if line.strip() else {}
                if record.get("store_id") == quiet:
                    ends.append(record["window_end"])
        return max(ends, default="")

    # On its own events the quiet store's windows would close up to minute 15 at most (2 minutes of
    # lateness after its last sale at minute 29); the busy shard reached minute 119.
    s.until(lambda: quiet_windows_to() >= until, "the silent store's windows to close up to minute 90")
    assert quiet_windows_to() <= format_ts(T0 + 110 * 60_000)  # 10 minutes behind the other shard
    ddb = boto3.client("dynamodb")
    items = ddb.query(
        TableName=s.resources.shard_clocks_table,
        KeyConditionExpression="#s = :s",
        ExpressionAttributeNames={"#s": "stream"},
        ExpressionAttributeValues={":s": {"S": s.settings.aws.stream_name}},
    )["Items"]
    # Each shard published its own events' time (the quiet one not the time it followed).
    assert sorted(int(i["event_ms"]["N"]) for i in items) == [T0 + 29 * 60_000, T0 + 119 * 60_000]
