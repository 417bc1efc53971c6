"""Where the core's effects go, one module per destination: SQS (restock requests), SNS (alerts),
Firehose (archive, windows, alerts), S3 (rejected records). Each sink batches to its service's limit
and retries only the entries that failed; an entry that keeps failing goes to the dead letters in S3
with its reason, so nothing is lost and one bad entry never stops the stream.

A new destination is one module with a class that has ``send(shard_id, effects)``, added to the list
in ``Sinks``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from config import Settings
from foundation.contract import Alert, RestockRequest
from foundation.rejects import RejectedStore
from processors.core import Effects, RejectedRecord
from processors.sinks.base import Sink, SinkDeadLetters, SinkStats
from processors.sinks.firehose import FirehoseArchive
from processors.sinks.rejected import RejectedRecords
from processors.sinks.sns import AlertTopic, message_attributes
from processors.sinks.sqs import RestockQueue

__all__ = ["Sink", "SinkStats", "Sinks", "message_attributes"]


class Sinks:
    """Every destination of a batch's effects, for both shells (embedded and KCL)."""

    def __init__(self, clients: Any, settings: Settings, resources: Any) -> None:
        self.stats = SinkStats()
        base_s = settings.producers.put_base_backoff_s
        store = RejectedStore(clients["s3"], resources.bucket, settings.prefixes.rejected)
        dead = SinkDeadLetters(store, self.stats)
        self.queue = RestockQueue(clients["sqs"], resources.restock_queue_url, self.stats, dead, base_s)
        self.topic = AlertTopic(clients["sns"], resources.topic_arn, self.stats, dead, base_s)
        self.firehose = FirehoseArchive(clients["firehose"], resources, self.stats, dead, base_s)
        self.rejected = RejectedRecords(store, self.stats)
        self.sinks: list[Sink] = [self.queue, self.topic, self.firehose, self.rejected]

    async def send(self, shard_id: str, effects: Effects) -> None:
        """Every destination at once: each keeps its own order and retries, and the batch is done (and
        may be checkpointed) only when all of them are. One after another, a poll's restock requests
        waited behind the previous poll's archive writes."""
        results = await asyncio.gather(
            *(sink.send(shard_id, effects) for sink in self.sinks), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def send_requests(self, requests: Sequence[RestockRequest]) -> None:
        await self.queue.send_requests(requests)

    async def publish_alerts(self, alerts: Sequence[Alert]) -> None:
        await self.topic.publish_alerts(alerts)

    async def archive(self, records: Sequence[bytes]) -> None:
        await self.firehose.archive(records)

    async def archive_windows(self, records: Sequence[bytes]) -> None:
        await self.firehose.archive_windows(records)

    async def archive_alerts(self, records: Sequence[bytes]) -> None:
        await self.firehose.archive_alerts(records)

    async def keep_rejected(self, shard_id: str, rejected: Sequence[RejectedRecord]) -> None:
        await self.rejected.keep_rejected(shard_id, rejected)
