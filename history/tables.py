"""The history as Apache Iceberg (format v2) tables: events, windows, alerts, rejected, and daily KPIs.

On AWS, Firehose's Iceberg destination appends to Glue Data Catalog tables with these schemas
(deploy/cloudformation/shelfstream.yaml). Locally (no JVM, no network) the same schemas live in a
pyiceberg SQL catalog on SQLite, with the warehouse on disk or on the embedded S3, and
:func:`ingest` does what Firehose's Iceberg destination does: it turns the JSON lines that moto's
Firehose delivered (one S3 object per PutRecordBatch) into table appends.

Every table is append-only (pyiceberg raises on equality deletes), partitioned by a date column with
the identity transform (the only transform Firehose's table creation supports; events, alerts and
rejected by the UTC date of ``ts``, windows by that of ``window_start``, the KPI tables by the store's
local ``day``), and each append's rows are sorted by store (the tables' sort order).

Idempotent ingest: each object key goes into a ledger (a table beside the catalog's own, in the same
SQLite file) as *pending* with a batch id before the append, and the append's snapshot carries that
batch id (snapshot property ``shelfstream.batch``); once committed the keys are marked *done*. After a
crash, a pending batch whose id is in a snapshot is marked done, any other pending batch is dropped and
its objects read again: an object is appended once, whatever fails when.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlparse

import orjson
import pyarrow as pa

from config import Settings
from foundation.errors import ShelfstreamError, UsageError

log = logging.getLogger(__name__)

NAMESPACE: Final = "shelfstream"
BATCH_PROPERTY: Final = "shelfstream.batch"
KEYS_PROPERTY: Final = "shelfstream.keys"

S = "string"
L = "long"
D = "double"
TS = "timestamptz"
DATE = "date"
LIST = "list<string>"
JSON = "json"  # a string column holding JSON (Athena: json_extract; DuckDB: CAST AS JSON)


@dataclass(frozen=True)
class TableDef:
    """One table: its columns (name, type), its partition column and the field it is derived from."""

    name: str
    columns: tuple[tuple[str, str], ...]
    partition: str
    partition_source: str | None  # the time field whose UTC date is the partition (None: given)
    # a member of settings.prefixes: where moto's Firehose (or the processor) writes its JSON lines
    prefix_setting: str | None = None
    key: tuple[str, ...] = ()
    sort: str = "store_id"  # the table's sort order (rejected records may have no store: by source)

    @property
    def names(self) -> list[str]:
        return [c for c, _ in self.columns]


EVENT_COLUMNS: Final = (
    ("event_id", S),
    ("type", S),
    ("store_id", S),
    ("ts", TS),
    ("product_id", S),
    ("quantity", L),
    ("unit_price", D),
    ("count", L),
    ("transaction_id", S),
    ("reason", S),
    ("delivery_id", S),
    ("truck_id", S),
    ("name", S),
    ("category", S),
    ("price", D),
    ("restock_threshold", L),
    ("target_stock", L),
    ("timezone", S),
    # feedback events (alert_id, or window_start/window_end for a missed incident)
    ("alert_id", S),
    ("window_start", TS),
    ("window_end", TS),
    ("verdict", S),
    ("note", S),
    ("by", S),
    ("extra", JSON),  # unknown fields, kept (docs/contract.md section 1)
    ("dt", DATE),
)
WINDOW_COLUMNS: Final = (
    ("store_id", S),
    ("window", S),
    ("kind", S),
    ("window_start", TS),
    ("window_end", TS),
    ("sales", L),
    ("lines", L),
    ("units", L),
    ("revenue", D),
    ("refunds", L),
    ("refund_lines", L),
    ("refund_units", L),
    ("refund_amount", D),
    ("refund_ratio", D),
    ("avg_basket", D),
    ("expected", JSON),
    ("anomalies", JSON),  # a JSON array of metric names (a plain column Firehose can fill)
    ("timezone", S),
    ("revision", L),  # a window revised by late sales is archived again: readers take the latest
    ("extra", JSON),
    ("dt", DATE),
)
ALERT_COLUMNS: Final = (
    ("alert_id", S),
    ("kind", S),
    ("store_id", S),
    ("ts", TS),
    ("product_id", S),
    ("on_hand", L),
    ("threshold", L),
    ("requested_quantity", L),
    ("reason", S),
    ("expected_stockout_at", TS),
    ("daily_demand", D),
    ("lead_time_s", D),
    ("window_start", TS),
    ("window_end", TS),
    ("severity", L),
    ("score", D),
    ("metric", S),
    ("observed", D),
    ("expected", JSON),
    ("explanation", S),
    ("contributors", JSON),
    ("changes", JSON),
    ("withdrawn_alert_id", S),  # anomaly_withdrawn
    ("extra", JSON),
    ("dt", DATE),
)
REJECTED_COLUMNS: Final = (
    ("source", S),  # stream, ingest, api, dead-letter/...: the first folders of its key
    ("object_key", S),
    ("shard_id", S),
    ("sequence_number", S),
    ("line", L),
    ("reason", S),
    ("error", S),
    ("record", S),
    ("record_b64", S),
    ("kept_at", TS),
    ("extra", JSON),
    ("dt", DATE),
)
KPI_COLUMNS: Final = (
    ("store_id", S),
    ("product_id", S),
    ("day", DATE),
    ("timezone", S),
    ("events", L),
    ("units_sold", L),
    ("revenue", D),
    ("refund_units", L),
    ("refund_amount", D),
    ("units_delivered", L),
    ("start_stock", L),
    ("end_stock", L),
    ("price", D),
    ("open_minutes", D),
    ("minutes_out_of_stock", D),
    ("availability", D),
    ("lost_units", D),
    ("lost_value", D),
    ("days_of_cover", D),
    ("sell_through", D),
)
STORE_KPI_COLUMNS: Final = (
    ("store_id", S),
    ("day", DATE),
    ("timezone", S),
    ("products", L),
    ("units_sold", L),
    ("revenue", D),
    ("refund_units", L),
    ("refund_amount", D),
    ("units_delivered", L),
    ("end_stock", L),
    ("open_minutes", D),
    ("products_out_of_stock", L),
    ("minutes_out_of_stock", D),
    ("availability", D),
    ("lost_units", D),
    ("lost_value", D),
    ("sell_through", D),
)

TABLES: Final[dict[str, TableDef]] = {
    t.name: t
    for t in (
        TableDef("events", EVENT_COLUMNS, "dt", "ts", "events", ("store_id", "event_id")),
        TableDef("windows", WINDOW_COLUMNS, "dt", "window_start", "windows"),
        TableDef("alerts", ALERT_COLUMNS, "dt", "ts", "alerts", ("alert_id",)),
        TableDef("rejected", REJECTED_COLUMNS, "dt", "kept_at", "rejected", sort="source"),
        TableDef("kpis_daily", KPI_COLUMNS, "day", None, None, ("store_id", "product_id", "day")),
        TableDef("kpis_store_daily", STORE_KPI_COLUMNS, "day", None, None, ("store_id", "day")),
    )
}
ARCHIVED: Final = ("events", "windows", "alerts", "rejected")


# --- schemas -----------------------------------------------------------------------------------------


def arrow_type(kind: str) -> pa.DataType:
    return {
        S: pa.large_string(),
        JSON: pa.large_string(),
        L: pa.int64(),
        D: pa.float64(),
        TS: pa.timestamp("us", tz="UTC"),
        DATE: pa.date32(),
        LIST: pa.large_list(pa.large_string()),
    }[kind]


def arrow_schema(table: TableDef) -> pa.Schema:
    return pa.schema([pa.field(name, arrow_type(kind), nullable=True) for name, kind in table.columns])


def iceberg_schema(table: TableDef) -> Any:
    from pyiceberg.schema import Schema
    from pyiceberg.types import (
        DateType,
        DoubleType,
        ListType,
        LongType,
        NestedField,
        StringType,
        TimestamptzType,
    )

    next_id = len(table.columns) + 1
    fields = []
    for i, (name, kind) in enumerate(table.columns, start=1):
        if kind == LIST:
            ftype: Any = ListType(element_id=next_id, element_type=StringType(), element_required=False)
            next_id += 1
        else:
            ftype = {
                S: StringType(),
                JSON: StringType(),
                L: LongType(),
                D: DoubleType(),
                TS: TimestamptzType(),
                DATE: DateType(),
            }[kind]
        fields.append(NestedField(field_id=i, name=name, field_type=ftype, required=False))
    return Schema(*fields)


# --- the catalog -------------------------------------------------------------------------------------


def _endpoint_s3() -> str | None:
    import os

    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def catalog_properties(settings: Settings) -> dict[str, str]:
    """pyiceberg properties: the SQL catalog's SQLite file, the warehouse, S3 endpoint and region."""
    import os

    warehouse = settings.history.tables_warehouse
    if "://" not in warehouse:
        Path(warehouse).mkdir(parents=True, exist_ok=True)
        warehouse = Path(warehouse).resolve().as_uri()
    catalog = Path(settings.history.tables_catalog)
    catalog.parent.mkdir(parents=True, exist_ok=True)
    props = {"uri": f"sqlite:///{catalog.resolve()}", "warehouse": warehouse}
    if warehouse.startswith("s3://"):
        endpoint = _endpoint_s3()
        if endpoint:
            props["s3.endpoint"] = endpoint
            props["s3.force-virtual-addressing"] = "false"
        props["s3.region"] = (
            os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or settings.aws.region
        )
        for env, prop in (
            ("AWS_ACCESS_KEY_ID", "s3.access-key-id"),
            ("AWS_SECRET_ACCESS_KEY", "s3.secret-access-key"),
            ("AWS_SESSION_TOKEN", "s3.session-token"),
        ):
            if os.environ.get(env):
                props[prop] = os.environ[env]
    return props


