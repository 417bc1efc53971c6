"""Restock requests to the SQS restock queue, ten to a call (SQS's batch limit)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from foundation.contract import RestockRequest, encode
from processors.core import Effects
from processors.sinks.base import SinkDeadLetters, SinkStats, retry_entries

SQS_BATCH = 10


class RestockQueue:
    def __init__(
        self, sqs: Any, queue_url: str, stats: SinkStats, dead: SinkDeadLetters, base_s: float
    ) -> None:
        self._sqs = sqs
        self._queue_url = queue_url
        self._stats = stats
        self._dead = dead
        self._base_s = base_s

    async def send(self, shard_id: str, effects: Effects) -> None:
        if effects.requests:
            await self.send_requests(effects.requests)

    async def send_requests(self, requests: Sequence[RestockRequest]) -> None:
        for start in range(0, len(requests), SQS_BATCH):
            chunk = requests[start : start + SQS_BATCH]
            entries = [
                {
                    "Id": str(i),
                    "MessageBody": encode(req).decode(),
                    "MessageAttributes": {
                        "kind": {"DataType": "String", "StringValue": "restock_request"},
                        "store_id": {"DataType": "String", "StringValue": req.store_id},
                        "alert_id": {"DataType": "String", "StringValue": req.alert_id},
                    },
                }
                for i, req in enumerate(chunk)
            ]

            async def send(batch: Sequence[dict[str, Any]]) -> list[tuple[int, str]]:
                renumbered = [dict(entry, Id=str(i)) for i, entry in enumerate(batch)]
                resp = await self._sqs.send_message_batch(QueueUrl=self._queue_url, Entries=renumbered)
                return [
                    (int(f["Id"]), f"{f.get('Code')}: {f.get('Message', '')}") for f in resp.get("Failed", [])
                ]

            failed = await retry_entries(entries, send, self._stats, self._base_s)
            self._stats.requests_sent += len(chunk) - len(failed)
            await self._dead.keep("sqs-restock", [(e["MessageBody"].encode(), r) for e, r in failed])
