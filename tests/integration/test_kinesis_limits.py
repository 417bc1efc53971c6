"""The embedded Kinesis answers like Kinesis past a shard's limits, over the real wire protocol."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import boto3
import pytest
from botocore.exceptions import ClientError

from foundation.aws import kinesis_limits
from foundation.aws.embedded import EmbeddedAws


class FrozenClock:
    """The quotas' clock, moved only by the test (the embedded AWS serves from this process)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(local_aws: EmbeddedAws, monkeypatch: pytest.MonkeyPatch) -> FrozenClock:
    frozen = FrozenClock()
    monkeypatch.setattr(kinesis_limits.QUOTAS, "clock", frozen)
    return frozen


@pytest.fixture
def kinesis(local_aws: EmbeddedAws, clock: FrozenClock) -> Iterator[tuple[object, str]]:
    client = boto3.client("kinesis", endpoint_url=local_aws.endpoint, region_name="us-east-1")
    stream = f"t-limits-{uuid.uuid4().hex[:10]}"
    client.create_stream(StreamName=stream, ShardCount=1)
    yield client, stream
    client.delete_stream(StreamName=stream)


def test_limits_are_on_by_default(local_aws: EmbeddedAws) -> None:
    assert kinesis_limits.QUOTAS.enabled


def test_put_records_over_the_quota_fails_entries_as_kinesis_does(kinesis: tuple[object, str]) -> None:
    client, stream = kinesis
    entries = [{"Data": b"x" * 10, "PartitionKey": f"store-{i % 7}"} for i in range(500)]
    answers = [client.put_records(StreamName=stream, Records=entries) for _ in range(3)]  # type: ignore[attr-defined]
    failed = sum(a["FailedRecordCount"] for a in answers)
    # 1,500 offered within one second to one shard: 500 over the quota.
    assert failed == 500
    assert [a["FailedRecordCount"] for a in answers] == [0, 0, 500]
    refused = [r for a in answers for r in a["Records"] if "ErrorCode" in r]
    assert len(refused) == failed
    assert {r["ErrorCode"] for r in refused} == {"ProvisionedThroughputExceededException"}
    assert all("Rate exceeded for shard shardId-000000000000" in r["ErrorMessage"] for r in refused)
    # Accepted entries are stored, refused ones are not; answers keep the order of the entries.
    assert all("SequenceNumber" in r for a in answers for r in a["Records"] if "ErrorCode" not in r)
    shard = client.list_shards(StreamName=stream)["Shards"][0]["ShardId"]  # type: ignore[attr-defined]
    iterator = client.get_shard_iterator(  # type: ignore[attr-defined]
        StreamName=stream, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    stored = client.get_records(ShardIterator=iterator, Limit=10_000)["Records"]  # type: ignore[attr-defined]
    assert len(stored) == 1500 - failed


@pytest.mark.slow
def test_put_record_over_the_quota_raises(kinesis: tuple[object, str]) -> None:
    client, stream = kinesis
    entries = [{"Data": b"x", "PartitionKey": "s"} for _ in range(500)]
    client.put_records(StreamName=stream, Records=entries)  # type: ignore[attr-defined]
    client.put_records(StreamName=stream, Records=entries)  # type: ignore[attr-defined]
    with pytest.raises(ClientError) as caught:
        client.put_record(StreamName=stream, Data=b"x", PartitionKey="s")  # type: ignore[attr-defined]
    assert caught.value.response["Error"]["Code"] == "ProvisionedThroughputExceededException"


@pytest.mark.slow
def test_get_records_is_limited_to_five_calls_a_second(
    kinesis: tuple[object, str], clock: FrozenClock
) -> None:
    client, stream = kinesis
    shard = client.list_shards(StreamName=stream)["Shards"][0]["ShardId"]  # type: ignore[attr-defined]
    iterator = client.get_shard_iterator(  # type: ignore[attr-defined]
        StreamName=stream, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    codes = []
    for _ in range(8):
        try:
            iterator = client.get_records(ShardIterator=iterator)["NextShardIterator"]  # type: ignore[attr-defined]
            codes.append("ok")
        except ClientError as exc:
            codes.append(exc.response["Error"]["Code"])
    assert codes == ["ok"] * 5 + ["ProvisionedThroughputExceededException"] * 3
    clock.now += 0.2  # a fifth of a second gives one call back
    client.get_records(ShardIterator=iterator)  # type: ignore[attr-defined]


def test_a_refused_put_is_accepted_after_the_second(kinesis: tuple[object, str], clock: FrozenClock) -> None:
    client, stream = kinesis
    entries = [{"Data": b"x", "PartitionKey": f"k{i}"} for i in range(500)]
    client.put_records(StreamName=stream, Records=entries)  # type: ignore[attr-defined]
    client.put_records(StreamName=stream, Records=entries)  # type: ignore[attr-defined]
    again = client.put_records(StreamName=stream, Records=entries[:10])  # type: ignore[attr-defined]
    assert again["FailedRecordCount"] == 10
    clock.now += 1.0
    again = client.put_records(StreamName=stream, Records=entries[:10])  # type: ignore[attr-defined]
    assert again["FailedRecordCount"] == 0


def test_limits_can_be_turned_off(kinesis: tuple[object, str]) -> None:
    client, stream = kinesis
    kinesis_limits.enable(False)
    try:
        entries = [{"Data": b"x", "PartitionKey": "s"} for _ in range(500)]
        answers = [client.put_records(StreamName=stream, Records=entries) for _ in range(4)]  # type: ignore[attr-defined]
        assert sum(a["FailedRecordCount"] for a in answers) == 0
    finally:
        kinesis_limits.enable(True)


def test_setting_turns_the_limits_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from config import Settings

    monkeypatch.setenv("SHELFSTREAM_AWS__EMBEDDED_KINESIS_LIMITS", "false")
    assert Settings().aws.embedded_kinesis_limits is False