class Tables:
    """The catalog and its tables (created on first use, with their partition spec and sort order).

    ``tables_catalog`` is a SQLite file (a pyiceberg SQL catalog, locally), or ``glue`` for the AWS
    Glue Data Catalog (deploy/: the database ``tables_namespace``, tables created by the stack)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.namespace = settings.history.tables_namespace
        self.glue = settings.history.tables_catalog == "glue"
        if self.glue:
            from pyiceberg.catalog.glue import GlueCatalog

            self.properties = {
                "warehouse": settings.history.tables_warehouse,
                "glue.region": settings.aws.region,
            }
            self.catalog: Any = GlueCatalog("shelfstream", **self.properties)
        else:
            from pyiceberg.catalog.sql import SqlCatalog

            self.properties = catalog_properties(settings)
            self.catalog = SqlCatalog("shelfstream", **self.properties)
        self._ledger_path = Path(settings.history.tables_catalog).resolve()
        self._tables: dict[str, Any] = {}

    @staticmethod
    def exists(settings: Settings) -> bool:
        """True when the catalog holds the history tables (nothing is created to find out)."""
        if settings.history.tables_catalog == "glue":
            return True
        path = Path(settings.history.tables_catalog)
        if not path.is_file():
            return False
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as con:
                row = con.execute(
                    "SELECT count(*) FROM iceberg_tables WHERE table_namespace = ? AND table_name = 'events'",
                    (settings.history.tables_namespace,),
                ).fetchone()
        except sqlite3.Error:
            return False
        return bool(row and row[0])

    def table(self, name: str) -> Any:
        if name not in self._tables:
            self._tables[name] = self._create(TABLES[name])
        return self._tables[name]

    def refresh(self, name: str) -> Any:
        self._tables[name] = self.catalog.load_table(f"{self.namespace}.{name}")
        return self._tables[name]

    def _create(self, table: TableDef) -> Any:
        from pyiceberg.partitioning import PartitionField, PartitionSpec
        from pyiceberg.table.sorting import SortField, SortOrder
        from pyiceberg.transforms import IdentityTransform

        if self.glue:  # the stack creates the tables (deploy/cloudformation), with these schemas
            return self.catalog.load_table(f"{self.namespace}.{table.name}")
        self.catalog.create_namespace_if_not_exists(self.namespace)
        schema = iceberg_schema(table)
        part = schema.find_field(table.partition)
        spec = PartitionSpec(
            PartitionField(
                source_id=part.field_id, field_id=1000, transform=IdentityTransform(), name=table.partition
            )
        )
        order = SortOrder(
            SortField(source_id=schema.find_field(table.sort).field_id, transform=IdentityTransform())
        )
        return self.catalog.create_table_if_not_exists(
            f"{self.namespace}.{table.name}",
            schema=schema,
            partition_spec=spec,
            sort_order=order,
            properties={"format-version": "2", "write.parquet.compression-codec": "zstd"},
        )

    # --- reading -------------------------------------------------------------------------------------

    def scan(
        self,
        name: str,
        since: dt.date | None = None,
        until: dt.date | None = None,
        stores: Iterable[str] | None = None,
        columns: Sequence[str] | None = None,
    ) -> pa.Table:
        """Rows of a table as Arrow (partitions outside [since, until] are pruned by the scan)."""
        from pyiceberg.expressions import AlwaysTrue, And, GreaterThanOrEqual, In, LessThanOrEqual

        table = TABLES[name]
        expr: Any = AlwaysTrue()
        if since is not None:
            expr = And(expr, GreaterThanOrEqual(table.partition, since.isoformat()))
        if until is not None:
            expr = And(expr, LessThanOrEqual(table.partition, until.isoformat()))
        if stores is not None:
            expr = And(expr, In("store_id", set(stores)))
        scan = self.table(name).scan(row_filter=expr, selected_fields=tuple(columns) if columns else ("*",))
        result: pa.Table = scan.to_arrow()
        return result

    # --- the ingest ledger ---------------------------------------------------------------------------

    def _ledger(self) -> sqlite3.Connection:
        con = sqlite3.connect(self._ledger_path, timeout=30)
        con.execute(
            "CREATE TABLE IF NOT EXISTS shelfstream_ingested (tbl TEXT NOT NULL, key TEXT NOT NULL, "
            "batch TEXT NOT NULL, state TEXT NOT NULL, PRIMARY KEY (tbl, key))"
        )
        return con

    def ingested(self, name: str) -> set[str]:
        """Keys already appended to ``name``, after settling any batch a crash left pending.

        In Glue (no local file survives a task) the keys ride in the snapshots' summaries
        (``shelfstream.keys``), which retention's snapshot expiry drops with the objects' age."""
        if self.glue:
            return {
                key
                for s in self.refresh(name).metadata.snapshots
                if s.summary is not None
                for key in s.summary.additional_properties.get(KEYS_PROPERTY, "").split("\n")
                if key
            }
        with contextlib.closing(self._ledger()) as con, con:
            pending = {
                r[0]
                for r in con.execute(
                    "SELECT DISTINCT batch FROM shelfstream_ingested WHERE tbl = ? AND state = 'pending'",
                    (name,),
                )
            }
            if pending:
                committed = {
                    s.summary.additional_properties.get(BATCH_PROPERTY)
                    for s in self.refresh(name).metadata.snapshots
                    if s.summary is not None
                }
                for batch in pending:
                    if batch in committed:
                        con.execute(
                            "UPDATE shelfstream_ingested SET state = 'done' WHERE batch = ?", (batch,)
                        )
                    else:
                        con.execute("DELETE FROM shelfstream_ingested WHERE batch = ?", (batch,))
            return {r[0] for r in con.execute("SELECT key FROM shelfstream_ingested WHERE tbl = ?", (name,))}

    def append(self, name: str, rows: pa.Table, keys: Sequence[str] = ()) -> None:
        """One append (one snapshot) of ``rows``, recording ``keys`` as ingested with it."""
        batch = uuid.uuid4().hex
        if self.glue:
            props = {BATCH_PROPERTY: batch, KEYS_PROPERTY: "\n".join(keys)}
            self.table(name).append(sort_rows(rows), snapshot_properties=props)
            return
        if keys:
            with contextlib.closing(self._ledger()) as con, con:
                con.executemany(
                    "INSERT OR REPLACE INTO shelfstream_ingested VALUES (?, ?, ?, 'pending')",
                    [(name, k, batch) for k in keys],
                )
        if rows.num_rows:
            self.table(name).append(sort_rows(rows), snapshot_properties={BATCH_PROPERTY: batch})
        if keys:
            with contextlib.closing(self._ledger()) as con, con:
                con.execute("UPDATE shelfstream_ingested SET state = 'done' WHERE batch = ?", (batch,))

    def forget(self, name: str, keys: Iterable[str]) -> None:
        with contextlib.closing(self._ledger()) as con, con:
            con.executemany(
                "DELETE FROM shelfstream_ingested WHERE tbl = ? AND key = ?", [(name, k) for k in keys]
            )


def sort_rows(rows: pa.Table) -> pa.Table:
    """Rows in the tables' order: partition, then store, then time."""
    names = rows.column_names
    keys = [
        (c, "ascending")
        for c in ("dt", "day", "store_id", "source", "ts", "window_start", "kept_at", "product_id")
        if c in names
    ]
    return rows.sort_by(keys) if keys else rows


