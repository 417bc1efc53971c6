"""Where the core's effects go: SQS (restock requests), SNS (alerts), Firehose (archive, windows),
S3 (rejected records). Each sink batches to its service's limit and retries only the entries that
failed; an entry that keeps failing goes to the dead-letter prefix in S3 with its reason, so nothing
is lost and one bad entry never stops the stream."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from config import Settings
from processors.core import Effects, RejectedRecord
from shelfstream.contract import Alert, Anomaly, RestockRequest, alert_kind, encode
from shelfstream.retry import backoff_s, error_code

log = logging.getLogger(__name__)

SQS_BATCH = 10
SNS_BATCH = 10
FIREHOSE_BATCH = 500
FIREHOSE_BATCH_BYTES = 4 * 1024 * 1024
FIREHOSE_RECORD_BYTES = 1000 * 1024
ATTEMPTS = 6


@dataclass
class SinkStats:
    requests_sent: int = 0
    alerts_published: int = 0
    archived: int = 0
    windows_archived: int = 0
    alerts_archived: int = 0
    rejected_kept: int = 0
    entry_retries: int = 0
    dead_lettered: int = 0


async def _retry_entries(
    entries: Sequence[Any],
    send: Callable[[Sequence[Any]], Awaitable[list[tuple[int, str]]]],
    stats: SinkStats,
    base_s: float,
) -> list[tuple[Any, str]]:
    """Send `entries`; `send` returns the indices that failed with their error. Retries only those,
    and returns what still failed after the last attempt (for the dead-letter prefix)."""
    pending = list(entries)
    last: list[tuple[Any, str]] = []
    for attempt in range(ATTEMPTS):
        try:
            failures = await send(pending)
        except (ClientError, BotoCoreError, OSError, TimeoutError) as exc:
            # The whole call failed (after botocore's own retries): every entry is still pending.
            failures = [(i, f"{error_code(exc)}: {exc}") for i in range(len(pending))]
        if not failures:
            return []
        stats.entry_retries += len(failures)
        last = [(pending[i], reason) for i, reason in failures]
        pending = [entry for entry, _ in last]
        if attempt < ATTEMPTS - 1:
            await asyncio.sleep(backoff_s(attempt, base_s))
    return last


class Sinks:
    def __init__(self, clients: Any, settings: Settings, resources: Any) -> None:
        self._sqs = clients["sqs"]
        self._sns = clients["sns"]
        self._firehose = clients["firehose"]
        self._s3 = clients["s3"]
        self._settings = settings
        self._resources = resources
        self.stats = SinkStats()
        self._base_s = settings.put_base_backoff_s

    # --- SQS: restock requests ----------------------------------------------------------------

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
                resp = await self._sqs.send_message_batch(
                    QueueUrl=self._resources.restock_queue_url, Entries=renumbered
                )
                return [
                    (int(f["Id"]), f"{f.get('Code')}: {f.get('Message', '')}") for f in resp.get("Failed", [])
                ]

            failed = await _retry_entries(entries, send, self.stats, self._base_s)
            self.stats.requests_sent += len(chunk) - len(failed)
            await self._dead_letter("sqs-restock", [(e["MessageBody"].encode(), r) for e, r in failed])

    # --- SNS: alerts ---------------------------------------------------------------------------

    async def publish_alerts(self, alerts: Sequence[Alert]) -> None:
        for start in range(0, len(alerts), SNS_BATCH):
            chunk = alerts[start : start + SNS_BATCH]
            entries = [
                {
                    "Id": str(i),
                    "Message": encode(alert).decode(),
                    "MessageAttributes": message_attributes(alert),
                }
                for i, alert in enumerate(chunk)
            ]

            async def send(batch: Sequence[dict[str, Any]]) -> list[tuple[int, str]]:
                renumbered = [dict(entry, Id=str(i)) for i, entry in enumerate(batch)]
                resp = await self._sns.publish_batch(
                    TopicArn=self._resources.topic_arn, PublishBatchRequestEntries=renumbered
                )
                return [
                    (int(f["Id"]), f"{f.get('Code')}: {f.get('Message', '')}") for f in resp.get("Failed", [])
                ]

            failed = await _retry_entries(entries, send, self.stats, self._base_s)
            self.stats.alerts_published += len(chunk) - len(failed)
            await self._dead_letter("sns-alerts", [(e["Message"].encode(), r) for e, r in failed])

    # --- Firehose: archive and window results ------------------------------------------------

    async def archive(self, records: Sequence[bytes]) -> None:
        sent = await self._firehose_put(self._resources.archive_firehose, records, "firehose-archive")
        self.stats.archived += sent

    async def archive_windows(self, records: Sequence[bytes]) -> None:
        sent = await self._firehose_put(self._resources.windows_firehose, records, "firehose-windows")
        self.stats.windows_archived += sent

    async def _firehose_put(self, stream: str, records: Sequence[bytes], dead_name: str) -> int:
        """Lines are packed into Firehose records of up to ~1,000 KiB: Firehose bills every record as
        at least 5 KB, and de-aggregates newline-delimited records on the AWS side for partitioning."""
        sent = 0
        for chunk in _firehose_chunks(_pack_lines(records)):
            entries = [{"Data": data} for data, _ in chunk]
            lines = {id(entry): count for entry, (_, count) in zip(entries, chunk, strict=True)}

            async def send(batch: Sequence[dict[str, bytes]]) -> list[tuple[int, str]]:
                resp = await self._firehose.put_record_batch(DeliveryStreamName=stream, Records=list(batch))
                if not resp.get("FailedPutCount"):
                    return []
                return [
                    (i, f"{r.get('ErrorCode')}: {r.get('ErrorMessage', '')}")
                    for i, r in enumerate(resp["RequestResponses"])
                    if r.get("ErrorCode")
                ]

            failed = await _retry_entries(entries, send, self.stats, self._base_s)
            sent += sum(count for _, count in chunk) - sum(lines[id(e)] for e, _ in failed)
            await self._dead_letter(dead_name, [(e["Data"], r) for e, r in failed])
        return sent

    async def send(self, shard_id: str, effects: Effects) -> None:
        """One batch's effects, in the order every reader (embedded or KCL) sends them."""
        if effects.requests:
            await self.send_requests(effects.requests)
        if effects.alerts:
            await self.publish_alerts(effects.alerts)
        if effects.requests or effects.alerts or effects.notes:
            await self.archive_alerts(
                [*(encode(r) for r in effects.requests), *(encode(a) for a in effects.alerts), *effects.notes]
            )
        if effects.archive:
            await self.archive(effects.archive)
        if effects.windows:
            await self.archive_windows(effects.windows)
        if effects.rejected:
            await self.keep_rejected(shard_id, effects.rejected)

    async def archive_alerts(self, records: Sequence[bytes]) -> None:
        """Every alert, request and stock note (encoded) also goes to the archive, for reports and SQL."""
        sent = await self._firehose_put(self._resources.alerts_firehose, records, "firehose-alerts")
        self.stats.alerts_archived += sent

    # --- S3: rejected records and the dead letters -------------------------------------------

    async def keep_rejected(self, shard_id: str, rejected: Sequence[RejectedRecord]) -> None:
        """One object per batch, keyed by the batch's first sequence number: a replay overwrites it."""
        if not rejected:
            return
        day = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
        body = b"".join(
            encode(
                {
                    "shard_id": shard_id,
                    "sequence_number": r.ref,
                    "reason": r.reason,
                    "record": r.record.decode("utf-8", "replace"),
                }
            )
            + b"\n"
            for r in rejected
        )
        key = f"{self._settings.rejected_prefix}stream/dt={day}/{shard_id}-{rejected[0].ref}.jsonl"
        await self._s3.put_object(Bucket=self._resources.bucket, Key=key, Body=body)
        self.stats.rejected_kept += len(rejected)

    async def _dead_letter(self, sink: str, failed: Sequence[tuple[bytes, str]]) -> None:
        if not failed:
            return
        body = b"".join(
            encode({"sink": sink, "reason": reason, "record": data.decode("utf-8", "replace")}) + b"\n"
            for data, reason in failed
        )
        digest = hashlib.sha1(body).hexdigest()[:16]
        key = f"{self._settings.rejected_prefix}dead-letter/{sink}/{digest}.jsonl"
        await self._s3.put_object(Bucket=self._resources.bucket, Key=key, Body=body)
        self.stats.dead_lettered += len(failed)
        log.error("dead-lettered entries", extra={"sink": sink, "count": len(failed), "key": key})


