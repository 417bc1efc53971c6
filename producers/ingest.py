"""`shelfstream ingest`: files into the stream, as `count` (and `product`) events.

Two formats:
- a CSV stock list from a store, header ``store,item,count``: one stock take per row; the item name
  becomes a stable product id (``Echo Dot`` -> ``echo-dot``), and a ``product`` event carries the name;
  the count's time is the file's modification time (S3 LastModified), as the format carries none;
- hourly JSON-lines inventory batches from a warehouse system (``inventory_id, product_id,
  warehouse_id, stock_level, restock_threshold, last_updated`` in epoch seconds): the warehouse is the
  store, ``last_updated`` is the event time, and a ``product`` event carries the restock threshold.

Every row is validated (schema, then business rules); valid rows go to the stream, rejected rows are
kept in S3 under ``rejected/ingest/<file name>/<content hash>.jsonl`` with their line number and reason.
Event ids come from the file's content hash and the line number, so ingesting the same file again
sends the same ids and the processor's dedup makes it change nothing.

The parsing and validation below are pure (no I/O, no clock: "now" is a parameter); the async shell at
the end reads the file, sends through :class:`producers.kinesis_writer.KinesisWriter` and keeps the
rejected rows.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import hashlib
import logging
import re
import tempfile
import time
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Final, Literal

import orjson

from config import Settings
from foundation.contract import Count, Product, Rejection, decode_event, encode, to_datetime
from foundation.errors import ShelfstreamError, UsageError
from foundation.metrics import Registry, Sample, emit_emf
from foundation.rejects import RejectedStore, kept_line, safe_name
from foundation.timeunits import DAY_S
from producers.kinesis_writer import KinesisWriter, OutRecord

log = logging.getLogger(__name__)

FileType = Literal["csv", "jsonl"]

CSV_HEADER: Final = ("store", "item", "count")
JSONL_FIELDS: Final = (
    "inventory_id",
    "product_id",
    "warehouse_id",
    "stock_level",
    "restock_threshold",
    "last_updated",
)
MAX_ITEM_CHARS: Final = 128
MAX_COUNT: Final = 2**31 - 1  # the archive's Glue/Parquet column is a 32-bit int
EARLIEST_EPOCH_S: Final = 946_684_800  # 2000-01-01: anything earlier is a unit or clock mistake
FUTURE_SLACK_S: Final = DAY_S
PREVIEW_CHARS: Final = 1024
HASH_CHARS: Final = 20
SNIFF_BYTES: Final = 8192
_STORE_ID: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")  # fullmatch: `$` allows a final newline
_WHOLE: Final = re.compile(r"\+?[0-9]+")
_UTF8_BOM: Final = b"\xef\xbb\xbf"
_FOREIGN_BOMS: Final = (
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\xfe\xff", "UTF-16"),
    (b"\xff\xfe", "UTF-16"),
)


class FileRefused(UsageError):
    """The whole file is refused (empty, not text, wrong header...): nothing of it is sent."""

    def __init__(self, name: str, reason: str, line: int = 0, record: str = "") -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason
        self.line = line
        self.record = record


@dataclass(frozen=True, slots=True)
class Accepted:
    """A valid row: its events (the product first, then the count), all for one store."""

    line: int
    store_id: str
    events: tuple[bytes, ...]
    event_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Rejected:
    line: int
    reason: str
    record: str

    def to_line(self) -> bytes:
        return kept_line(self.reason, self.record.encode("utf-8", "surrogateescape"), {"line": self.line})


Row = Accepted | Rejected


@dataclass(frozen=True, slots=True)
class RawLine:
    """One physical line: its number (1-based), its bytes (only the start when too long), its length."""

    number: int
    data: bytes
    length: int
    too_long: bool = False


@dataclass(frozen=True)
class FileContext:
    """What a parser knows about the file beyond its lines."""

    name: str
    content_hash: str
    mtime_ms: int
    now_ms: int
    max_line_bytes: int = 64 * 1024

    def event_id(self, line: int, suffix: str = "") -> str:
        return f"ingest-{self.content_hash}-{line}{suffix}"


def _stock_take(
    ctx: FileContext, line: int, store: str, product_id: str, when: dt.datetime, count: int, **catalog: Any
) -> tuple[Product, Count]:
    """A row becomes a catalog event (what the file says of the product) and a stock take, with ids
    from the file's content and the line, so re-ingesting the same file repeats them."""
    return (
        Product(event_id=ctx.event_id(line, "-p"), store_id=store, ts=when, product_id=product_id, **catalog),
        Count(event_id=ctx.event_id(line), store_id=store, ts=when, product_id=product_id, count=count),
    )