# --- JSON lines -> rows ------------------------------------------------------------------------------


def parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


def _coerce(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == S:
        return value if isinstance(value, str) else orjson.dumps(value).decode()
    if kind == JSON:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    if kind == L:
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return None
    if kind == D:
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    if kind == TS:
        return parse_time(value)
    if kind == DATE:
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return dt.date.fromisoformat(value[:10])
        return None
    if kind == LIST:
        return [str(v) for v in value] if isinstance(value, list) else None
    return None


@dataclass
class RowBuilder:
    """Columns of one table, filled from JSON objects."""

    table: TableDef
    columns: dict[str, list[Any]] = field(default_factory=dict)
    skipped: int = 0

    def __post_init__(self) -> None:
        self.columns = {name: [] for name in self.table.names}
        self._kinds = dict(self.table.columns)
        self._known = set(self.table.names)

    def add(self, record: dict[str, Any], defaults: dict[str, Any] | None = None) -> bool:
        merged = {**(defaults or {}), **record}
        values = {name: _coerce(kind, merged.get(name)) for name, kind in self.table.columns}
        extras = {k: v for k, v in record.items() if k not in self._known}
        values["extra"] = orjson.dumps(extras, option=orjson.OPT_SORT_KEYS).decode() if extras else None
        source = self.table.partition_source
        if source is not None and values.get(self.table.partition) is None:
            moment = values.get(source)
            if not isinstance(moment, dt.datetime):
                self.skipped += 1
                return False
            values[self.table.partition] = moment.date()
        for name in self.table.names:
            self.columns[name].append(values[name])
        return True

    def add_lines(self, body: bytes, defaults: dict[str, Any] | None = None) -> int:
        added = 0
        for line in body.splitlines():
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                self.skipped += 1
                continue
            if not isinstance(record, dict):
                self.skipped += 1
                continue
            added += self.add(record, defaults)
        return added

    def __len__(self) -> int:
        return len(self.columns[self.table.names[0]])

    def arrow(self) -> pa.Table:
        return pa.Table.from_pydict(self.columns, schema=arrow_schema(self.table))

    def clear(self) -> None:
        for values in self.columns.values():
            values.clear()


def rejected_defaults(key: str, rejected_prefix: str, modified: dt.datetime | None) -> dict[str, Any]:
    """What a rejected object's key says of its lines: where they came from and when they were kept."""
    rest = key[len(rejected_prefix) :] if key.startswith(rejected_prefix) else key
    parts = rest.split("/")
    day: str | None = None
    source: list[str] = []
    for part in parts[:-1]:
        name, sep, value = part.partition("=")
        if sep and name == "dt":
            day = value[:10]
            break
        source.append(part)
    kept = modified or dt.datetime.now(dt.UTC)
    if day is not None:
        with contextlib.suppress(ValueError):
            kept = (
                dt.datetime.combine(dt.date.fromisoformat(day), dt.time(), dt.UTC)
                if modified is None
                else kept
            )
    return {
        "source": "/".join(source[:2]) or "unknown",
        "object_key": key,
        "kept_at": kept.isoformat(),
        "dt": day or kept.date().isoformat(),
    }


# --- ingest: delivered JSON objects -> appends (what Firehose's Iceberg destination does on AWS) --------


@dataclass
class IngestStats:
    objects: dict[str, int] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    skipped_lines: dict[str, int] = field(default_factory=dict)
    days: set[dt.date] = field(default_factory=set)  # event dates appended to (for the KPIs)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "objects": self.objects,
            "rows": self.rows,
            "skipped_lines": self.skipped_lines,
            "days": sorted(d.isoformat() for d in self.days),
            "seconds": round(self.seconds, 3),
        }


