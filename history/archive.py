"""The archive (events/, windows/, alerts/ in S3) as DuckDB tables, read from S3 or from a local copy.

Two key layouts exist and both are read:
- the embedded AWS (moto's Firehose, DirectPut) writes JSON lines under ``<prefix>YYYY/MM/DD/HH/<name>``,
  a path that says when the batch *arrived*;
- AWS Firehose with dynamic partitioning (deploy/) writes Parquet under
  ``<prefix>dt=YYYY-MM-DD/store_id=.../``, a path that says the event date and the store.

Pruning (skipping objects that cannot hold matching rows) uses only ``dt=`` and ``store_id=`` key
segments. An arrival-time path is never used to prune: a replay archives last month's events today, and
the demo's store clock runs ahead of the wall clock, so arrival says nothing reliable about event time.

Objects are downloaded with boto3 (DuckDB's httpfs extension cannot be installed on every machine, and
we never depend on it) into a local cache that keeps the bucket's key layout, then read by DuckDB's
built-in ``read_json``/``read_parquet``. Columns are fixed per table (the contract's fields, typed), so
a query never depends on which fields happened to appear in the files; unknown extra fields of JSON
records are kept as JSON columns.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import duckdb
import orjson
from botocore.exceptions import BotoCoreError, ClientError

from config import Settings
from foundation.aws.clients import require_aws
from foundation.errors import AwsNotConfiguredError, ShelfstreamError, UsageError

log = logging.getLogger(__name__)

MIRROR_MANIFEST: Final = "MIRROR.json"
MIRROR_PART_BYTES: Final = 64 * 1024 * 1024
DOWNLOAD_WORKERS: Final = 16
_SAMPLE_BYTES: Final = 16 * 1024
_PARQUET_MAGIC: Final = b"PAR1"
_GZIP_MAGIC: Final = b"\x1f\x8b"


@dataclass(frozen=True)
class Table:
    """One archived table: where it lives, its typed columns, its time column and its identity."""

    name: str
    prefix_setting: str  # a member of settings.prefixes
    time_column: str
    key: tuple[str, ...]
    columns: dict[str, str]
    # Of the rows of one identity, the one with the highest value here is the row (windows: the
    # latest revision, a window emitted again with late sales added); None: any (repeats are equal)
    latest: str | None = None
    tables_only: bool = False  # only in the Iceberg tables (an archive of JSON objects has none)

    def prefix(self, settings: Settings) -> str:
        return str(getattr(settings.prefixes, self.prefix_setting)) if self.prefix_setting else ""


TABLES: Final[dict[str, Table]] = {
    "events": Table(
        "events",
        "events",
        "ts",
        ("store_id", "event_id"),  # two stores may use the same event id (docs/contract.md section 1)
        {
            "event_id": "VARCHAR",
            "type": "VARCHAR",
            "store_id": "VARCHAR",
            "ts": "TIMESTAMP",
            "product_id": "VARCHAR",
            "quantity": "BIGINT",
            "unit_price": "DOUBLE",
            "count": "BIGINT",
            "transaction_id": "VARCHAR",
            "reason": "VARCHAR",
            "delivery_id": "VARCHAR",
            "truck_id": "VARCHAR",
            "name": "VARCHAR",
            "category": "VARCHAR",
            "price": "DOUBLE",
            "restock_threshold": "BIGINT",
            "target_stock": "BIGINT",
            "timezone": "VARCHAR",
            "alert_id": "VARCHAR",
            "window_start": "TIMESTAMP",
            "window_end": "TIMESTAMP",
            "verdict": "VARCHAR",
            "note": "VARCHAR",
            "by": "VARCHAR",
        },
    ),
    "windows": Table(
        "windows",
        "windows",
        "window_start",
        ("store_id", "window", "window_start"),
        {
            "store_id": "VARCHAR",
            "window": "VARCHAR",
            "kind": "VARCHAR",
            "window_start": "TIMESTAMP",
            "window_end": "TIMESTAMP",
            "sales": "BIGINT",
            "lines": "BIGINT",
            "units": "BIGINT",
            "revenue": "DOUBLE",
            "refunds": "BIGINT",
            "refund_lines": "BIGINT",
            "refund_units": "BIGINT",
            "refund_amount": "DOUBLE",
            "refund_ratio": "DOUBLE",
            "avg_basket": "DOUBLE",
            "expected": "JSON",
            "anomalies": "VARCHAR[]",
            "timezone": "VARCHAR",
            "revision": "BIGINT",
            "partial": "BOOLEAN",
        },
        latest="revision",
    ),
    "alerts": Table(
        "alerts",
        "alerts",
        "ts",
        ("alert_id",),
        {
            "alert_id": "VARCHAR",
            "kind": "VARCHAR",
            "store_id": "VARCHAR",
            "ts": "TIMESTAMP",
            "product_id": "VARCHAR",
            "on_hand": "BIGINT",
            "threshold": "BIGINT",
            "requested_quantity": "BIGINT",
            "window_start": "TIMESTAMP",
            "window_end": "TIMESTAMP",
            "severity": "BIGINT",
            "score": "DOUBLE",
            "metric": "VARCHAR",
            "observed": "DOUBLE",
            "expected": "JSON",
            "explanation": "VARCHAR",
            "withdrawn_alert_id": "VARCHAR",
            "changes": "JSON",
            "reason": "VARCHAR",
            "contributors": "JSON",
        },
    ),
    "rejected": Table(
        "rejected",
        "rejected",
        "kept_at",
        ("object_key", "line", "sequence_number", "reason", "record_b64"),
        {
            "source": "VARCHAR",
            "object_key": "VARCHAR",
            "shard_id": "VARCHAR",
            "sequence_number": "VARCHAR",
            "line": "BIGINT",
            "reason": "VARCHAR",
            "error": "VARCHAR",
            "record": "VARCHAR",
            "record_b64": "VARCHAR",
            "kept_at": "TIMESTAMP",
        },
        tables_only=True,
    ),
    "kpis_daily": Table(
        "kpis_daily",
        "",
        "day",
        ("store_id", "product_id", "day"),
        {
            "store_id": "VARCHAR",
            "product_id": "VARCHAR",
            "day": "DATE",
            "timezone": "VARCHAR",
            "events": "BIGINT",
            "units_sold": "BIGINT",
            "revenue": "DOUBLE",
            "refund_units": "BIGINT",
            "refund_amount": "DOUBLE",
            "units_delivered": "BIGINT",
            "start_stock": "BIGINT",
            "end_stock": "BIGINT",
            "price": "DOUBLE",
            "open_minutes": "DOUBLE",
            "minutes_out_of_stock": "DOUBLE",
            "availability": "DOUBLE",
            "lost_units": "DOUBLE",
            "lost_value": "DOUBLE",
            "days_of_cover": "DOUBLE",
            "sell_through": "DOUBLE",
        },
        tables_only=True,
    ),
    "kpis_store_daily": Table(
        "kpis_store_daily",
        "",
        "day",
        ("store_id", "day"),
        {
            "store_id": "VARCHAR",
            "day": "DATE",
            "timezone": "VARCHAR",
            "products": "BIGINT",
            "units_sold": "BIGINT",
            "revenue": "DOUBLE",
            "refund_units": "BIGINT",
            "refund_amount": "DOUBLE",
            "units_delivered": "BIGINT",
            "end_stock": "BIGINT",
            "open_minutes": "DOUBLE",
            "products_out_of_stock": "BIGINT",
            "minutes_out_of_stock": "DOUBLE",
            "availability": "DOUBLE",
            "lost_units": "DOUBLE",
            "lost_value": "DOUBLE",
            "sell_through": "DOUBLE",
        },
        tables_only=True,
    ),
}


# --- filters and pruning -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ArchiveFilter:
    """Which stores and event dates (inclusive, UTC) are wanted; None means no limit."""

    stores: frozenset[str] | None = None
    since: dt.date | None = None
    until: dt.date | None = None

    @property
    def unlimited(self) -> bool:
        return self.stores is None and self.since is None and self.until is None

    def narrowed(self, other: ArchiveFilter) -> ArchiveFilter:
        """Both filters at once (the intersection)."""
        stores = self.stores
        if other.stores is not None:
            stores = other.stores if stores is None else stores & other.stores
        since = max((d for d in (self.since, other.since) if d is not None), default=None)
        until = min((d for d in (self.until, other.until) if d is not None), default=None)
        return ArchiveFilter(stores, since, until)

    def keeps(self, store: str | None, day: dt.date | None) -> bool:
        """False only when the key's partition values prove it holds no wanted row."""
        if store is not None and self.stores is not None and store not in self.stores:
            return False
        if day is not None:
            if self.since is not None and day < self.since:
                return False
            if self.until is not None and day > self.until:
                return False
        return True

    def where(self, time_column: str) -> str | None:
        """The same filter as SQL over a table's rows (so results never depend on the key layout)."""
        terms: list[str] = []
        if self.stores is not None:
            terms.append(f"store_id IN ({', '.join(_literal(s) for s in sorted(self.stores)) or 'NULL'})")
        if self.since is not None:
            terms.append(f"{time_column} >= TIMESTAMP '{self.since.isoformat()}'")
        if self.until is not None:
            end = self.until + dt.timedelta(days=1)
            terms.append(f"{time_column} < TIMESTAMP '{end.isoformat()}'")
        return " AND ".join(terms) or None


