"""Stores, their stock and closed windows, and the trucks and deliveries that restock them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from shelfstream.api.deps import Api, ApiError, StoreInPath, StoreInQuery, Who

router = APIRouter()


@router.get("/v1/stores")
async def stores(who: Who, api: Api) -> dict[str, Any]:
    return {"stores": api.state.summaries(who)}


@router.get("/v1/stores/{store_id}/inventory")
async def inventory(store_id: StoreInPath, who: Who, api: Api) -> dict[str, Any]:
    found = api.state.inventory(store_id)
    if found is None:
        if who.role == "store":  # its own store, before its first event
            return {
                "store_id": store_id,
                "on_hand_total": 0,
                "stock_outs": 0,
                "open_requests": 0,
                "products": [],
            }
        raise ApiError(404, f"no store {store_id!r} in the processor's state")
    return found


@router.get("/v1/stores/{store_id}/windows")
async def windows(
    store_id: StoreInPath,
    api: Api,
    window: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> dict[str, Any]:
    return {"store_id": store_id, "windows": api.state.windows(store_id, window, limit)}


@router.get("/v1/deliveries")
async def deliveries(
    who: Who, store_id: StoreInQuery, api: Api, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> dict[str, Any]:
    return {"deliveries": api.state.recent_deliveries(who, store_id, limit)}


@router.get("/v1/trucks")
async def trucks(who: Who, store_id: StoreInQuery, api: Api) -> dict[str, Any]:
    return {"trucks": api.state.trucks_for(who, store_id)}