ObjectLister = Callable[[str], Iterator[tuple[str, dt.datetime | None]]]
ObjectReader = Callable[[str], bytes]


def s3_lister(s3: Any, bucket: str) -> ObjectLister:
    def listing(prefix: str) -> Iterator[tuple[str, dt.datetime | None]]:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                yield str(obj["Key"]), obj.get("LastModified")

    return listing


def s3_reader(s3: Any, bucket: str) -> ObjectReader:
    def read(key: str) -> bytes:
        body: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        return body

    return read


def dir_lister(root: Path) -> ObjectLister:
    def listing(prefix: str) -> Iterator[tuple[str, dt.datetime | None]]:
        base = root / prefix
        if not base.is_dir():
            return
        for path in sorted(base.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                yield (
                    path.relative_to(root).as_posix(),
                    dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC),
                )

    return listing


def dir_reader(root: Path) -> ObjectReader:
    return lambda key: (root / key).read_bytes()


INGEST_BATCH_ROWS: Final = 500_000


def ingest(
    tables: Tables,
    listing: ObjectLister,
    read: ObjectReader,
    names: Sequence[str] = ARCHIVED,
    batch_rows: int = INGEST_BATCH_ROWS,
) -> IngestStats:
    """Append every delivered JSON object not yet in its table (idempotent: see the module's doc).

    JSON lines, gzip'd JSON lines and Parquet (a Firehose with format conversion) are read alike, so an
    archive written before the tables converts the same way. The objects themselves stay: the dashboard
    tails them, and retention (`maintain --landing`) removes them.
    """
    began = time.perf_counter()
    stats = IngestStats()
    settings = tables.settings
    for name in names:
        table = TABLES[name]
        prefix = str(getattr(settings.prefixes, table.prefix_setting or ""))
        done = tables.ingested(name)
        builder = RowBuilder(table)
        keys: list[str] = []
        objects = rows = 0

        for key, modified in listing(prefix):
            if (
                key in done
                or key.endswith("/")
                or key.rsplit("/", 1)[-1].startswith(".")
                or key.endswith(".json")
            ):
                continue
            if name != "rejected" and any(part.startswith("rejected") for part in key.split("/")[:1]):
                continue
            body = read(key)
            defaults = rejected_defaults(key, prefix, modified) if name == "rejected" else None
            if body[:2] == b"\x1f\x8b":
                body = gzip.decompress(body)
            if body[:4] == b"PAR1":
                rows += sum(builder.add(r, defaults) for r in _parquet_records(body))
            else:
                rows += builder.add_lines(body, defaults)
            keys.append(key)
            objects += 1
            if len(builder) >= batch_rows:
                _flush(tables, name, builder, keys, stats)
                keys = []
        if keys or len(builder):
            _flush(tables, name, builder, keys, stats)
        stats.objects[name] = objects
        stats.rows[name] = rows
        stats.skipped_lines[name] = builder.skipped
    stats.seconds = time.perf_counter() - began
    return stats


