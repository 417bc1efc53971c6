"""`shelfstream kcl-processor` driven exactly as the KCL MultiLangDaemon drives it: JSON lines written to
its stdin, JSON lines read from its stdout, every checkpoint request answered the way the daemon's
MultiLangProtocol answers it, against the embedded AWS."""

from __future__ import annotations

import base64
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from config import Settings
from config.settings import to_env
from foundation.aws.clients import sync_client
from foundation.aws.provision import Resources
from foundation.contract import decode_alert, format_ts
from processors.checkpoints import Checkpoint, S3Checkpoints, decode_checkpoint

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.daemon]

ROOT = Path(__file__).resolve().parents[2]
SHARD = "shardId-000000000001"
STORE = "store-001"
# Real sequence numbers are 56-digit strings: the processor must not assume a size.
SEQ0 = 49_590_338_271_490_256_608_559_692_538_361_571_095_921_575_989_136_588_898
T0 = 1_785_571_200_000
SAFETY_TIMEOUT_S = 90.0  # only so a broken processor fails the test instead of hanging it


def seq(i: int) -> str:
    return str(SEQ0 + i * 1_000)


def event(kind: str, i: int, **fields: Any) -> bytes:
    body = {"type": kind, "event_id": f"{STORE}-{i}", "store_id": STORE, "ts": format_ts(T0 + i * 1000)}
    return orjson.dumps({**body, "product_id": "milk", **fields})


# The shard's records by index. The independent ledger of milk at store-001 is in the comments.
RECORDS: dict[int, bytes] = {
    0: event("count", 0, count=12),  # 12
    1: event("sale", 1, quantity=2, unit_price=1.2),  # 10
    2: event("sale", 2, quantity=2, unit_price=1.2),  # 8
    3: event("sale", 3, quantity=2, unit_price=1.2),  # 6
    4: event("sale", 4, quantity=2, unit_price=1.2),  # 4: at or below the threshold (5) -> restock request
    5: event("sale", 5, quantity=1, unit_price=1.2),  # 3
    6: event("refund", 6, quantity=1, unit_price=1.2),  # 4
    7: b"{not json",  # rejected, kept with its reason
    8: event("restock", 8, quantity=36),  # 40
    9: event("sale", 9, quantity=1, unit_price=1.2),  # 39
}
BATCH_A, BATCH_B, BATCH_C = (0, 1, 2, 3), (4, 5, 6, 7), (8, 9)
STOCK_AFTER = {BATCH_A: 6, BATCH_B: 4, BATCH_C: 39}


# --- the daemon's messages, as its Jackson ObjectMapper writes them ---------------------------------


def initialize(sequence_number: str = "TRIM_HORIZON") -> dict[str, Any]:
    return {
        "action": "initialize",
        "shardId": SHARD,
        "sequenceNumber": sequence_number,
        "subSequenceNumber": 0,
    }


def process_records(indices: tuple[int, ...]) -> dict[str, Any]:
    records = [
        {
            "data": base64.b64encode(RECORDS[i]).decode(),
            "partitionKey": STORE,
            "sequenceNumber": seq(i),
            "approximateArrivalTimestamp": T0 + i * 1000 + 250,
            "subSequenceNumber": 0,
            "action": "record",
        }
        for i in indices
    ]
    return {"action": "processRecords", "records": records, "millisBehindLatest": 0}