def message_attributes(alert: Alert) -> dict[str, dict[str, str]]:
    """SNS attributes so subscribers can filter on kind, store and (anomalies) severity."""
    attrs = {
        "kind": {"DataType": "String", "StringValue": alert_kind(alert)},
        "store_id": {"DataType": "String", "StringValue": alert.store_id},
    }
    if isinstance(alert, Anomaly):
        attrs["severity"] = {"DataType": "Number", "StringValue": str(alert.severity)}
    return attrs


def _pack_lines(records: Sequence[bytes]) -> list[tuple[bytes, int]]:
    """Newline-terminated lines joined into records of at most FIREHOSE_RECORD_BYTES (count kept)."""
    packed: list[tuple[bytes, int]] = []
    current: list[bytes] = []
    size = 0
    for data in records:
        line = data if data.endswith(b"\n") else data + b"\n"
        if current and size + len(line) > FIREHOSE_RECORD_BYTES:
            packed.append((b"".join(current), len(current)))
            current, size = [], 0
        current.append(line)
        size += len(line)
    if current:
        packed.append((b"".join(current), len(current)))
    return packed


def _firehose_chunks(records: Sequence[tuple[bytes, int]]) -> list[list[tuple[bytes, int]]]:
    chunks: list[list[tuple[bytes, int]]] = []
    current: list[tuple[bytes, int]] = []
    size = 0
    for record in records:
        if current and (len(current) >= FIREHOSE_BATCH or size + len(record[0]) > FIREHOSE_BATCH_BYTES):
            chunks.append(current)
            current, size = [], 0
        current.append(record)
        size += len(record[0])
    if current:
        chunks.append(current)
    return chunks
