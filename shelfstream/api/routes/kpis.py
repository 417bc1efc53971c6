"""`GET /v1/kpis`: the daily inventory KPIs from the history tables (shelfstream/api/kpis.py reads them)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query

from shelfstream.api import kpis as kpi_api
from shelfstream.api.deps import Api, ApiError, StoreInQuery, Who

router = APIRouter()


@router.get("/v1/kpis")
async def kpis(
    who: Who,
    store_id: StoreInQuery,
    api: Api,
    since: str | None = None,
    until: str | None = None,
    per: str = "store",
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> dict[str, Any]:
    """Daily inventory KPIs from the history tables (per store, or per product with per=product)."""
    if who.role == "store":
        store_id = who.store_id
    if per not in ("store", "product"):
        raise ApiError(400, "per must be store or product")
    try:
        first, last = kpi_api.parse_day(since), kpi_api.parse_day(until)
    except ValueError:
        raise ApiError(400, "since and until must be days, YYYY-MM-DD") from None
    return await asyncio.to_thread(kpi_api.read, api.settings, store_id, first, last, per == "store", limit)