# --- the pure part ----------------------------------------------------------------------------------


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:HASH_CHARS]


def product_slug(item: str) -> str:
    """A stable product id from an item name: ``Echo Dot`` -> ``echo-dot``, ``Café Crème`` -> ``cafe-creme``.

    A name with no Latin letters or digits (e.g. ``日本茶``) gets ``item-<hash of the name>``.
    """
    folded = unicodedata.normalize("NFKD", item.strip()).encode("ascii", "ignore").decode().lower()
    slug = re.sub(r"[^a-z0-9]+", "-", folded).strip("-")[:MAX_ITEM_CHARS]
    if slug:
        return slug
    return "item-" + hashlib.blake2b(item.strip().encode(), digest_size=6).hexdigest()


def iter_lines(stream: BinaryIO, max_bytes: int) -> Iterator[RawLine]:
    """Physical lines without their line break; a line over ``max_bytes`` is cut (its length is kept)
    and the rest of it skipped without ever being held in memory."""
    number = 0
    while True:
        chunk = stream.readline(max_bytes + 2)
        if not chunk:
            return
        number += 1
        if chunk.endswith(b"\n"):
            body = chunk[:-1]
            body = body[:-1] if body.endswith(b"\r") else body
            if len(body) > max_bytes:
                yield RawLine(number, body[:PREVIEW_CHARS], len(body), too_long=True)
            else:
                yield RawLine(number, body, len(body))
            continue
        if len(chunk) <= max_bytes:  # the last line, without a line break
            yield RawLine(number, chunk[:-1] if chunk.endswith(b"\r") else chunk, len(chunk))
            continue
        length = len(chunk)
        while True:
            more = stream.readline(1 << 20)
            if not more:
                break
            if more.endswith(b"\n"):
                length += len(more) - 1
                break
            length += len(more)
        yield RawLine(number, chunk[:PREVIEW_CHARS], length, too_long=True)


def detect_format(name: str, head: bytes, wanted: str = "auto") -> FileType:
    """The file's format, and a file-level refusal when it is no text file we can read at all."""
    if not head.strip():
        raise FileRefused(name, "the file is empty: nothing to ingest")
    for bom, encoding in _FOREIGN_BOMS:
        if head.startswith(bom):
            raise FileRefused(name, f"the file is {encoding} encoded: save it as UTF-8 and upload it again")
    if head.startswith(b"\x1f\x8b"):
        raise FileRefused(name, "the file is gzip-compressed: upload the CSV or JSON-lines file itself")
    if head.startswith(b"PK\x03\x04"):
        raise FileRefused(name, "the file is a zip archive (an Excel workbook?): export it as CSV (UTF-8)")
    if b"\x00" in head[:SNIFF_BYTES]:
        raise FileRefused(name, "the file is binary (it holds NUL bytes): not a CSV or JSON-lines file")
    if wanted in ("csv", "jsonl"):
        return wanted  # type: ignore[return-value]
    lower = name.lower()
    if lower.endswith(".csv"):
        return "csv"
    if lower.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    return "jsonl" if head.lstrip(_UTF8_BOM).lstrip().startswith(b"{") else "csv"


def _decode(line: RawLine, first: bool) -> str | Rejected:
    data = line.data[len(_UTF8_BOM) :] if first and line.data.startswith(_UTF8_BOM) else line.data
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        column = len(data[: exc.start].decode("utf-8", "replace")) + 1
        return Rejected(
            line.number,
            f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at column {column}): save the file as UTF-8",
            data.decode("utf-8", "replace"),
        )
    if "\x00" in text:
        return Rejected(line.number, "the line holds NUL bytes", text.replace("\x00", "\\0"))
    return text


def _too_long(line: RawLine, ctx: FileContext) -> Rejected:
    preview = line.data.decode("utf-8", "replace")
    return Rejected(
        line.number,
        f"line is {line.length:,} bytes, over the {ctx.max_line_bytes:,}-byte limit",
        f"{preview}... ({line.length:,} bytes, cut)",
    )


