"""`GET /v1/kpis`: the daily KPIs from the history tables, scoped to what a token may see."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import httpx
import orjson
import pytest

from benchmarks.history_data import generate
from history.kpi_tables import compute_days
from history.tables import Tables, append_lines
from tests.unit.api_helpers import HQ, STORE1, auth, make_api


async def _client(tmp_path: Path, with_tables: bool) -> tuple[httpx.AsyncClient, dict[str, str]]:
    paths = {
        "tables_catalog": str(tmp_path / "catalog.db"),
        "tables_warehouse": str(tmp_path / "warehouse"),
    }
    if with_tables:
        from config import Settings

        tables = Tables(Settings(history=paths))
        append_lines(tables, "events", [orjson.dumps(e) for e in generate(2, 3, dt.date(2026, 8, 1))])
        compute_days(tables)
    app, *_ = make_api(history=paths)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test"), paths


async def test_kpis_before_there_are_tables_are_an_empty_list(tmp_path: Path) -> None:
    client, _ = await _client(tmp_path, with_tables=False)
    async with client:
        resp = await client.get("/v1/kpis", headers=auth(HQ))
    assert resp.status_code == 200
    assert resp.json()["kpis"] == []
    assert "no history tables" in resp.json()["note"]


async def test_kpis_per_store_and_product_and_a_store_token_sees_its_own(tmp_path: Path) -> None:
    client, _ = await _client(tmp_path, with_tables=True)
    async with client:
        stores = (await client.get("/v1/kpis", headers=auth(HQ))).json()["kpis"]
        assert {r["store_id"] for r in stores} == {"store-001", "store-002"}
        assert all("product_id" not in r for r in stores)
        days = [r["day"] for r in stores]
        assert days == sorted(days, reverse=True)  # newest first
        products = (
            await client.get(
                "/v1/kpis?per=product&since=2026-08-02&until=2026-08-02&limit=5", headers=auth(HQ)
            )
        ).json()["kpis"]
        assert len(products) == 5
        assert {r["day"] for r in products} == {"2026-08-02"}
        own = (await client.get("/v1/kpis", headers=auth(STORE1))).json()["kpis"]
        assert {r["store_id"] for r in own} == {"store-001"}
        other = await client.get("/v1/kpis?store_id=store-002", headers=auth(STORE1))
        assert other.status_code == 403


@pytest.mark.parametrize("query", ["since=yesterday", "until=2026-13-01", "per=week", "limit=0"])
async def test_bad_kpi_parameters_are_400(tmp_path: Path, query: str) -> None:
    client, _ = await _client(tmp_path, with_tables=False)
    async with client:
        resp = await client.get(f"/v1/kpis?{query}", headers=auth(HQ))
    assert resp.status_code == 400
