"""The whole loop: `shelfstream demo` as a user runs it, on its own embedded AWS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.daemon, pytest.mark.timeout(600)]


def test_a_short_demo_reconciles_with_trucks_delivering(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary_file = tmp_path / "summary.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SHELFSTREAM_"))}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "shelfstream.cli",
            "demo",
            "--duration",
            "25",
            "--stores",
            "4",
            "--no-live",
            "--summary",
            str(summary_file),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        check=False,
        cwd=tmp_path,  # the demo leaves its mirror and history tables under ./.shelfstream/
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(summary_file.read_text())
    assert summary["inventory_reconciled"] is True
    assert summary["deliveries"] > 0
    assert summary["restock_requests"] >= summary["deliveries"]
    assert summary["events_processed"] == summary["events_produced"]
    assert summary["events_rejected"] > 0  # the simulator sends a few bad records on purpose
    assert summary["duplicates_ignored"] > 0  # and a few repeats
    # the till outage injected at 10:05 is caught while it lasts (its store may be alone in its shard)
    assert summary["incident"]["caught"] is True, summary["incident"]
    assert summary["anomaly_alerts"] >= 1
    assert summary["on_shelf_availability"] > 0.95  # shelves sized for the stores, trucks in the history
    # every accepted event of the live stream reaches the archive (the history loaded before it does not)
    assert (
        summary["archived"]
        == summary["events_processed"] - summary["events_rejected"] - summary["duplicates_ignored"]
    )
    for key in ("events_produced", "alerts", "seconds"):
        assert key in summary
    assert "inventory_reconciled" in result.stdout  # the summary table is printed

    # ... and leaves Iceberg history tables that `query`, DuckDB and Polars read
    import duckdb
    import polars as pl

    from config import Settings
    from history.tables import Tables

    settings = Settings(
        history={
            "tables_catalog": str(tmp_path / ".shelfstream/tables/catalog.db"),
            "tables_warehouse": str(tmp_path / ".shelfstream/tables/warehouse"),
        }
    )
    assert Tables.exists(settings)
    monkeypatch.setenv("POLARS_ICEBERG_PLANNER", "pyiceberg")  # (Polars' hint about its optional planner)
    tables = Tables(settings)
    events = tables.table("events")
    assert pl.scan_iceberg(events).select(pl.len()).collect().item() == summary["archived"]
    con = duckdb.connect()
    con.register("events", events.scan().to_arrow())
    assert con.execute("SELECT count(*) FROM events").fetchone() == (summary["archived"],)
    assert tables.scan("kpis_store_daily").num_rows >= 4  # every store traded
    query = subprocess.run(
        [
            sys.executable,
            "-m",
            "shelfstream.cli",
            "query",
            "SELECT count(*) AS n FROM rejected",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
        cwd=tmp_path,
    )
    assert query.returncode == 0, query.stderr[-2000:]
    assert json.loads(query.stdout) == [{"n": summary["events_rejected"] + summary["dead_lettered"]}]
