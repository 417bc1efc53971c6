"""Integration fixtures: one embedded AWS per test session, fresh resource names per test.

Fixtures for every integration test in the project:
- ``local_aws``: the running :class:`EmbeddedAws` (session); the process's AWS SDK points at it.
- ``make_settings(**groups)``: a :class:`Settings` whose resource names are unique to the call
  (``make_settings(aws={"shard_count": 1})``).
- ``settings``: ``make_settings()`` with 2 shards and ``max_receive_count=2``.
- ``provisioned``: ``(settings, resources)`` after :func:`provision`.
- ``read_stream(kinesis, stream)``: every record of every shard, TRIM_HORIZON to the end.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import boto3
import pytest

from config import Settings
from foundation.aws.embedded import EmbeddedAws
from foundation.aws.provision import Resources, provision


@pytest.fixture(scope="session")
def local_aws(isolated_aws_env: None) -> Iterator[EmbeddedAws]:
    with EmbeddedAws() as aws, pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ENDPOINT_URL", aws.endpoint)
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        yield aws


@pytest.fixture
def make_settings(local_aws: EmbeddedAws) -> Iterator[Callable[..., Settings]]:
    made: list[Settings] = []

    def make(**groups: dict[str, Any]) -> Settings:
        uid = uuid.uuid4().hex[:12]
        aws = {
            "stream_name": f"t-{uid}-events",
            "bucket": f"t-{uid}-bucket",
            "archive_firehose": f"t-{uid}-archive",
            "windows_firehose": f"t-{uid}-windows",
            "alerts_firehose": f"t-{uid}-alerts-archive",
            "alerts_topic": f"t-{uid}-alerts",
            "restock_queue": f"t-{uid}-restock",
            "restock_dlq": f"t-{uid}-restock-dlq",
            "alerts_queue": f"t-{uid}-alerts-inbox",
            "deliveries_table": f"t-{uid}-deliveries",
            "incoming_queue": f"t-{uid}-incoming",
            "shard_count": 2,
            "max_receive_count": 2,
        }
        api = {"dashboard_queue": f"t-{uid}-alerts-inbox-dashboard"}
        settings = Settings(
            **{
                **groups,
                "aws": {**aws, **groups.get("aws", {})},
                "api": {**api, **groups.get("api", {})},
            }
        )
        made.append(settings)
        return settings

    yield make
    # moto allows 50 Firehose delivery streams per region: each test removes its own.
    firehose = boto3.client("firehose", endpoint_url=local_aws.endpoint, region_name="us-east-1")
    for settings in made:
        for name in (
            settings.aws.archive_firehose,
            settings.aws.windows_firehose,
            settings.aws.alerts_firehose,
        ):
            with contextlib.suppress(firehose.exceptions.ResourceNotFoundException):
                firehose.delete_delivery_stream(DeliveryStreamName=name)


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def provisioned(settings: Settings) -> tuple[Settings, Resources]:
    return settings, provision(settings)


async def read_all_shards(kinesis: Any, stream: str) -> dict[str, list[dict[str, Any]]]:
    by_shard: dict[str, list[dict[str, Any]]] = {}
    for shard in (await kinesis.list_shards(StreamName=stream))["Shards"]:
        shard_id = shard["ShardId"]
        answer = await kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
        )
        iterator = answer["ShardIterator"]
        records: list[dict[str, Any]] = []
        while iterator:
            page = await kinesis.get_records(ShardIterator=iterator, Limit=1000)
            records.extend(page["Records"])
            if not page["Records"]:
                break
            iterator = page.get("NextShardIterator")
        by_shard[shard_id] = records
    return by_shard


@pytest.fixture
def read_stream() -> Callable[[Any, str], Awaitable[dict[str, list[dict[str, Any]]]]]:
    return read_all_shards
