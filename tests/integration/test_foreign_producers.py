"""Producers shelfstream did not write: plain boto3 puts and KPL aggregates (aws-kinesis-agg), with the
records that could stop a shard, lose events or break the archive if handled naively. Over the wire,
embedded AWS."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aws_kinesis_agg.aggregator as kpl
import boto3
import orjson
import pytest

from config import Settings
from config.settings import to_env
from foundation.aws.provision import Resources
from foundation.contract import format_ts
from history.archive import S3Archive
from history.query import run_query
from processors.core.stock_ledger import StockChange, StockLedger
from shelfstream.cli import main
from tests.integration.test_processor_shell import process_until_caught_up, s3_lines

pytestmark = pytest.mark.integration

T0 = 1_785_571_200_000


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """main() points the root logger at this test's captured stderr; give the next test its own."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


A, B = "store-a", "store-b"


def event(kind: str, eid: str, store: str, t: int = 0, **fields: Any) -> bytes:
    body = {
        "type": kind,
        "event_id": eid,
        "store_id": store,
        "ts": format_ts(T0 + t * 1000),
        "product_id": "milk",
    }
    return orjson.dumps({**body, **fields})


def sale(eid: str, store: str, t: int, quantity: int = 1) -> bytes:
    return event("sale", eid, store, t, quantity=quantity, unit_price=1.5)


def aggregate(key: str, records: list[bytes]) -> bytes:
    aggregator = kpl.RecordAggregator()
    for data in records:
        assert aggregator.add_user_record(key, data) is None
    _, _, data = aggregator.clear_and_get().get_contents()
    return bytes(data)


PRETTY = json.dumps(
    {
        "type": "sale",
        "event_id": "b-pretty",
        "store_id": B,
        "ts": format_ts(T0 + 9000),
        "product_id": "milk",
        "quantity": 2,
        "unit_price": 1.5,
        "till": {"name": "front desk"},
    },
    indent=2,
).encode()
BAD = {
    "invalid UTF-8 in a string": (b'{"event_id":"x\xff","type":"sale"}', A, "not valid UTF-8"),
    "invalid UTF-8 in an unknown field": (
        sale("a-latin1", A, 3)[:-1] + b',"note":"caf\xe9"}',
        A,
        "not valid UTF-8",
    ),
    "deep nesting": (b'{"type":"sale","x":' * 2000 + b"1" + b"}" * 2000, A, "nested too deeply"),
    "another store's partition key": (sale("a-wrong-key", A, 4), B, "partition key 'store-b'"),
}


def test_boto3_and_kpl_producers_with_bad_records(
    provisioned: tuple[Settings, Resources], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings, resources = provisioned
    real_sale = StockLedger.sale

    def faulty(self: StockLedger, ev: Any, *args: Any) -> StockChange:
        if ev.event_id == "a-fault":
            raise ZeroDivisionError("a fault in our own code")
        return real_sale(self, ev, *args)

    monkeypatch.setattr(StockLedger, "sale", faulty)
    corrupt = bytearray(aggregate(A, [sale("a-lost-1", A, 6), sale("a-lost-2", A, 6)]))
    corrupt[-1] ^= 0xFF  # its MD5 no longer matches
    puts: list[tuple[bytes, str]] = [
        (event("count", "a-count", A, count=20), A),
        (event("count", "b-count", B, count=20), B),
        (aggregate(A, [sale(f"a-kpl-{i}", A, 1 + i) for i in range(5)]), A),
        (bytes(corrupt), A),
        (PRETTY, B),
        (sale("a-fault", A, 7), A),
        (sale("a-after", A, 8), A),
        *((data, key) for data, key, _ in BAD.values()),
    ]
    kinesis = boto3.client("kinesis")
    for data, key in puts:
        kinesis.put_record(StreamName=settings.aws.stream_name, Data=data, PartitionKey=key)

    processor = asyncio.run(process_until_caught_up(settings, resources))

    # Stock: 5 KPL sales and one after the fault for A, the pretty-printed sale of 2 for B.
    assert processor.inventory() == {A: {"milk": 20 - 5 - 1}, B: {"milk": 20 - 2}}
    s3 = boto3.client("s3")
    rejected = s3_lines(s3, resources.bucket, f"{settings.prefixes.rejected}stream/")
    by_record = {base64.b64decode(r["record_b64"]): r for r in rejected}
    assert len(rejected) == len(BAD) + 1
    assert "MD5" in by_record[bytes(corrupt)]["reason"]
    for name, (data, _, reason) in BAD.items():
        assert reason in by_record[data]["reason"], name
        assert by_record[data]["shard_id"].startswith("shardId-")
    # The record that made applying fail: kept byte-exact as a dead letter, the shard went on.
    (dead,) = s3_lines(s3, resources.bucket, f"{settings.prefixes.rejected}dead-letter/stream/")
    assert base64.b64decode(dead["record_b64"]) == sale("a-fault", A, 7)
    assert "ZeroDivisionError" in dead["error"]
    assert processor.sinks.stats.records_failed == 1
    stats = processor.stats()
    assert stats.events_rejected == len(BAD) + 1

    # The archive: one compact line per event; `query` reads all of it.
    result = run_query(
        S3Archive(s3, resources.bucket, settings, tmp_path / "cache"),
        "SELECT store_id, count(*) AS n, sum(quantity) AS units FROM events GROUP BY 1 ORDER BY 1",
    )
    assert result.skipped == {}
    assert result.rows == [(A, 7, 6), (B, 2, 2)]
    keys = [
        o["Key"]
        for o in s3.list_objects_v2(Bucket=resources.bucket, Prefix=settings.prefixes.events)["Contents"]
    ]
    lines = [
        line
        for key in keys
        for line in s3.get_object(Bucket=resources.bucket, Key=key)["Body"].read().splitlines()
    ]
    assert len(lines) == 9
    pretty = next(orjson.loads(line) for line in lines if b"b-pretty" in line)
    assert pretty["till"] == {"name": "front desk"}


def test_a_rejected_record_counts_once_replayed_after_a_fix(
    provisioned: tuple[Settings, Resources],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A sale put under another store's key is rejected; `replay --rejected` sends the kept bytes
    again under the record's own store_id, and the processor (restarted) then applies it."""
    settings, resources = provisioned
    for name, value in to_env(settings).items():
        monkeypatch.setenv(name, value)
    kinesis = boto3.client("kinesis")
    wrong = sale("a-wrong-key", A, 4)
    for data, key in [(event("count", "a-count", A, count=20), A), (wrong, B), (b"{not json", A)]:
        kinesis.put_record(StreamName=settings.aws.stream_name, Data=data, PartitionKey=key)
    first = asyncio.run(process_until_caught_up(settings, resources))
    assert first.inventory() == {A: {"milk": 20}}
    assert first.stats().events_rejected == 2

    assert main(["replay", "--rejected", "--prefix", "stream/"]) == 0
    assert "sent 2 of 2 kept records" in capsys.readouterr().out
    s3 = boto3.client("s3")
    assert s3_lines(s3, resources.bucket, f"{settings.prefixes.rejected}replayed/stream/")

    again = asyncio.run(process_until_caught_up(settings, resources))  # resumes from its checkpoints
    assert again.inventory() == {A: {"milk": 19}}  # the mended sale now counts, once
    kept = s3_lines(s3, resources.bucket, f"{settings.prefixes.rejected}stream/")
    assert [base64.b64decode(k["record_b64"]) for k in kept] == [b"{not json"]  # still bad: kept again