def partition_of(key: str) -> tuple[str | None, dt.date | None]:
    """The ``store_id=`` and ``dt=`` values a key carries (None when it carries none)."""
    store: str | None = None
    day: dt.date | None = None
    for segment in key.split("/"):
        name, sep, value = segment.partition("=")
        if not sep:
            continue
        if name == "store_id" and value:
            store = value
        elif name == "dt":
            try:
                day = dt.date.fromisoformat(value[:10])
            except ValueError:
                continue
    return store, day


# --- sources -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """The files of one table a query reads, and how many objects pruning skipped."""

    table: str
    files: tuple[Path, ...]
    listed: int
    pruned: int
    note: str | None = None  # what was read, when it was not files (an Iceberg scan)


class ArchiveSource(Protocol):
    def describe(self) -> str: ...

    def select(self, table: Table, keep: ArchiveFilter) -> Selection: ...


class LocalArchive:
    """A directory with the bucket's layout (the demo's mirror, or any copy of the archive)."""

    def __init__(self, root: str | Path, settings: Settings) -> None:
        self.root = Path(root)
        self._settings = settings

    def describe(self) -> str:
        manifest = self.root / MIRROR_MANIFEST
        if manifest.is_file():
            try:
                info = orjson.loads(manifest.read_bytes())
                return f"local mirror {self.root} (of s3://{info['bucket']}, taken {info['mirrored_at']})"
            except (orjson.JSONDecodeError, KeyError, TypeError):
                pass
        return f"local archive {self.root}"

    def select(self, table: Table, keep: ArchiveFilter) -> Selection:
        if table.tables_only:
            return Selection(table.name, (), 0, 0)
        base = self.root / table.prefix(self._settings)
        files: list[Path] = []
        listed = 0
        if base.is_dir():
            for path in sorted(base.rglob("*")):
                if not path.is_file() or path.name.startswith("."):
                    continue
                listed += 1
                if keep.keeps(*partition_of(path.relative_to(self.root).as_posix())):
                    files.append(path)
        return Selection(table.name, tuple(files), listed, listed - len(files))