def _checked(events: Sequence[Product | Count], line: int, store_id: str) -> Row:
    """Encode the events and hold them to the contract, exactly as the processor will."""
    encoded = tuple(encode(e) for e in events)
    for data in encoded:
        decoded = decode_event(data)
        if isinstance(decoded, Rejection):
            return Rejected(line, decoded.reason, data.decode())
    return Accepted(line, store_id, encoded, tuple(e.event_id for e in events))


def parse_csv(lines: Iterable[RawLine], ctx: FileContext) -> Iterator[Row]:
    """Rows of a ``store,item,count`` stock list. Raises FileRefused on a file-level problem."""
    header_seen = False
    rows = 0
    seen: dict[tuple[str, str], int] = {}
    when = to_datetime(ctx.mtime_ms)
    for line in lines:
        if not header_seen:
            if not line.data.strip(b" \t\r" + _UTF8_BOM):
                continue
            _check_header(line, ctx)
            header_seen = True
            continue
        if line.too_long:
            rows += 1
            yield _too_long(line, ctx)
            continue
        text = _decode(line, first=False)
        if isinstance(text, Rejected):
            rows += 1
            yield text
            continue
        if not text.strip():
            continue
        rows += 1
        try:
            fields = next(csv.reader([text], strict=True))
        except csv.Error as exc:
            yield Rejected(line.number, f"malformed CSV: {exc}", text)
            continue
        if len(fields) != len(CSV_HEADER):
            yield Rejected(line.number, f"expected 3 fields (store,item,count), got {len(fields)}", text)
            continue
        store, item, count_text = (f.strip() for f in fields)
        problem = _csv_problem(store, item, count_text)
        if problem is not None:
            yield Rejected(line.number, problem, text)
            continue
        product_id = product_slug(item)
        first = seen.setdefault((store, product_id), line.number)
        if first != line.number:
            yield Rejected(
                line.number,
                f"duplicate: store {store} and item {item!r} are already on line {first} (the first is kept)",
                text,
            )
            continue
        events = _stock_take(ctx, line.number, store, product_id, when, int(count_text), name=item)
        yield _checked(events, line.number, store)
    if not header_seen:
        raise FileRefused(ctx.name, "the file is empty: nothing to ingest")
    if not rows:
        raise FileRefused(ctx.name, "the file has a header but no rows: nothing to ingest")


def _check_header(line: RawLine, ctx: FileContext) -> None:
    if line.too_long:
        raise FileRefused(
            ctx.name, f"the first line is {line.length:,} bytes: not a store,item,count header", line.number
        )
    text = _decode(line, first=True)
    if isinstance(text, Rejected):
        raise FileRefused(ctx.name, f"header: {text.reason}", line.number, text.record)
    try:
        fields = [f.strip().lower() for f in next(csv.reader([text]))]
    except (csv.Error, StopIteration):
        fields = []
    if tuple(fields) == CSV_HEADER:
        return
    shown = text if len(text) <= 80 else text[:77] + "..."
    hint = ""
    if tuple(f.strip().lower() for f in text.split(";")) == CSV_HEADER:
        hint = " (the file uses ';' between fields: save it with ',')"
    elif text.lstrip().startswith("{"):
        hint = " (this looks like JSON lines: name the file .jsonl or pass --format jsonl)"
    raise FileRefused(
        ctx.name, f"the header must be store,item,count, got {shown!r}{hint}", line.number, text
    )


def _csv_problem(store: str, item: str, count_text: str) -> str | None:
    if not store:
        return "store is empty"
    if not _STORE_ID.fullmatch(store):
        return f"store {store!r} is not a valid store id (1-64 of A-Z a-z 0-9 . _ -)"
    if not item:
        return "item is empty"
    if len(item) > MAX_ITEM_CHARS:
        return f"item is {len(item)} characters, over the {MAX_ITEM_CHARS}-character limit"
    if not count_text:
        return "count is empty"
    if count_text.startswith("-") and _WHOLE.fullmatch(count_text[1:]):
        return f"count {count_text} is negative: a stock count is 0 or more"
    if not _WHOLE.fullmatch(count_text):
        return f"count {count_text!r} is not a whole number"
    if int(count_text) > MAX_COUNT:
        return f"count {count_text} is implausibly large (over {MAX_COUNT:,})"
    return None


