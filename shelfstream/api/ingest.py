"""HTTP ingest: a body of one event or an array of events, each validated as the processor would.

Valid entries go to Kinesis (partition key = store) and are flushed before the answer, so "accepted"
means "in the stream". Rejected entries are kept with their index and reason in S3
(``rejected/api/...``): nothing sent to the API is lost, whichever way it went.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from config import Settings
from foundation.contract import Rejection, decode_event
from foundation.rejects import RejectedStore, kept_line
from producers.kinesis_writer import KinesisWriter, OutRecord
from shelfstream.api.auth import Principal

log = logging.getLogger(__name__)


class IngestError(Exception):
    """A whole request refused: status and one-line reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class ValidEntry:
    index: int
    data: bytes
    store_id: str


@dataclass(frozen=True, slots=True)
class RejectedEntry:
    index: int
    reason: str
    record: bytes


@dataclass(frozen=True, slots=True)
class Batch:
    valid: list[ValidEntry]
    rejected: list[RejectedEntry]


def parse_batch(body: bytes, principal: Principal, max_events: int) -> Batch:
    """Split a request body into valid and rejected entries, or refuse the request as a whole.

    Refused whole: a body that is not JSON or not an object/array (400), more than `max_events`
    entries (413), and a store token posting any entry for another store (403).
    """
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise IngestError(400, f"the body is not valid JSON: {exc}") from None
    if isinstance(parsed, dict):
        entries: list[Any] = [parsed]
    elif isinstance(parsed, list):
        entries = parsed
    else:
        raise IngestError(400, "the body must be one event (a JSON object) or a JSON array of events")
    if not entries:
        raise IngestError(400, "the array holds no events")
    if len(entries) > max_events:
        raise IngestError(413, f"{len(entries)} events in one request; at most {max_events}")
    if principal.role == "store":
        for index, entry in enumerate(entries):
            if isinstance(entry, dict) and "store_id" in entry and entry["store_id"] != principal.store_id:
                other = entry["store_id"]
                shown = repr(other[:64]) if isinstance(other, str) else f"of type {type(other).__name__}"
                raise IngestError(
                    403,
                    f"entry {index} is for store {shown}; "
                    f"this token may only post for store {principal.store_id!r}",
                )
    valid: list[ValidEntry] = []
    rejected: list[RejectedEntry] = []
    for index, entry in enumerate(entries):
        try:
            raw = orjson.dumps(entry)
        except orjson.JSONEncodeError as exc:
            # Parsed (orjson reads 1,024 levels) but too deep to write again (254): this entry is
            # refused and the whole body kept for it, byte-exact; the other entries go on.
            rejected.append(
                RejectedEntry(index, f"entry cannot be re-encoded ({exc}); the body is kept", body)
            )
            continue
        if not isinstance(entry, dict):
            rejected.append(RejectedEntry(index, "entry is not a JSON object", raw))
            continue
        event = decode_event(raw)
        if isinstance(event, Rejection):
            rejected.append(RejectedEntry(index, event.reason, raw))
        else:
            valid.append(ValidEntry(index, raw, event.store_id))
    return Batch(valid, rejected)


class EventSink(Protocol):
    """Where the API's events go."""

    async def put(self, entries: Sequence[ValidEntry]) -> list[RejectedEntry]:
        """Write the entries, in order; returns those that could not be written, with why."""
        ...

    async def keep_rejected(
        self, request_id: str, principal: Principal, entries: Sequence[RejectedEntry]
    ) -> None:
        """Keep refused entries with their reasons where people can find them."""
        ...


class KinesisEventSink:
    """Kinesis for the valid entries, S3 for the refused ones."""

    def __init__(
        self,
        kinesis: Any,
        s3: Any,
        settings: Settings,
        bucket: str,
        on_written: Callable[[bytes], object] | None = None,
    ) -> None:
        self._kinesis = kinesis
        self._s3 = s3
        self._settings = settings
        self._bucket = bucket
        self._on_written = on_written  # the demo's ledger: an API event is one more produced event

    async def put(self, entries: Sequence[ValidEntry]) -> list[RejectedEntry]:
        if not entries:
            return []
        failed: Counter[tuple[bytes, str]] = Counter()
        reasons: dict[tuple[bytes, str], str] = {}

        def dead_letter(records: Sequence[OutRecord], reason: str) -> None:
            for record in records:
                failed[(record.data, record.partition_key)] += 1
                reasons[(record.data, record.partition_key)] = reason

        # One writer per request: its dead letters are this request's, and close() is the flush
        # after which every entry is either in the stream or reported back.
        writer = KinesisWriter(
            self._kinesis, self._settings.aws.stream_name, self._settings, on_dead_letter=dead_letter
        )
        try:
            for entry in entries:
                await writer.put(entry.data, entry.store_id)
        finally:
            await writer.close()
        not_written: list[RejectedEntry] = []
        for entry in entries:
            key = (entry.data, entry.store_id)
            if failed[key] > 0:
                failed[key] -= 1
                not_written.append(
                    RejectedEntry(
                        entry.index, f"not written to the stream ({reasons[key]}); send it again", key[0]
                    )
                )
            elif self._on_written is not None:
                self._on_written(entry.data)
        return not_written

    async def keep_rejected(
        self, request_id: str, principal: Principal, entries: Sequence[RejectedEntry]
    ) -> None:
        if not entries:
            return
        now = dt.datetime.now(dt.UTC)
        received_at = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        lines = [
            kept_line(
                e.reason,
                e.record,
                {
                    "request_id": request_id,
                    "received_at": received_at,
                    "token": principal.label,
                    "index": e.index,
                },
            )
            for e in entries
        ]
        store = RejectedStore(self._s3, self._bucket, self._settings.prefixes.rejected)
        try:
            await store.keep(f"api/dt={now:%Y-%m-%d}/{request_id}.jsonl", lines)
        except Exception:
            # Still findable: the records themselves go to the error log.
            log.exception(
                "could not keep rejected API entries in S3; they follow in this log",
                extra={"request_id": request_id, "records": b"".join(lines).decode()},
            )


def new_request_id() -> str:
    return uuid.uuid4().hex