class Daemon:
    """The MultiLangDaemon's side of the protocol for one child process."""

    def __init__(self, env: dict[str, str], stderr_path: Path) -> None:
        self._stderr = stderr_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shelfstream.cli", "kcl-processor"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            cwd=ROOT,
            text=True,
            encoding="utf-8",
        )
        self.stdout: list[str] = []  # every line the child wrote to stdout
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.stdout.append(line)
            self._lines.put(line)
        self._lines.put(None)

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def next_message(self) -> dict[str, Any]:
        while True:
            line = self._lines.get(timeout=SAFETY_TIMEOUT_S)
            assert line is not None, f"the record processor closed stdout (exit {self.proc.poll()})"
            if line.strip():
                message: dict[str, Any] = json.loads(line)
                return message

    def answer_checkpoint(self, request: dict[str, Any], error: str | None = None) -> None:
        self.send(
            {
                "action": "checkpoint",
                "sequenceNumber": request["sequenceNumber"],
                "subSequenceNumber": request["subSequenceNumber"],
                "error": error,
            }
        )

    def call(
        self,
        message: dict[str, Any],
        on_checkpoint: Callable[[dict[str, Any]], str | None] = lambda request: None,
    ) -> list[dict[str, Any]]:
        """Send one action; answer checkpoint requests until its status arrives. Returns the requests."""
        self.send(message)
        requests = []
        while True:
            reply = self.next_message()
            if reply["action"] == "checkpoint":
                requests.append(reply)
                self.answer_checkpoint(reply, on_checkpoint(reply))
                continue
            assert reply == {"action": "status", "responseFor": message["action"]}
            return requests

    def close(self) -> int:
        """What the daemon does after a shard's last message: close the child's stdin, wait for it."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        code = self.proc.wait(timeout=SAFETY_TIMEOUT_S)
        self._reader.join(timeout=SAFETY_TIMEOUT_S)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=SAFETY_TIMEOUT_S)
        self._reader.join(timeout=SAFETY_TIMEOUT_S)

    def finish(self) -> None:
        self.kill()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None and not stream.closed:
                stream.close()
        self._stderr.close()


def assert_only_protocol(lines: list[str]) -> None:
    """stdout carries nothing but the protocol: blank separator lines and status/checkpoint messages."""
    for line in lines:
        if line.strip():
            message = json.loads(line)
            assert message["action"] in {"status", "checkpoint"}, line


# --- fixtures --------------------------------------------------------------------------------------


@pytest.fixture
def kcl_env(provisioned: tuple[Settings, Resources], tmp_path: Path) -> dict[str, str]:
    """The environment the daemon passes on to its children: AWS settings and the app's settings."""
    settings, _ = provisioned
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(to_env(settings))
    env["SHELFSTREAM_OPS__HEALTH_FILE"] = str(tmp_path / "heartbeat")
    env["SHELFSTREAM_CHECKPOINTS__EVERY_RECORDS"] = "1"  # checkpoint after every batch with records
    env["SHELFSTREAM_CHECKPOINTS__EVERY_S"] = "3600"
    return env


