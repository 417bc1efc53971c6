"""One writer of rejected and dead-lettered records for every path (stream, ingest, API, sinks).

A kept record is one JSON line: where it came from (shard and sequence number, file line, request and
index, or the sink that gave up), the reason, the record as text for people, and the exact bytes in
base64, so a record that is not valid UTF-8 can still be fixed and sent again.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import orjson

CONTENT_TYPE = "application/x-ndjson"


class ObjectStore(Protocol):
    async def put_object(self, **kwargs: Any) -> Any: ...


def kept_line(reason: str, record: bytes, where: Mapping[str, Any] | None = None) -> bytes:
    """One kept record as a JSON line (newline included)."""
    entry: dict[str, Any] = dict(where or {})
    entry["reason"] = reason
    entry["record"] = record.decode("utf-8", "replace")
    entry["record_b64"] = base64.b64encode(record).decode("ascii")
    return orjson.dumps(entry) + b"\n"


def kept_bytes(entry: Mapping[str, Any]) -> bytes:
    """The exact bytes of a kept record (older entries without base64 give their text)."""
    if "record_b64" in entry:
        return base64.b64decode(entry["record_b64"])
    return str(entry.get("record", "")).encode()


def safe_name(name: str) -> str:
    """A file or token name made safe for an S3 key segment."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "file"


def today() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")


def digest_of(body: bytes) -> str:
    return hashlib.sha1(body).hexdigest()[:16]


class RejectedStore:
    """Keeps rejected records under ``<rejected_prefix><path>`` in the app's bucket, one object a batch.

    Keys are derived from the batch's cause (a sequence number, a file hash, a request id, a digest),
    so a replay overwrites the same object instead of keeping a second copy.
    """

    def __init__(self, s3: ObjectStore, bucket: str, prefix: str) -> None:
        self._s3 = s3
        self._bucket = bucket
        self._prefix = prefix

    def key(self, path: str) -> str:
        return f"{self._prefix}{path}"

    async def keep(self, path: str, lines: Iterable[bytes]) -> str:
        """Write the kept lines as one object; returns its key."""
        key = self.key(path)
        await self._s3.put_object(
            Bucket=self._bucket, Key=key, Body=b"".join(lines), ContentType=CONTENT_TYPE
        )
        return key