class S3Archive:
    """The bucket itself; objects are downloaded once into ``cache_dir`` (same key layout)."""

    def __init__(self, s3: Any, bucket: str, settings: Settings, cache_dir: str | Path) -> None:
        self._s3 = s3
        self.bucket = bucket
        self._settings = settings
        self.cache = Path(cache_dir)

    def describe(self) -> str:
        return f"s3://{self.bucket}"

    def select(self, table: Table, keep: ArchiveFilter) -> Selection:
        if table.tables_only:
            return Selection(table.name, (), 0, 0)
        prefix = table.prefix(self._settings)
        try:
            objects = list(list_objects(self._s3, self.bucket, prefix, keep))
        except (ClientError, BotoCoreError) as exc:
            raise ShelfstreamError(f"cannot list s3://{self.bucket}/{prefix}: {exc}") from exc
        wanted = [(key, size) for key, size in objects if keep.keeps(*partition_of(key))]
        files = self._download(wanted)
        return Selection(table.name, tuple(files), len(objects), len(objects) - len(wanted))

    def _download(self, objects: Sequence[tuple[str, int]]) -> list[Path]:
        def fetch(item: tuple[str, int]) -> Path:
            key, size = item
            path = self.cache / key
            if path.is_file() and path.stat().st_size == size:
                return path  # archive objects are written once: same key and size, same content
            body = self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            _write_atomically(path, body)
            return path

        if not objects:
            return []
        try:
            with ThreadPoolExecutor(max_workers=DOWNLOAD_WORKERS) as pool:
                return list(pool.map(fetch, objects))
        except (ClientError, BotoCoreError) as exc:
            raise ShelfstreamError(f"cannot download from s3://{self.bucket}: {exc}") from exc


