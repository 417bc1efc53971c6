"""The loop's history as Iceberg tables over the wire: the processor archives through the embedded
Firehose (moto: one S3 object per batch), `history ingest` turns the objects into appends of tables whose
warehouse is on the embedded S3, and query, DuckDB and Polars read them; KPIs equal the core's."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import duckdb
import orjson
import pytest

from config import Settings
from foundation.aws.clients import sync_client
from foundation.aws.provision import Resources, provision
from history.tables import Tables
from processors.core.kpis import compute, kpi_event
from processors.core.processor import decode_record
from tests.integration.test_history import run_cli, use, workload
from tests.integration.test_processor_shell import process_until_caught_up, produce

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def on_s3(
    make_settings: Callable[..., Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Settings, Resources]:
    base = make_settings()
    settings = base.replaced(
        aws={"incoming_queue": base.aws.restock_queue.replace("-restock", "-incoming")},
        history={
            "archive_cache": str(tmp_path / "cache"),
            "archive_mirror": str(tmp_path / "mirror"),
            "tables_catalog": str(tmp_path / "catalog.db"),
            "tables_warehouse": f"s3://{base.aws.bucket}/warehouse",
        },
    )
    resources = provision(settings)
    use(settings, monkeypatch)
    monkeypatch.setenv("POLARS_ICEBERG_PLANNER", "pyiceberg")
    return settings, resources


async def test_the_loop_leaves_tables_on_s3_that_query_duckdb_and_polars_read(
    on_s3: tuple[Settings, Resources], capsys: pytest.CaptureFixture[str]
) -> None:
    import polars as pl

    settings, resources = on_s3
    good = workload()
    await produce(settings, [(data, orjson.loads(data)["store_id"]) for data in good])
    await produce(settings, [(b'{"type":"sale","event_id":"bad","store_id":"Berlin"}', "Berlin")])
    await process_until_caught_up(settings, resources)

    code, out, _ = run_cli(["history", "ingest", "--json"], capsys)
    assert code == 0
    first = json.loads(out)
    assert first["rows"]["events"] == len(good)
    assert first["rows"]["rejected"] == 1
    assert first["rows"]["alerts"] > 0
    code, out, _ = run_cli(["history", "ingest", "--json"], capsys)
    assert json.loads(out)["rows"] == {"events": 0, "windows": 0, "alerts": 0, "rejected": 0}

    s3 = sync_client("s3", settings)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=settings.aws.bucket, Prefix="warehouse/")["Contents"]]
    assert any(k.endswith(".parquet") for k in keys)
    assert any(k.endswith(".metadata.json") for k in keys)

    code, out, err = run_cli(
        ["query", "SELECT store_id, count(*) AS n FROM events GROUP BY 1 ORDER BY 1", "--format", "json"],
        capsys,
    )
    assert code == 0, err
    assert "history tables (Iceberg" in err
    assert json.loads(out) == [
        {"store_id": "Berlin", "n": 11},
        {"store_id": "Hamburg", "n": 4},
        {"store_id": "Munich", "n": 3},
    ]

    tables = Tables(settings)
    con = duckdb.connect()
    con.register("alerts", tables.table("alerts").scan().to_arrow())
    kinds = dict(con.execute("SELECT kind, count(*) FROM alerts GROUP BY 1").fetchall())
    assert kinds["out_of_stock"] == 1
    frame = pl.scan_iceberg(tables.table("events")).filter(pl.col("type") == "sale").collect()
    assert frame.height == 8 + 3 + 2

    code, out, _ = run_cli(["kpis", "--format", "json"], capsys)
    assert code == 0
    want, _, _ = compute(kpi_event(decode_record(d)) for d in good)
    assert sorted(json.loads(out), key=lambda r: (r["store_id"], r["day"], r["product_id"])) == sorted(
        want, key=lambda r: (r["store_id"], r["day"], r["product_id"])
    )
    berlin = next(r for r in want if r["store_id"] == "Berlin" and r["units_sold"] == 8)
    assert berlin["minutes_out_of_stock"] > 0
