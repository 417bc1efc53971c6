"""The archive through Firehose: events, window results, and alerts with requests and stock notes.

Lines are packed into Firehose records of up to ~1,000 KiB: Firehose bills every record as at least
5 KB, and de-aggregates newline-delimited records on the AWS side for partitioning.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from foundation.contract import compact, encode
from processors.core import Effects
from processors.sinks.base import SinkDeadLetters, SinkStats, retry_entries

FIREHOSE_BATCH = 500
FIREHOSE_BATCH_BYTES = 4 * 1024 * 1024
FIREHOSE_RECORD_BYTES = 1000 * 1024


class FirehoseArchive:
    def __init__(
        self, firehose: Any, resources: Any, stats: SinkStats, dead: SinkDeadLetters, base_s: float
    ) -> None:
        self._firehose = firehose
        self._resources = resources
        self._stats = stats
        self._dead = dead
        self._base_s = base_s

    async def send(self, shard_id: str, effects: Effects) -> None:
        if effects.requests or effects.alerts or effects.notes:
            await self.archive_alerts(
                [*(encode(r) for r in effects.requests), *(encode(a) for a in effects.alerts), *effects.notes]
            )
        if effects.archive:
            await self.archive(effects.archive)
        if effects.windows:
            await self.archive_windows(effects.windows)

    async def archive(self, records: Sequence[bytes]) -> None:
        """Accepted events, each as one compact line (the core checked they are UTF-8 JSON)."""
        lines = [with_dt(compact(record), b"ts") for record in records]
        # Awaited first, then added: `stats.archived += await ...` reads the count before the await,
        # and shards sending at the same time then overwrite each other's additions.
        sent = await self._put(self._resources.archive_firehose, lines, "firehose-archive")
        self._stats.archived += sent

    async def archive_windows(self, records: Sequence[bytes]) -> None:
        lines = [with_dt(record, b"window_start") for record in records]
        sent = await self._put(self._resources.windows_firehose, lines, "firehose-windows")
        self._stats.windows_archived += sent

    async def archive_alerts(self, records: Sequence[bytes]) -> None:
        """Every alert, request and stock note (encoded) also goes to the archive, for reports and SQL."""
        lines = [with_dt(record, b"ts") for record in records]
        sent = await self._put(self._resources.alerts_firehose, lines, "firehose-alerts")
        self._stats.alerts_archived += sent

    async def _put(self, stream: str, records: Sequence[bytes], dead_name: str) -> int:
        sent = 0
        for chunk in firehose_chunks(pack_lines(records)):
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

            failed = await retry_entries(entries, send, self._stats, self._base_s)
            sent += sum(count for _, count in chunk) - sum(lines[id(e)] for e, _ in failed)
            await self._dead.keep(dead_name, [(e["Data"], r) for e, r in failed])
        return sent


def with_dt(line: bytes, field: bytes) -> bytes:
    """The line with ``"dt":"YYYY-MM-DD"`` (the UTC date of ``field``) added, the column the history
    tables are partitioned by: Firehose's Iceberg destination partitions by a field of the record
    (identity transform) and cannot derive one. A line that has ``dt`` already, or no such time, is
    left as it is."""
    body = line.rstrip(b"\n")
    start = body.find(b'"' + field + b'":"')
    if start < 0 or not body.endswith(b"}") or b'"dt":' in body:
        return line
    day = body[start + len(field) + 4 : start + len(field) + 14]
    if len(day) != 10 or day[4:5] != b"-" or day[7:8] != b"-" or not (day[:4] + day[5:7] + day[8:]).isdigit():
        return line
    return body[:-1] + b',"dt":"' + day + b'"}' + line[len(body) :]


def pack_lines(records: Sequence[bytes]) -> list[tuple[bytes, int]]:
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


def firehose_chunks(records: Sequence[tuple[bytes, int]]) -> list[list[tuple[bytes, int]]]:
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