def _flush(tables: Tables, name: str, builder: RowBuilder, keys: list[str], stats: IngestStats) -> None:
    data = builder.arrow()
    if name == "events" and data.num_rows:
        stats.days.update(d for d in data.column("dt").unique().to_pylist() if d is not None)
    tables.append(name, data, keys)
    builder.clear()


def _parquet_records(body: bytes) -> list[dict[str, Any]]:
    """Rows of a Parquet object (the AWS layout before the tables: Firehose's format conversion)."""
    import pyarrow.parquet as pq

    records: list[dict[str, Any]] = pq.read_table(pa.BufferReader(body)).to_pylist()
    for record in records:
        for k, v in list(record.items()):
            if isinstance(v, dt.datetime):
                record[k] = (v if v.tzinfo else v.replace(tzinfo=dt.UTC)).isoformat()
            elif v is None:
                del record[k]
    return records


def append_lines(tables: Tables, name: str, lines: Iterable[bytes]) -> int:
    """Append JSON lines straight to a table (the benchmark's and the tests' direct path)."""
    builder = RowBuilder(TABLES[name])
    for line in lines:
        builder.add_lines(line)
    tables.append(name, builder.arrow())
    return len(builder)


# --- maintenance: retention, compaction, stats ---------------------------------------------------------


