"""Operators' marks on anomaly alerts, and missed incidents: each becomes a `feedback` event of its
store on the stream (shelfstream/api/feedback.py builds it)."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from shelfstream.api import feedback
from shelfstream.api.auth import Principal
from shelfstream.api.deps import Api, ApiError, ApiServices, StoreInPath, Who, check_store, read_body
from shelfstream.api.ingest import ValidEntry

log = logging.getLogger(__name__)

router = APIRouter()


@router.post("/v1/alerts/{alert_id}/feedback", status_code=202)
async def alert_feedback(alert_id: str, request: Request, who: Who, api: Api) -> JSONResponse:
    """An operator's mark of an anomaly alert: `not_anomaly` (or `missed` with a period)."""
    alert = api.state.find_alert(alert_id)
    if alert is None:
        raise ApiError(404, f"no alert {alert_id[:128]!r} among the recent alerts")
    check_store(who, str(alert.get("store_id")))
    body = await read_body(request, api.settings.api.max_body_bytes)
    try:
        raw, event = feedback.for_alert(alert, feedback.parse_body(body), who, api.now)
    except feedback.FeedbackError as exc:
        raise ApiError(exc.status, exc.message) from None
    return await _put(api, raw, event, who)


@router.post("/v1/stores/{store_id}/feedback", status_code=202)
async def store_feedback(store_id: StoreInPath, request: Request, who: Who, api: Api) -> JSONResponse:
    """A missed incident of a store: `{"verdict": "missed", "window_start", "window_end"}`."""
    body = await read_body(request, api.settings.api.max_body_bytes)
    try:
        raw, event = feedback.for_store(store_id, feedback.parse_body(body), who, api.now)
    except feedback.FeedbackError as exc:
        raise ApiError(exc.status, exc.message) from None
    return await _put(api, raw, event, who)


async def _put(api: ApiServices, raw: bytes, event: Any, who: Principal) -> JSONResponse:
    """Put one feedback event on the stream as POST /v1/events would; 202 with the event."""
    not_written = await api.sink.put([ValidEntry(0, raw, event.store_id)])
    if not_written:
        raise ApiError(503, f"the stream did not take the feedback ({not_written[0].reason})")
    if event.alert_id is not None:
        api.state.mark_feedback(event.alert_id, event.verdict)
    log.info(
        "feedback posted", extra={"token": who.label, "store_id": event.store_id, "verdict": event.verdict}
    )
    return JSONResponse({"event": orjson.loads(raw)}, status_code=202)
