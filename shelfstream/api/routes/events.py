"""`POST /v1/events`: events onto the stream, each validated as the contract's section 1 says."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from shelfstream.api.deps import Api, ApiError, Who, read_body
from shelfstream.api.ingest import IngestError, new_request_id, parse_batch

log = logging.getLogger(__name__)

router = APIRouter()


@router.post("/v1/events", status_code=202)
async def post_events(request: Request, who: Who, api: Api) -> JSONResponse:
    body = await read_body(request, api.settings.api.max_body_bytes)
    try:
        batch = parse_batch(body, who, api.settings.api.max_events)
    except IngestError as exc:
        raise ApiError(exc.status, exc.message) from None
    request_id = new_request_id()
    not_written = await api.sink.put(batch.valid)
    rejected = sorted([*batch.rejected, *not_written], key=lambda e: e.index)
    await api.sink.keep_rejected(request_id, who, rejected)
    accepted = len(batch.valid) - len(not_written)
    answer = {
        "accepted": accepted,
        "rejected": [{"index": e.index, "reason": e.reason} for e in rejected],
        "request_id": request_id,
    }
    log.info(
        "events posted",
        extra={"token": who.label, "accepted": accepted, "rejected": len(rejected), "request_id": request_id},
    )
    if not_written and accepted == 0:
        return JSONResponse(
            {"error": "the stream took none of the events; send them again", **answer}, status_code=503
        )
    return JSONResponse(answer, status_code=202)