def parse_jsonl(lines: Iterable[RawLine], ctx: FileContext) -> Iterator[Row]:
    """Rows of a warehouse inventory batch (one JSON object per line).

    A product may appear again in a batch with a newer ``last_updated`` (sent in file order, the newest
    level wins); a repeat that is not newer would set the stock back, so it is rejected.
    """
    seen: dict[tuple[str, str], tuple[int, int]] = {}
    any_line = False
    for line in lines:
        if line.too_long:
            any_line = True
            yield _too_long(line, ctx)
            continue
        text = _decode(line, first=line.number == 1)
        if isinstance(text, Rejected):
            any_line = True
            yield text
            continue
        if not text.strip():
            continue
        any_line = True
        try:
            record = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            yield Rejected(line.number, f"not valid JSON: {exc}", text)
            continue
        if not isinstance(record, dict):
            yield Rejected(line.number, f"expected a JSON object, got {type(record).__name__}", text)
            continue
        checked = _inventory_fields(record, ctx)
        if isinstance(checked, str):
            yield Rejected(line.number, checked, text)
            continue
        warehouse, product_id, stock, threshold, ts_ms = checked
        earlier = seen.get((warehouse, product_id))
        if earlier is not None and ts_ms <= earlier[1]:
            yield Rejected(
                line.number,
                f"stale: line {earlier[0]} already has a stock level of product {product_id} in warehouse "
                f"{warehouse} at the same time or later (last_updated must increase)",
                text,
            )
            continue
        seen[(warehouse, product_id)] = (line.number, ts_ms)
        when = to_datetime(ts_ms)
        events = _stock_take(
            ctx, line.number, warehouse, product_id, when, stock, restock_threshold=threshold
        )
        yield _checked(events, line.number, warehouse)
    if not any_line:
        raise FileRefused(ctx.name, "the file is empty: nothing to ingest")


def _inventory_fields(record: dict[str, Any], ctx: FileContext) -> tuple[str, str, int, int, int] | str:
    missing = [name for name in JSONL_FIELDS if record.get(name) is None]
    if missing:
        return f"missing field{'s' if len(missing) > 1 else ''}: {', '.join(missing)}"
    inventory_id = record["inventory_id"]
    if not _is_id(inventory_id):
        return "inventory_id must be a non-empty string or an integer"
    product_id = record["product_id"]
    if not _is_id(product_id) or len(str(product_id)) > MAX_ITEM_CHARS:
        return f"product_id must be a string of 1-{MAX_ITEM_CHARS} characters or an integer"
    warehouse = record["warehouse_id"]
    if not _is_id(warehouse) or not _STORE_ID.fullmatch(str(warehouse)):
        return f"warehouse_id {warehouse!r} is not a valid store id (1-64 of A-Z a-z 0-9 . _ -)"
    for name in ("stock_level", "restock_threshold"):
        value = record[name]
        if not isinstance(value, int) or isinstance(value, bool):
            return f"{name} must be a whole number, got {value!r}"
        if value < 0:
            return f"{name} {value} is negative: it must be 0 or more"
        if value > MAX_COUNT:
            return f"{name} {value} is implausibly large (over {MAX_COUNT:,})"
    updated = record["last_updated"]
    if not isinstance(updated, int | float) or isinstance(updated, bool):
        return f"last_updated must be epoch seconds (a number), got {updated!r}"
    if updated > 1e11:
        return f"last_updated {updated} looks like milliseconds: it must be epoch seconds"
    if updated < EARLIEST_EPOCH_S:
        return f"last_updated {updated} is before 2000-01-01: not a plausible time"
    if updated * 1000 > ctx.now_ms + FUTURE_SLACK_S * 1000:
        return f"last_updated {updated} is more than a day in the future"
    return (
        str(warehouse),
        str(product_id),
        record["stock_level"],
        record["restock_threshold"],
        round(updated * 1000),
    )


def _is_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, str) and bool(value.strip()))


def parse_file(stream: BinaryIO, file_type: FileType, ctx: FileContext) -> Iterator[Row]:
    lines = iter_lines(stream, ctx.max_line_bytes)
    return parse_csv(lines, ctx) if file_type == "csv" else parse_jsonl(lines, ctx)


# --- figures and metrics ----------------------------------------------------------------------------


@dataclass
class IngestReport:
    """Per-file figures: processed = succeeded + rejected + errored (rows, header and blanks aside)."""

    source: str
    name: str
    file_type: str
    content_hash: str = ""
    processed: int = 0
    succeeded: int = 0
    rejected: int = 0
    errored: int = 0
    events_sent: int = 0
    rejected_key: str | None = None
    bucket: str = ""
    refused: str | None = None
    event_ids: list[str] = field(default_factory=list, repr=False)

    def figures(self) -> dict[str, int]:
        return {
            "processed": self.processed,
            "succeeded": self.succeeded,
            "rejected": self.rejected,
            "errored": self.errored,
        }


