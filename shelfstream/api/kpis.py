"""`GET /v1/kpis`: the daily inventory KPIs (processors/core/kpis.py) from the history tables."""

from __future__ import annotations

import datetime as dt
from typing import Any

from config import Settings


def parse_day(text: str | None) -> dt.date | None:
    """A YYYY-MM-DD day, or None; ValueError when it is not one."""
    if text is None:
        return None
    if len(text) != 10:
        raise ValueError(text)
    return dt.date.fromisoformat(text)


def read(
    settings: Settings,
    store_id: str | None,
    since: dt.date | None,
    until: dt.date | None,
    per_store: bool,
    limit: int,
) -> dict[str, Any]:
    """KPI rows (newest days first, at most ``limit``); none when there are no tables yet."""
    from history.kpi_tables import read_kpis
    from history.tables import Tables

    if not Tables.exists(settings):
        return {"kpis": [], "note": "no history tables yet (shelfstream history ingest)"}
    rows = read_kpis(Tables(settings), [store_id] if store_id else None, since, until, per_store=per_store)
    rows.sort(key=lambda r: (r["day"], r["store_id"], r.get("product_id", "")), reverse=True)
    return {"kpis": rows[:limit]}
