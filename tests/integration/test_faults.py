"""Faults injected into real clients (botocore's event hooks): throttling, errors, timeouts.

No emulator ever throttles, so the failures are raised in front of the wire; everything else is the
real AWS protocol against the embedded server.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, ReadTimeoutError

from config import Settings
from foundation.aws.clients import AioClients
from foundation.aws.provision import Resources
from processors.stream_processor import StreamProcessor
from tests.integration.test_processor_shell import SERVICES, produce, s3_lines, take_all, workload

pytestmark = pytest.mark.integration


class Faults:
    """Fail the first `times` calls of an operation with `make()`; count every call."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()

    def inject(self, client: Any, event: str, times: int, make: Any) -> None:
        def handler(**kwargs: Any) -> None:
            self.calls[event] += 1
            if self.failed[event] < times:
                self.failed[event] += 1
                raise make()

        client.meta.events.register(f"before-call.{event}", handler)


def client_error(code: str, op: str, status: int = 400) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "injected"}, "ResponseMetadata": {"HTTPStatusCode": status}}, op
    )


async def run_with_faults(
    settings: Settings, resources: Resources, setup: Any
) -> tuple[StreamProcessor, Faults]:
    faults = Faults()
    stop = asyncio.Event()
    async with AioClients(settings, *SERVICES) as clients:
        setup(faults, clients)
        processor = StreamProcessor(settings, clients, resources)
        task = asyncio.create_task(processor.run(stop))
        assert await processor.wait_caught_up(timeout=60)
        stop.set()
        await asyncio.wait_for(task, 60)
    return processor, faults


def drain(queue_url: str) -> list[str]:
    return [m["Body"] for m in take_all(queue_url)]


async def test_throttling_errors_and_timeouts_are_retried_and_nothing_is_lost(
    provisioned: tuple[Settings, Resources],
) -> None:
    settings, resources = provisioned
    records, expected = workload()
    await produce(settings, records)

    def setup(faults: Faults, clients: Any) -> None:
        faults.inject(
            clients["kinesis"],
            "kinesis.GetRecords",
            6,
            lambda: client_error("ProvisionedThroughputExceededException", "GetRecords"),
        )
        faults.inject(
            clients["sqs"],
            "sqs.SendMessageBatch",
            2,
            lambda: client_error("ServiceUnavailable", "SendMessageBatch", 503),
        )
        faults.inject(
            clients["sns"], "sns.PublishBatch", 2, lambda: ReadTimeoutError(endpoint_url="http://sns")
        )
        faults.inject(
            clients["firehose"],
            "firehose.PutRecordBatch",
            3,
            lambda: client_error("ServiceUnavailableException", "PutRecordBatch", 503),
        )

    processor, faults = await run_with_faults(settings, resources, setup)
    assert all(faults.failed[e] > 0 for e in faults.calls)  # every fault really fired
    assert faults.calls["kinesis.GetRecords"] > faults.failed["kinesis.GetRecords"]
    assert processor.inventory() == expected
    assert sum(w.status.throttles for w in processor.workers.values()) == 6
    assert processor.sinks.stats.dead_lettered == 0
    assert len(drain(resources.restock_queue_url)) == len(expected)
    assert len(drain(resources.alerts_queue_url)) == len(expected)
    s3 = boto3.client("s3")
    assert len(s3_lines(s3, resources.bucket, settings.prefixes.events)) == len(records) - 4


async def test_entries_that_keep_failing_go_to_the_dead_letter_prefix(
    provisioned: tuple[Settings, Resources],
) -> None:
    settings, resources = provisioned
    records, expected = workload()
    await produce(settings, records)

    def setup(faults: Faults, clients: Any) -> None:
        faults.inject(
            clients["sns"],
            "sns.PublishBatch",
            10_000,
            lambda: client_error("AuthorizationError", "PublishBatch", 403),
        )

    processor, _ = await run_with_faults(settings, resources, setup)
    assert processor.inventory() == expected  # the stream went on
    dead = s3_lines(
        boto3.client("s3"), resources.bucket, f"{settings.prefixes.rejected}dead-letter/sns-alerts/"
    )
    assert len(dead) == len(expected)  # one out-of-stock alert per store, kept with its reason
    assert all("AuthorizationError" in d["reason"] for d in dead)
    assert {d["sink"] for d in dead} == {"sns-alerts"}
    assert processor.sinks.stats.dead_lettered == len(expected)
    assert len(drain(resources.restock_queue_url)) == len(expected)  # other sinks unaffected