def ingest_registry(report: IngestReport) -> Registry:
    """The file's figures as metrics (namespace shelfstream, by file type)."""

    def read() -> list[Sample]:
        return [
            Sample("RowsProcessed", report.processed),
            Sample("RowsSucceeded", report.succeeded),
            Sample("RowsRejected", report.rejected),
            Sample("RowsErrored", report.errored),
        ]

    return Registry({"FileType": report.file_type}, [read])


def emf_record(report: IngestReport, ts_ms: int) -> dict[str, Any]:
    """The figures as one CloudWatch Embedded Metric Format record, with the file it is about."""
    (record,) = ingest_registry(report).emf_records(ts_ms)
    return {**record, **_context(report)}


def _context(report: IngestReport) -> dict[str, Any]:
    return {"file": report.source, "content_hash": report.content_hash, "refused": report.refused}


def emit_metrics(report: IngestReport) -> None:
    """One EMF line on stderr (CloudWatch Logs turns it into metrics)."""
    emit_emf(ingest_registry(report), _context(report))


# --- the async shell --------------------------------------------------------------------------------


class UnsentRecords:
    """Collects what the writer could not send, so the rows behind it count as errored."""

    def __init__(self) -> None:
        self.entries: list[tuple[OutRecord, str]] = []

    def __call__(self, records: Sequence[OutRecord], reason: str) -> None:
        self.entries.extend((record, reason) for record in records)


def rejected_path(name: str, digest: str) -> str:
    """Where a file's rejected rows are kept, under the rejected prefix (one object per file content)."""
    return f"ingest/{safe_name(name)}/{digest}.jsonl"


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()[:HASH_CHARS]


