"""Recent alerts, and the live stream of alerts, stock, windows, deliveries and trucks."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from foundation.contract import ALERT_KINDS, parse_ts
from shelfstream.api.deps import Api, ApiError, StoreInQuery, Who
from shelfstream.api.hub import sse_stream

router = APIRouter()


@router.get("/v1/alerts")
async def alerts(
    who: Who,
    store_id: StoreInQuery,
    api: Api,
    kind: str | None = None,
    since: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    if kind is not None and kind not in ALERT_KINDS:
        raise ApiError(400, f"kind must be one of {', '.join(ALERT_KINDS)}")
    since_ms = None
    if since is not None:
        try:
            since_ms = parse_ts(since)
        except ValueError:
            raise ApiError(
                400, "since must be an RFC 3339 time with a zone, e.g. 2026-08-01T10:00:00Z"
            ) from None
    return {"alerts": api.state.alerts(who, store_id, kind, since_ms, limit)}


@router.get("/v1/stream")
async def stream(request: Request, who: Who, store_id: StoreInQuery, api: Api) -> StreamingResponse:
    return StreamingResponse(
        sse_stream(
            api.state.hub,
            who,
            store_id,
            request.headers.get("last-event-id"),
            api.settings.api.sse_heartbeat_s,
        ),
        media_type="text/event-stream",
        headers={"x-accel-buffering": "no"},
    )