@dataclass(frozen=True)
class PartitionStats:
    table: str
    partition: str
    files: int
    rows: int
    bytes: int

    @property
    def mean_file_bytes(self) -> float:
        return self.bytes / self.files if self.files else 0.0


def partition_stats(tables: Tables, names: Sequence[str] = tuple(TABLES)) -> list[PartitionStats]:
    """Data files, rows and bytes per partition of each table (from the current snapshot's manifests)."""
    out: list[PartitionStats] = []
    for name in names:
        files = tables.table(name).inspect.files().select(["partition", "record_count", "file_size_in_bytes"])
        agg: dict[str, list[int]] = {}
        for row in files.to_pylist():
            value = (row["partition"] or {}).get(TABLES[name].partition)
            key = value.isoformat() if isinstance(value, dt.date) else str(value)
            cur = agg.setdefault(key, [0, 0, 0])
            cur[0] += 1
            cur[1] += int(row["record_count"])
            cur[2] += int(row["file_size_in_bytes"])
        out.extend(PartitionStats(name, p, f, r, b) for p, (f, r, b) in sorted(agg.items()))
    return out


def compact(
    tables: Tables, before: dt.date, names: Sequence[str] = tuple(TABLES), min_files: int = 2
) -> dict[str, int]:
    """Rewrite each closed partition (dates before ``before``) that has ``min_files`` or more data
    files into one file, sorted by store and time (copy-on-write overwrite of that partition alone).
    Idempotent: a partition already in one file is left alone. Returns partitions compacted per table."""
    from pyiceberg.expressions import EqualTo

    done: dict[str, int] = {}
    for name in names:
        table = TABLES[name]
        count = 0
        for part in partition_stats(tables, [name]):
            if part.files < min_files or part.partition in ("None", "null"):
                continue
            day = dt.date.fromisoformat(part.partition)
            if day >= before:
                continue
            data = tables.scan(name, since=day, until=day)
            tables.table(name).overwrite(
                sort_rows(data), overwrite_filter=EqualTo(table.partition, day.isoformat())
            )
            count += 1
        done[name] = count
    return done