def _head(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(SNIFF_BYTES)


def _take(rows: Iterator[Row], n: int) -> list[Row]:
    out: list[Row] = []
    for row in rows:
        out.append(row)
        if len(out) >= n:
            break
    return out


@dataclass(frozen=True)
class IngestTarget:
    """Where an ingested file goes: valid rows to the stream through the writer, rejected rows to S3."""

    writer: KinesisWriter
    dead: UnsentRecords
    s3: Any
    bucket: str
    settings: Settings
    wanted: str = "auto"

    @property
    def rejected(self) -> RejectedStore:
        return RejectedStore(self.s3, self.bucket, self.settings.prefixes.rejected)


async def ingest_path(
    path: Path, *, source: str, name: str, mtime_ms: int, target: IngestTarget, now_ms: int | None = None
) -> IngestReport:
    """Validate and send one local file; keep its rejected rows in S3; return its figures.

    Raises FileRefused (nothing sent) for a file-level problem: empty, not text, wrong header.
    """
    writer, dead, settings = target.writer, target.dead, target.settings
    head = await asyncio.to_thread(_head, path)
    file_type = detect_format(name, head, target.wanted)
    digest = await asyncio.to_thread(_hash_file, path)
    report = IngestReport(source, name, file_type, digest, bucket=target.bucket)
    ctx = FileContext(
        name, digest, mtime_ms, now_ms or int(time.time() * 1000), settings.history.ingest_max_line_bytes
    )
    rejected: list[Rejected] = []
    lines_of: dict[str, int] = {}
    accepted: dict[int, Accepted] = {}
    dead_before = len(dead.entries)
    with path.open("rb") as stream:
        rows = parse_file(stream, file_type, ctx)
        while chunk := await asyncio.to_thread(_take, rows, 2000):
            for row in chunk:
                report.processed += 1
                if isinstance(row, Rejected):
                    rejected.append(row)
                    continue
                accepted[row.line] = row
                for event_id, data in zip(row.event_ids, row.events, strict=True):
                    lines_of[event_id] = row.line
                    await writer.put(data, row.store_id)
                    report.events_sent += 1
                    report.event_ids.append(event_id)
    await writer.flush()
    failed: dict[int, str] = {}
    for record, reason in dead.entries[dead_before:]:
        event_id = str(orjson.loads(record.data).get("event_id", ""))
        if event_id in lines_of:
            failed.setdefault(lines_of[event_id], reason)
    report.rejected = len(rejected)
    report.errored = len(failed)
    report.succeeded = len(accepted) - len(failed)
    kept = sorted(
        [
            *rejected,
            *(
                Rejected(line, f"not sent to the stream: {why}", _row_text(accepted[line]))
                for line, why in failed.items()
            ),
        ],
        key=lambda r: r.line,
    )
    if kept:
        report.rejected_key = await target.rejected.keep(
            rejected_path(name, digest), [r.to_line() for r in kept]
        )
    log.info("ingested", extra={"file": source, **report.figures(), "rejected_key": report.rejected_key})
    emit_metrics(report)
    return report


def _row_text(row: Accepted) -> str:
    return row.events[-1].decode()


async def keep_refusal(
    target: IngestTarget, source: str, name: str, digest: str, refusal: FileRefused
) -> IngestReport:
    """A refused file is kept findable too: one entry under rejected/, and its figures as metrics."""
    entry = Rejected(refusal.line, refusal.reason, refusal.record)
    key = await target.rejected.keep(rejected_path(name, digest), [entry.to_line()])
    report = IngestReport(
        source, name, "unknown", digest, rejected_key=key, bucket=target.bucket, refused=refusal.reason
    )
    log.error("file refused", extra={"file": source, "reason": refusal.reason, "rejected_key": key})
    emit_metrics(report)
    return report


def parse_s3_url(url: str) -> tuple[str, str]:
    rest = url[len("s3://") :]
    bucket, _, key = rest.partition("/")
    if not bucket or not key or key.endswith("/"):
        raise UsageError(f"{url} is not an s3://bucket/key address of one object")
    return bucket, key


async def download(s3: Any, bucket: str, key: str, folder: Path) -> tuple[Path, int]:
    """The object into ``folder``; returns the local path and the object's LastModified (ms)."""
    try:
        resp = await s3.get_object(Bucket=bucket, Key=key)
    except Exception as exc:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code")
        if code in {"NoSuchKey", "404", "NoSuchBucket"}:
            raise UsageError(f"s3://{bucket}/{key} does not exist") from exc
        raise
    modified: dt.datetime = resp["LastModified"]
    target = folder / (key.rsplit("/", 1)[-1] or "object")
    with target.open("wb") as out:
        async with resp["Body"] as body:
            while chunk := await body.read(1 << 20):
                await asyncio.to_thread(out.write, chunk)
    return target, int(modified.timestamp() * 1000)


async def ingest_source(source: str, target: IngestTarget) -> IngestReport:
    """A local file or an s3://bucket/key object, through :func:`ingest_path`."""
    if source.startswith("s3://"):
        src_bucket, key = parse_s3_url(source)
        with tempfile.TemporaryDirectory(prefix="shelfstream-ingest-") as folder:
            path, mtime_ms = await download(target.s3, src_bucket, key, Path(folder))
            name = key.rsplit("/", 1)[-1]
            try:
                return await ingest_path(path, source=source, name=name, mtime_ms=mtime_ms, target=target)
            except FileRefused as refusal:
                # An uploaded file has no one watching the terminal: the refusal is kept under rejected/.
                digest = await asyncio.to_thread(_hash_file, path)
                await keep_refusal(target, source, name, digest, refusal)
                raise
    path = Path(source)
    if not path.exists():
        raise UsageError(f"input file {source} does not exist")
    if path.is_dir():
        raise UsageError(f"input {source} is a directory, not a file")
    mtime_ms = int(path.stat().st_mtime * 1000)
    return await ingest_path(path, source=source, name=path.name, mtime_ms=mtime_ms, target=target)


def check_local(source: str, wanted: str, settings: Settings) -> None:
    """Raise the file-level refusals (empty, not text, wrong header, no rows) before any AWS call:
    they come before the first row or, when there is no row, at the end."""
    path = Path(source)
    if not path.exists():
        raise UsageError(f"input file {source} does not exist")
    if path.is_dir():
        raise UsageError(f"input {source} is a directory, not a file")
    try:
        file_type = detect_format(path.name, _head(path), wanted)
        ctx = FileContext(
            path.name, "check", 0, int(time.time() * 1000), settings.history.ingest_max_line_bytes
        )
        with path.open("rb") as stream:
            next(parse_file(stream, file_type, ctx), None)
    except OSError as exc:
        raise ShelfstreamError(f"cannot read {source}: {exc.strerror or exc}") from exc
