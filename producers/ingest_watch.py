"""`shelfstream ingest --watch`: ingest every file uploaded under ``incoming/``, as S3 tells us.

S3 sends an event notification per upload to the incoming SQS queue (``shelfstream provision`` sets it
up); this worker long-polls the queue and ingests each new object. A message is deleted once its files
are ingested, or refused (a refused file is kept under rejected/ with its reason). A failure (AWS down)
leaves the message on the queue, so it comes back after the visibility timeout; after
``max_receive_count`` attempts the failure is kept under rejected/ and the message is let go, so one
broken upload never blocks the queue. Runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

import orjson

from config import Settings
from foundation.errors import UsageError
from producers.ingest import FileRefused, IngestReport, IngestTarget, Rejected, ingest_source, rejected_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Upload:
    bucket: str
    key: str

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass
class Notification:
    """What one SQS message says: the uploads it announces, or that it is S3's test event."""

    uploads: list[Upload] = field(default_factory=list)
    test_event: bool = False
    unknown: bool = False


def parse_notification(body: str, prefix: str) -> Notification:
    """Read an S3 event notification (directly from S3, or wrapped by SNS) for new objects under prefix."""
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        return Notification(unknown=True)
    if not isinstance(message, dict):
        return Notification(unknown=True)
    if message.get("Type") == "Notification" and isinstance(message.get("Message"), str):
        return parse_notification(message["Message"], prefix)  # S3 -> SNS -> SQS
    if message.get("Event") == "s3:TestEvent":
        return Notification(test_event=True)
    records = message.get("Records")
    if not isinstance(records, list):
        return Notification(unknown=True)
    note = Notification()
    for record in records:
        if not isinstance(record, dict) or not str(record.get("eventName", "")).startswith("ObjectCreated"):
            continue
        s3 = record.get("s3") or {}
        bucket = str((s3.get("bucket") or {}).get("name", ""))
        key = unquote_plus(str((s3.get("object") or {}).get("key", "")))  # S3 URL-encodes keys here
        if bucket and key.startswith(prefix) and not key.endswith("/"):
            note.uploads.append(Upload(bucket, key))
    return note


@dataclass
class WatchStats:
    messages: int = 0
    files: int = 0
    refused: int = 0
    failed: int = 0
    test_events: int = 0


class IngestWatcher:
    def __init__(
        self,
        settings: Settings,
        queue_url: str,
        sqs: Any,
        target: IngestTarget,
        *,
        wait_s: int | None = None,
        on_report: Callable[[IngestReport], None] | None = None,
    ) -> None:
        self._settings = settings
        self._queue_url = queue_url
        self._sqs = sqs
        self._target = target
        self._wait_s = settings.history.ingest_wait_s if wait_s is None else wait_s
        self._on_report = on_report
        self.stats = WatchStats()

    async def run(self, stop: asyncio.Event) -> None:
        stopping = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                receiving = asyncio.create_task(
                    self._sqs.receive_message(
                        QueueUrl=self._queue_url,
                        MaxNumberOfMessages=10,
                        WaitTimeSeconds=self._wait_s,
                        AttributeNames=["ApproximateReceiveCount"],
                    )
                )
                await asyncio.wait({receiving, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not receiving.done():
                    receiving.cancel()  # stopping: a message taken meanwhile reappears after its timeout
                    with contextlib.suppress(asyncio.CancelledError):
                        await receiving
                    break
                for message in receiving.result().get("Messages", []):
                    await self.handle(message)
        finally:
            stopping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stopping

    async def handle(self, message: dict[str, Any]) -> list[IngestReport]:
        """Ingest what one message announces; delete it unless a failure should be retried."""
        self.stats.messages += 1
        note = parse_notification(str(message.get("Body", "")), self._settings.prefixes.incoming)
        if note.test_event:
            self.stats.test_events += 1
            log.info("S3 test event on the incoming queue: notifications are wired")
            await self._delete(message)
            return []
        if note.unknown:
            log.warning("not an S3 notification; dropped", extra={"body": str(message.get("Body", ""))[:500]})
            await self._delete(message)
            return []
        reports: list[IngestReport] = []
        retry = False
        for upload in note.uploads:
            try:
                report = await ingest_source(upload.url, self._target)
            except FileRefused:
                self.stats.refused += 1  # kept under rejected/ by ingest_source
                continue
            except UsageError as exc:  # e.g. the object was deleted before we got to it
                log.warning("upload not ingested", extra={"file": upload.url, "reason": str(exc)})
                continue
            except Exception as exc:  # AWS or disk trouble: retried by SQS, then kept and let go
                retry = retry or not await self._give_up(message, upload, exc)
                continue
            self.stats.files += 1
            reports.append(report)
            if self._on_report is not None:
                self._on_report(report)
        if not retry:
            await self._delete(message)
        return reports

    async def _give_up(self, message: dict[str, Any], upload: Upload, exc: Exception) -> bool:
        """True when this was the last attempt (the failure is then kept under rejected/)."""
        self.stats.failed += 1
        attempts = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        last = attempts >= self._settings.aws.max_receive_count
        log.error(
            "ingest failed",
            extra={"file": upload.url, "error": repr(exc), "attempt": attempts, "giving_up": last},
        )
        if last:
            name = upload.key.rsplit("/", 1)[-1]
            entry = Rejected(0, f"ingest failed {attempts} times: {exc!r}", upload.url)
            path = rejected_path(name, f"failed-{message.get('MessageId', 'unknown')}")
            with contextlib.suppress(Exception):
                await self._target.rejected.keep(path, [entry.to_line()])
        return last

    async def _delete(self, message: dict[str, Any]) -> None:
        await self._sqs.delete_message(QueueUrl=self._queue_url, ReceiptHandle=message["ReceiptHandle"])
