"""Is the service up, and who does it take the caller for: the checks a load balancer and the page's
sign-in make."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from shelfstream.api.deps import Api, Who

router = APIRouter()


@router.get("/healthz", include_in_schema=False)
async def health(api: Api) -> dict[str, Any]:
    return {"ok": True, "streams": api.state.hub.subscribers}


@router.get("/v1/me")
async def me(who: Who) -> dict[str, Any]:
    return {"role": who.role, "store_id": who.store_id}