def expire_partitions(
    tables: Tables, keep_since: dt.date, names: Sequence[str] = tuple(TABLES)
) -> dict[str, int]:
    """Delete every partition dated before ``keep_since`` (whole data files: no row rewrite)."""
    from pyiceberg.expressions import LessThan

    removed: dict[str, int] = {}
    for name in names:
        table = TABLES[name]
        old = [p for p in partition_stats(tables, [name]) if p.partition < keep_since.isoformat()]
        if old:
            tables.table(name).delete(LessThan(table.partition, keep_since.isoformat()))
        removed[name] = sum(p.rows for p in old)
    return removed


def expire_snapshots(
    tables: Tables, older_than: dt.datetime, names: Sequence[str] = tuple(TABLES)
) -> dict[str, int]:
    """Expire snapshots older than ``older_than`` (the current one always stays)."""
    expired: dict[str, int] = {}
    for name in names:
        table = tables.refresh(name)
        before = len(table.metadata.snapshots)
        with contextlib.suppress(ValueError):
            table.maintenance.expire_snapshots().older_than(older_than).commit()
        expired[name] = before - len(tables.refresh(name).metadata.snapshots)
    return expired


def _filesystem(tables: Tables, location: str) -> tuple[Any, str]:
    from pyiceberg.io.pyarrow import PyArrowFileIO

    io = PyArrowFileIO(properties=tables.properties)
    parsed = urlparse(location)
    scheme = parsed.scheme or "file"
    fs = io.fs_by_scheme(scheme, parsed.netloc)
    path = parsed.path if scheme == "file" else f"{parsed.netloc}{parsed.path}"
    return fs, path


def referenced_files(table: Any) -> set[str]:
    """Every file the table's metadata still reaches: metadata JSONs, manifest lists, manifests, data."""
    io = table.io
    refs: set[str] = {table.metadata_location}
    refs.update(entry.metadata_file for entry in table.metadata.metadata_log)
    for snapshot in table.metadata.snapshots:
        refs.add(snapshot.manifest_list)
        for manifest in snapshot.manifests(io):
            refs.add(manifest.manifest_path)
            for entry in manifest.fetch_manifest_entry(io, discard_deleted=False):
                refs.add(entry.data_file.file_path)
    return {_path_only(r) for r in refs}


def _path_only(location: str) -> str:
    parsed = urlparse(location)
    return parsed.path if parsed.scheme in ("", "file") else f"{parsed.netloc}{parsed.path}"