def list_objects(s3: Any, bucket: str, prefix: str, keep: ArchiveFilter) -> Iterator[tuple[str, int]]:
    """(key, size) of every object under ``prefix``; top-level partition folders (``dt=...``) that
    ``keep`` rules out are not even listed."""
    paginator = s3.get_paginator("list_objects_v2")
    folders: list[str] = []
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
        for obj in page.get("Contents", []):
            yield str(obj["Key"]), int(obj.get("Size", 0))
        folders.extend(str(p["Prefix"]) for p in page.get("CommonPrefixes", []))
    for folder in folders:
        if not keep.keeps(*partition_of(folder)):
            continue
        for page in paginator.paginate(Bucket=bucket, Prefix=folder):
            for obj in page.get("Contents", []):
                yield str(obj["Key"]), int(obj.get("Size", 0))


def _write_atomically(path: Path, body: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(body)
    tmp.replace(path)


class TableSource:
    """The Iceberg history tables (history/tables.py): scanned by pyiceberg into Arrow, which DuckDB
    queries in place (no DuckDB extension: none can be downloaded here)."""

    def __init__(self, tables: Any) -> None:
        self.tables = tables

    def describe(self) -> str:
        return f"history tables (Iceberg, catalog {self.tables.settings.history.tables_catalog})"

    def select(self, table: Table, keep: ArchiveFilter) -> Selection:
        return Selection(table.name, (), 0, 0)

    def arrow(self, table: Table, keep: ArchiveFilter) -> tuple[Any, str]:
        """The table's rows for ``keep`` (partitions outside its dates are pruned by the scan); the
        dates widen by a day, as a local day or a window may start on the UTC date before."""
        since = keep.since - dt.timedelta(days=1) if keep.since else None
        until = keep.until + dt.timedelta(days=1) if keep.until else None
        stores = keep.stores if "store_id" in table.columns else None
        data = self.tables.scan(table.name, since=since, until=until, stores=stores)
        return data, f"{data.num_rows:,} rows scanned"


def aws_configured() -> bool:
    try:
        require_aws()
    except AwsNotConfiguredError:
        return False
    return True


def open_source(
    settings: Settings, archive_dir: str | None, s3_client: Callable[[], Any], source: str = "auto"
) -> tuple[ArchiveSource, str | None]:
    """Where to read the history: ``archive_dir`` (JSON or Parquet objects) if given; else the Iceberg
    tables when they exist (``source`` "auto" or "tables"); else S3 when AWS is configured; else the
    demo's mirror.

    Returns the source and a note for the user when a fallback was taken.
    """
    if archive_dir is not None:
        if not Path(archive_dir).is_dir():
            raise UsageError(f"archive directory {archive_dir} does not exist")
        return LocalArchive(archive_dir, settings), None
    if source != "archive":
        from history.tables import Tables

        if Tables.exists(settings):
            return TableSource(Tables(settings)), None
        if source == "tables":
            raise UsageError(
                f"no history tables in {settings.history.tables_catalog}: run `make demo`, "
                "`shelfstream history "
                "ingest` or `shelfstream history convert DIR`"
            )
    mirror = Path(settings.history.archive_mirror)
    if not aws_configured():
        if mirror.is_dir():
            return LocalArchive(mirror, settings), "no AWS configured: reading the local mirror"
        raise UsageError(
            "no AWS configured and no local archive: run `make demo` (it leaves a mirror in "
            f"{settings.history.archive_mirror}), set AWS_ENDPOINT_URL, or give --archive DIR"
        )
    s3 = s3_client()
    try:
        s3.head_bucket(Bucket=settings.aws.bucket)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code not in {"404", "NoSuchBucket", "NotFound"}:
            raise
        if mirror.is_dir():
            note = f"bucket {settings.aws.bucket} does not exist here: reading the local mirror"
            return LocalArchive(mirror, settings), note
        raise UsageError(
            f"S3 bucket {settings.aws.bucket!r} does not exist: run `shelfstream provision`, "
            "or give --archive DIR for a local copy"
        ) from exc
    cache = Path(settings.history.archive_cache) / settings.aws.bucket
    return S3Archive(s3, settings.aws.bucket, settings, cache), None


# --- DuckDB ------------------------------------------------------------------------------------------


@dataclass
class Archive:
    """A DuckDB connection with one relation per archived table, and what was read to build them."""

    con: duckdb.DuckDBPyConnection
    source: str
    selections: dict[str, Selection] = field(default_factory=dict)
    # Lines of JSON objects that could not be read (tolerant mode only), per table: skipped, counted.
    skipped: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        parts = []
        for sel in self.selections.values():
            if sel.note is not None:
                parts.append(f"{sel.table}: {sel.note}")
                continue
            text = f"{sel.table}: {len(sel.files)} of {sel.listed} objects"
            parts.append(f"{text}, {sel.pruned} pruned" if sel.pruned else text)
        return f"{self.source} ({'; '.join(parts)})" if parts else self.source

    def skipped_note(self) -> str | None:
        """What was skipped, for the user (None: nothing)."""
        if not any(self.skipped.values()):
            return None
        counts = ", ".join(f"{n} in {table}" for table, n in self.skipped.items() if n)
        return f"skipped archive lines that are not readable JSON objects of their table: {counts}"

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def new_connection() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB in UTC that never tries to download an extension."""
    con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False})
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET TimeZone = 'UTC'")
    return con


def open_archive(
    source: ArchiveSource,
    tables: Iterable[str],
    keep: ArchiveFilter | None = None,
    *,
    prune: dict[str, ArchiveFilter] | None = None,
    materialize: bool = False,
    tolerant: bool = False,
) -> Archive:
    """Relations named for ``tables`` over the archive.

    ``keep`` filters rows (and prunes objects); ``prune`` per table only prunes objects (the query's own
    WHERE does the filtering). ``materialize`` loads the rows once (a report runs many queries).
    ``tolerant`` skips (and counts) JSON lines that cannot be read instead of failing: a materialized
    archive falls back to it by itself; views fail when queried, and run_query then opens it again so.
    """
    if materialize and not tolerant:
        try:
            return _open(source, tables, keep, prune, materialize=True, tolerant=False)
        except ShelfstreamError as exc:
            if not unreadable_json(exc):
                raise
            log.warning("archive has unreadable lines; reading it again, skipping them")
        tolerant = True
    return _open(source, tables, keep, prune, materialize, tolerant)


def _open(
    source: ArchiveSource,
    tables: Iterable[str],
    keep: ArchiveFilter | None,
    prune: dict[str, ArchiveFilter] | None,
    materialize: bool,
    tolerant: bool,
) -> Archive:
    keep = keep or ArchiveFilter()
    names = [t for t in TABLES if t in set(tables)]
    archive = Archive(new_connection(), source.describe())
    began = time.perf_counter()
    try:
        for name in names:
            table = TABLES[name]
            narrowed = keep.narrowed((prune or {}).get(name, ArchiveFilter()))
            kind = "TABLE" if materialize else "VIEW"
            if isinstance(source, TableSource):
                data, note = source.arrow(table, narrowed)
                archive.con.register(_ident_raw("_iceberg_" + name), data)
                archive.selections[name] = Selection(name, (), 0, 0, note)
                union = _arrow_select(table, "_iceberg_" + name, data.column_names)
                archive.con.execute(f"CREATE {kind} {name} AS {_filtered_sql(table, union, keep)}")
                continue
            selection = source.select(table, narrowed)
            archive.selections[name] = selection
            if tolerant:
                # Every line once, unreadable ones as all-NULL rows: counted here, left out below.
                lines = _union_sql(archive.con, table, selection.files, tolerant=True)
                archive.con.execute(f"CREATE TEMP {kind} {_ident('_lines_' + name)} AS {lines}")
                key = _ident(table.key[0])
                found = archive.con.execute(
                    f"SELECT count(*) FROM {_ident('_lines_' + name)} WHERE {key} IS NULL"
                ).fetchone()
                archive.skipped[name] = int(found[0]) if found else 0
                readable = f"SELECT * FROM {_ident('_lines_' + name)} WHERE {key} IS NOT NULL"
                relation = _filtered_sql(table, readable, keep)
            else:
                relation = _filtered_sql(table, _union_sql(archive.con, table, selection.files), keep)
            archive.con.execute(f"CREATE {kind} {name} AS {relation}")
    except duckdb.Error as exc:
        archive.close()
        raise ShelfstreamError(f"cannot read the archive: {_first_line(exc)}") from exc
    except BaseException:
        archive.close()
        raise
    log.debug(
        "archive opened",
        extra={"source": archive.describe(), "seconds": round(time.perf_counter() - began, 3)},
    )
    return archive


def unreadable_json(exc: BaseException) -> bool:
    """True when `exc` (or what caused it) is DuckDB refusing a malformed JSON line of the archive."""
    cause = exc if isinstance(exc, duckdb.Error) else exc.__cause__
    return isinstance(cause, duckdb.InvalidInputException) and "JSON" in str(cause)


def _union_sql(
    con: duckdb.DuckDBPyConnection, table: Table, files: Sequence[Path], tolerant: bool = False
) -> str:
    groups: dict[str, list[Path]] = {"json": [], "gzip": [], "parquet": []}
    for path in files:
        groups[_format_of(path)].append(path)
    parts: list[str] = []
    extras = _json_extras(table, groups["json"])
    for fmt in ("json", "gzip"):
        if groups[fmt]:
            parts.append(_json_select(table, groups[fmt], extras, gzip=fmt == "gzip", tolerant=tolerant))
    if groups["parquet"]:
        parts.append(_parquet_select(con, table, groups["parquet"]))
    if not parts:
        columns = ", ".join(f"CAST(NULL AS {kind}) AS {_ident(col)}" for col, kind in table.columns.items())
        parts.append(f"SELECT {columns} WHERE false")
    return " UNION ALL BY NAME ".join(f"({part})" for part in parts)


def _filtered_sql(table: Table, union: str, keep: ArchiveFilter) -> str:
    time_col = _ident(table.time_column)
    where = keep.where(time_col)
    partition = ", ".join(_ident(col) for col in table.key)
    order = f" ORDER BY coalesce({_ident(table.latest)}, 0) DESC" if table.latest else ""
    return (
        f"SELECT *, strftime({time_col}, '%Y-%m-%d') AS dt FROM ({union}) AS rows"
        f"{f' WHERE {where}' if where else ''}"
        # Firehose and a replay after a crash deliver at least once: one row per identity (for
        # windows, its latest revision).
        f" QUALIFY row_number() OVER (PARTITION BY {partition}{order}) = 1"
    )


def _arrow_select(table: Table, relation: str, present: Sequence[str]) -> str:
    """The table's typed columns over a registered Arrow table (times as naive UTC, JSON as JSON), and
    ``extra`` (the unknown fields, as JSON) when it is there."""
    columns = []
    for col, kind in table.columns.items():
        value = _ident(col) if col in present else "NULL"
        if kind.endswith("[]") and col in present:
            value = f"CAST({value} AS JSON)"  # a JSON array held as text in the tables
        columns.append(f"CAST({value} AS {kind}) AS {_ident(col)}")
    if "extra" in present:
        columns.append('CAST("extra" AS JSON) AS "extra"')
    return f"SELECT {', '.join(columns)} FROM {_ident(relation)}"


def _ident_raw(name: str) -> str:
    return name


def _format_of(path: Path) -> str:
    with path.open("rb") as handle:
        head = handle.read(4)
    if head == _PARQUET_MAGIC:
        return "parquet"
    if head[:2] == _GZIP_MAGIC:
        return "gzip"
    return "json"


def _json_extras(table: Table, files: Sequence[Path]) -> list[str]:
    """Fields of JSON records outside the table's columns (from the first lines of each file)."""
    known = set(table.columns) | {"dt"}
    found: dict[str, None] = {}
    for path in files:
        with path.open("rb") as handle:
            head = handle.read(_SAMPLE_BYTES)
        for line in head.splitlines()[:-1] if len(head) == _SAMPLE_BYTES else head.splitlines():
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(record, dict):
                found.update((k, None) for k in record if k not in known)
    return sorted(found)


def _json_select(
    table: Table, files: Sequence[Path], extras: Sequence[str], gzip: bool, tolerant: bool = False
) -> str:
    columns = {**table.columns, **dict.fromkeys(extras, "JSON")}
    spec = "{" + ", ".join(f"{_literal(col)}: {_literal(kind)}" for col, kind in columns.items()) + "}"
    return (
        f"SELECT * FROM read_json({_path_list(files)}, format = 'newline_delimited', columns = {spec}, "
        f"compression = '{'gzip' if gzip else 'none'}'{', ignore_errors = true' if tolerant else ''})"
    )


def _parquet_select(con: duckdb.DuckDBPyConnection, table: Table, files: Sequence[Path]) -> str:
    source = f"read_parquet({_path_list(files)}, union_by_name = true, hive_partitioning = false)"
    present = {str(row[0]): str(row[1]) for row in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
    columns = []
    for col, kind in table.columns.items():
        value = f"{_ident(col)}" if col in present else "NULL"
        columns.append(f"CAST({value} AS {kind}) AS {_ident(col)}")
    columns.extend(_ident(col) for col in present if col not in table.columns and col != "dt")
    return f"SELECT {', '.join(columns)} FROM {source}"


def _path_list(files: Sequence[Path]) -> str:
    return "[" + ", ".join(_literal(str(p)) for p in files) + "]"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


# --- the demo's mirror ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MirrorStats:
    objects: int
    files: int
    bytes: int
    seconds: float


def mirror_archive(s3: Any, bucket: str, settings: Settings, dest: str | Path) -> MirrorStats:
    """Copy the archive's tables to ``dest`` (replacing an older copy), so `query` and `report` work
    after the embedded AWS is gone. JSON objects of one folder are joined into a few large files
    (DuckDB reads a few large files much faster than thousands of small ones); Parquet is copied as is.
    """
    began = time.perf_counter()
    target = Path(dest)
    staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    objects = files = size = 0
    try:
        for table in TABLES.values():
            keys = [key for key, _ in list_objects(s3, bucket, table.prefix(settings), ArchiveFilter())]
            parts: dict[str, _PartWriter] = {}

            def fetch(key: str) -> tuple[str, bytes]:
                return key, s3.get_object(Bucket=bucket, Key=key)["Body"].read()

            with ThreadPoolExecutor(max_workers=DOWNLOAD_WORKERS) as pool:
                for key, body in pool.map(fetch, sorted(keys)):
                    objects += 1
                    size += len(body)
                    if body[:4] == _PARQUET_MAGIC or body[:2] == _GZIP_MAGIC:
                        _write_atomically(staging / key, body)
                        files += 1
                        continue
                    folder = key.rsplit("/", 1)[0] if "/" in key else ""
                    writer = parts.get(folder)
                    if writer is None:
                        writer = parts[folder] = _PartWriter(staging / folder)
                    writer.write(body if body.endswith(b"\n") or not body else body + b"\n")
            for writer in parts.values():
                files += writer.close()
        manifest = {
            "bucket": bucket,
            "mirrored_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "objects": objects,
            "bytes": size,
        }
        (staging / MIRROR_MANIFEST).write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return MirrorStats(objects, files, size, round(time.perf_counter() - began, 3))


class _PartWriter:
    """Appends JSON lines to part-00000.jsonl, part-00001.jsonl, ... of at most MIRROR_PART_BYTES."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._index = -1
        self._size = 0
        self._handle: Any = None

    def write(self, data: bytes) -> None:
        if self._handle is None or self._size + len(data) > MIRROR_PART_BYTES:
            self._next()
        self._handle.write(data)
        self._size += len(data)

    def _next(self) -> None:
        if self._handle is not None:
            self._handle.close()
        self._index += 1
        self._size = 0
        self._folder.mkdir(parents=True, exist_ok=True)
        self._handle = (self._folder / f"part-{self._index:05d}.jsonl").open("wb")

    def close(self) -> int:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        return self._index + 1