@pytest.fixture
def start(kcl_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def run(**env: str) -> Daemon:
        daemon = Daemon({**kcl_env, **env}, tmp_path / "processor.stderr")
        started.append(daemon)
        return daemon

    yield run
    for daemon in started:
        daemon.finish()


@pytest.fixture
def s3_state(provisioned: tuple[Settings, Resources]) -> Callable[[], Checkpoint | None]:
    settings, resources = provisioned
    s3 = sync_client("s3", settings)
    key = S3Checkpoints(None, resources.bucket, settings).key(SHARD)

    def load() -> Checkpoint | None:
        try:
            blob = s3.get_object(Bucket=resources.bucket, Key=key)["Body"].read()
        except s3.exceptions.NoSuchKey:
            return None
        return decode_checkpoint(blob)

    return load


def stock(checkpoint: Checkpoint | None) -> int:
    assert checkpoint is not None
    return checkpoint.core.inventory()[STORE]["milk"]


def restock_requests(provisioned: tuple[Settings, Resources]) -> list[dict[str, Any]]:
    settings, resources = provisioned
    sqs = sync_client("sqs", settings)
    bodies = []
    while True:
        got = sqs.receive_message(QueueUrl=resources.restock_queue_url, MaxNumberOfMessages=10)
        if not got.get("Messages"):
            return bodies
        bodies.extend(json.loads(m["Body"]) for m in got["Messages"])


# --- tests -----------------------------------------------------------------------------------------


def test_a_shard_from_trim_horizon_to_shutdown(
    start: Callable[..., Daemon],
    s3_state: Callable[[], Checkpoint | None],
    provisioned: tuple[Settings, Resources],
    tmp_path: Path,
) -> None:
    daemon = start()
    assert daemon.call(initialize()) == []
    assert s3_state() is None

    seen_in_s3: list[tuple[str | None, int]] = []

    def check_s3_first(request: dict[str, Any]) -> None:
        # The daemon would store this checkpoint now: the snapshot it stands for must already be in S3.
        state = s3_state()
        assert state is not None
        seen_in_s3.append((state.sequence_number, stock(state)))

    for batch in (BATCH_A, BATCH_B, BATCH_C):
        requests = daemon.call(process_records(batch), check_s3_first)
        assert requests == [
            {"action": "checkpoint", "sequenceNumber": seq(batch[-1]), "subSequenceNumber": 0}
        ]
    assert seen_in_s3 == [(seq(b[-1]), STOCK_AFTER[b]) for b in (BATCH_A, BATCH_B, BATCH_C)]

    # callProcessRecordsEvenForEmptyRecordList: an empty batch with nothing new checkpoints nothing.
    assert daemon.call({"action": "processRecords", "records": [], "millisBehindLatest": 0}) == []
    final = daemon.call({"action": "shutdownRequested"})
    assert final == [{"action": "checkpoint", "sequenceNumber": seq(9), "subSequenceNumber": 0}]
    assert daemon.close() == 0
    assert_only_protocol(daemon.stdout)

    state = s3_state()
    assert state is not None
    assert not state.shard_ended
    assert state.core.inventory() == {STORE: {"milk": 39}}
    assert state.core.stats.events_rejected == 1

    requests = restock_requests(provisioned)
    assert [(r["kind"], r["store_id"], r["product_id"], r["on_hand"]) for r in requests] == [
        ("restock_request", STORE, "milk", 4)
    ]
    assert decode_alert(json.dumps(requests[0])).alert_id == requests[0]["alert_id"]

    settings, resources = provisioned
    s3 = sync_client("s3", settings)
    rejected = s3.list_objects_v2(Bucket=resources.bucket, Prefix=settings.prefixes.rejected).get(
        "Contents", []
    )
    assert len(rejected) == 1
    kept = json.loads(s3.get_object(Bucket=resources.bucket, Key=rejected[0]["Key"])["Body"].read())
    assert (kept["sequence_number"], kept["record"]) == (seq(7), "{not json")

    assert (tmp_path / "heartbeat").exists()
    logs = [json.loads(line) for line in (tmp_path / "processor.stderr").read_text().splitlines() if line]
    assert any(entry["msg"] == "checkpoint" for entry in logs)  # the logs exist, and they are on stderr


def test_restart_resumes_from_s3_and_a_redelivered_batch_changes_nothing(
    start: Callable[..., Daemon],
    s3_state: Callable[[], Checkpoint | None],
    provisioned: tuple[Settings, Resources],
) -> None:
    first = start()
    first.call(initialize())
    assert first.call(process_records(BATCH_A)) == [
        {"action": "checkpoint", "sequenceNumber": seq(3), "subSequenceNumber": 0}
    ]
    # Batch B: the snapshot reaches S3, then the worker dies before the KCL stores its checkpoint.
    first.send(process_records(BATCH_B))
    request = first.next_message()
    assert request == {"action": "checkpoint", "sequenceNumber": seq(7), "subSequenceNumber": 0}
    first.kill()
    before = s3_state()
    assert before is not None
    assert before.sequence_number == seq(7)
    assert stock(before) == 4
    assert_only_protocol(first.stdout)

    # The next worker gets the lease at the KCL's checkpoint (end of batch A), so batch B comes again.
    second = start()
    assert second.call(initialize(seq(3))) == []
    redelivered = second.call(process_records(BATCH_B))
    # Nothing applied again, but the KCL may now checkpoint past batch B: S3 already holds it.
    assert redelivered == [{"action": "checkpoint", "sequenceNumber": seq(7), "subSequenceNumber": 0}]
    after = s3_state()
    assert after is not None
    assert after.sequence_number == seq(7)
    assert after.core.inventory() == before.core.inventory()
    assert after.core.stats.events_read == before.core.stats.events_read == len(BATCH_A + BATCH_B)
    assert after.core.stats.duplicates_ignored == 0  # skipped by position, not merely deduplicated

    second.call(process_records(BATCH_C))
    assert second.close() == 0
    state = s3_state()
    assert state is not None
    assert state.core.inventory() == {STORE: {"milk": 39}}
    assert state.core.stats.events_read == len(RECORDS)
    # One request for one crossing of the threshold, though batch B was delivered twice.
    assert len(restock_requests(provisioned)) == 1
    assert_only_protocol(second.stdout)


def test_shard_ended_stores_the_end_then_checkpoints_the_end_marker(
    start: Callable[..., Daemon], s3_state: Callable[[], Checkpoint | None]
) -> None:
    daemon = start(SHELFSTREAM_CHECKPOINTS__EVERY_RECORDS="1000")  # no checkpoint before the end
    daemon.call(initialize())
    assert daemon.call(process_records(BATCH_A)) == []
    assert s3_state() is None

    at_request: list[Checkpoint | None] = []
    requests = daemon.call({"action": "shardEnded"}, lambda request: at_request.append(s3_state()))
    # No sequence number: the daemon's checkpointer.checkpoint() records SHARD_END.
    assert requests == [{"action": "checkpoint", "sequenceNumber": None, "subSequenceNumber": None}]
    assert at_request[0] is not None
    assert at_request[0].shard_ended
    assert at_request[0].sequence_number == seq(3)
    assert stock(at_request[0]) == STOCK_AFTER[BATCH_A]
    assert daemon.close() == 0
    assert_only_protocol(daemon.stdout)


def test_lease_lost_drops_the_state_without_checkpointing(
    start: Callable[..., Daemon], s3_state: Callable[[], Checkpoint | None]
) -> None:
    daemon = start(SHELFSTREAM_CHECKPOINTS__EVERY_RECORDS="1000")
    daemon.call(initialize())
    assert daemon.call(process_records(BATCH_A)) == []
    assert daemon.call({"action": "leaseLost"}) == []
    assert daemon.close() == 0
    assert s3_state() is None  # the new owner starts from the KCL's checkpoint with its own state
    assert_only_protocol(daemon.stdout)


def test_checkpoint_errors_from_the_daemon(
    start: Callable[..., Daemon], s3_state: Callable[[], Checkpoint | None]
) -> None:
    daemon = start()
    daemon.call(initialize())
    answers = iter(["ThrottlingException", None])
    requests = daemon.call(process_records(BATCH_A), lambda request: next(answers))
    assert [r["sequenceNumber"] for r in requests] == [seq(3), seq(3)]  # throttled, so asked again

    # The lease moved: no retry, the batch still completes, the state stays in S3 for the next owner.
    requests = daemon.call(process_records(BATCH_B), lambda request: "ShutdownException")
    assert [r["sequenceNumber"] for r in requests] == [seq(7)]
    state = s3_state()
    assert state is not None
    assert state.sequence_number == seq(7)
    assert daemon.call({"action": "leaseLost"}) == []
    assert daemon.close() == 0
    assert_only_protocol(daemon.stdout)


def test_a_processor_that_cannot_reach_s3_exits_without_answering(
    start: Callable[..., Daemon], provisioned: tuple[Settings, Resources], tmp_path: Path
) -> None:
    settings, resources = provisioned
    daemon = start()
    daemon.call(initialize())
    s3 = sync_client("s3", settings)
    for obj in s3.list_objects_v2(Bucket=resources.bucket).get("Contents", []):
        s3.delete_object(Bucket=resources.bucket, Key=obj["Key"])
    s3.delete_bucket(Bucket=resources.bucket)

    daemon.send(process_records((7,)))  # a rejected record: it must be kept in S3, which is gone
    # No status and no checkpoint: the daemon does not take the batch as done, stops the worker, and
    # the shard restarts from its last checkpoint.
    assert daemon.proc.wait(timeout=SAFETY_TIMEOUT_S) == 1
    daemon.close()
    assert [json.loads(line) for line in daemon.stdout if line.strip()] == [
        {"action": "status", "responseFor": "initialize"}
    ]
    logs = [json.loads(line) for line in (tmp_path / "processor.stderr").read_text().splitlines() if line]
    failure = [entry for entry in logs if entry["level"] == "error"]
    assert failure[0]["action"] == "processRecords"
    assert "NoSuchBucket" in failure[0]["exc"]


def test_a_quiet_shard_follows_the_other_shards_clock_in_dynamodb(
    start: Callable[..., Daemon], provisioned: tuple[Settings, Resources]
) -> None:
    """The record processors of one stream run in separate processes: each publishes its shard's event
    time to the shard clocks table, and one whose shard has gone quiet follows the others' from it,
    so its windows close (and reach the windows archive) while its store is silent."""
    settings, resources = provisioned
    dynamodb = sync_client("dynamodb", settings)
    s3 = sync_client("s3", settings)
    table = resources.shard_clocks_table
    key = {"stream": {"S": settings.aws.stream_name}}
    # The other shard's record processor has seen two hours of trade.
    dynamodb.put_item(
        TableName=table,
        Item={
            **key,
            "shard_id": {"S": "shardId-000000000002"},
            "event_ms": {"N": str(T0 + 2 * 3600_000)},
            "updated_at": {"N": str(time.time())},
        },
    )
    daemon = start(
        SHELFSTREAM_PROCESSOR__IDLE_SHARD_PATIENCE_S="0.5", SHELFSTREAM_PROCESSOR__SHARD_CLOCK_EVERY_S="0.1"
    )
    daemon.call(initialize())
    daemon.call(process_records(BATCH_A))  # store-001's first seconds of trade, then silence

    def windows_archived() -> list[dict[str, Any]]:
        listed = s3.list_objects_v2(Bucket=resources.bucket, Prefix=settings.prefixes.windows)
        bodies = [
            s3.get_object(Bucket=resources.bucket, Key=o["Key"])["Body"].read()
            for o in listed.get("Contents", [])
        ]
        return [json.loads(line) for body in bodies for line in body.splitlines() if line.strip()]

    mine = dynamodb.get_item(TableName=table, Key={**key, "shard_id": {"S": SHARD}})["Item"]
    assert int(mine["event_ms"]["N"]) == T0 + 3000  # its own event time, for the others
    assert abs(int(mine["expires_at"]["N"]) - (time.time() + 7 * 86400)) < 60  # the table's TTL
    assert windows_archived() == []  # three seconds of trade close no window
    time.sleep(0.6)
    daemon.call({"action": "processRecords", "records": [], "millisBehindLatest": 0})
    archived = windows_archived()
    assert archived, "the quiet shard's windows did not close"
    assert {w["store_id"] for w in archived} == {STORE}
    assert max(w["window_end"] for w in archived) <= format_ts(T0 + 2 * 3600_000 - 600_000)
    assert daemon.call({"action": "shardEnded", "checkpoint": None}) == [
        {"action": "checkpoint", "sequenceNumber": None, "subSequenceNumber": None}
    ]
    assert "Item" not in dynamodb.get_item(TableName=table, Key={**key, "shard_id": {"S": SHARD}})
    daemon.close()