def sweep_unreferenced(
    tables: Tables,
    min_age: dt.timedelta,
    now: dt.datetime | None = None,
    names: Sequence[str] = tuple(TABLES),
) -> dict[str, tuple[int, int]]:
    """Delete files under each table's location that its metadata no longer reaches (pyiceberg's
    expire_snapshots deletes none) and that are older than ``min_age`` (a writer's files before its
    commit are unreferenced too). Returns (files, bytes) removed per table."""
    from pyarrow.fs import FileSelector, FileType

    now = now or dt.datetime.now(dt.UTC)
    removed: dict[str, tuple[int, int]] = {}
    for name in names:
        table = tables.refresh(name)
        fs, root = _filesystem(tables, table.metadata.location)
        refs = referenced_files(table)
        files = size = 0
        try:
            infos = fs.get_file_info(FileSelector(root, recursive=True, allow_not_found=True))
        except OSError:
            infos = []
        for info in infos:
            if info.type != FileType.File or info.path in refs:
                continue
            mtime = info.mtime
            if mtime is not None:
                if mtime.tzinfo is None:
                    mtime = mtime.replace(tzinfo=dt.UTC)
                if now - mtime < min_age:
                    continue
            fs.delete_file(info.path)
            files += 1
            size += info.size or 0
        removed[name] = (files, size)
    return removed


@dataclass
class MaintenanceReport:
    keep_since: str
    rows_expired: dict[str, int]
    partitions_compacted: dict[str, int]
    snapshots_expired: dict[str, int]
    files_removed: dict[str, tuple[int, int]]
    landing_objects_removed: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "keep_since": self.keep_since,
            "rows_expired": self.rows_expired,
            "partitions_compacted": self.partitions_compacted,
            "snapshots_expired": self.snapshots_expired,
            "files_removed": {k: {"files": f, "bytes": b} for k, (f, b) in self.files_removed.items()},
            "landing_objects_removed": self.landing_objects_removed,
            "seconds": round(self.seconds, 3),
        }


def maintain(
    tables: Tables,
    today: dt.date,
    retention_days: int,
    snapshot_min_age: dt.timedelta = dt.timedelta(hours=1),
    now: dt.datetime | None = None,
    delete_landing: Callable[[dt.date], int] | None = None,
) -> MaintenanceReport:
    """Retention and table health, in this order: drop partitions older than ``retention_days`` days
    before ``today``; compact every closed day's partition (before today) into one file; expire
    snapshots older than ``snapshot_min_age``; delete files no snapshot reaches any more (older than
    the same age); and (``delete_landing``) the delivered JSON objects past retention."""
    if retention_days < 1:
        raise UsageError("retention must be at least 1 day")
    began = time.perf_counter()
    now = now or dt.datetime.now(dt.UTC)
    keep_since = today - dt.timedelta(days=retention_days)
    rows = expire_partitions(tables, keep_since)
    compacted = compact(tables, today)
    expired = expire_snapshots(tables, now - snapshot_min_age)
    swept = sweep_unreferenced(tables, snapshot_min_age, now)
    landing = delete_landing(keep_since) if delete_landing is not None else 0
    return MaintenanceReport(
        keep_since.isoformat(), rows, compacted, expired, swept, landing, time.perf_counter() - began
    )


def s3_landing_cleaner(s3: Any, bucket: str, settings: Settings) -> Callable[[dt.date], int]:
    """Deletes delivered JSON objects (and kept rejected objects) last modified before a date."""

    def clean(keep_since: dt.date) -> int:
        cutoff = dt.datetime.combine(keep_since, dt.time(), dt.UTC)
        doomed: list[str] = []
        for setting in ("events", "windows", "alerts", "rejected"):
            for key, modified in s3_lister(s3, bucket)(str(getattr(settings.prefixes, setting))):
                if modified is not None and modified < cutoff:
                    doomed.append(key)
        for i in range(0, len(doomed), 1000):
            s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in doomed[i : i + 1000]]})
        return len(doomed)

    return clean


def require_tables(settings: Settings) -> Tables:
    if not Tables.exists(settings):
        raise UsageError(
            f"no history tables in {settings.history.tables_catalog}: run `make demo`, "
            "or `shelfstream history "
            "ingest` (after the loop archived something), or `shelfstream history convert DIR`"
        )
    try:
        return Tables(settings)
    except Exception as exc:  # pragma: no cover - a broken catalog file
        raise ShelfstreamError(f"cannot open the history tables: {exc}") from exc
