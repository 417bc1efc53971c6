"""What every route of the API depends on: the app's services, who is asking (401, 429), which store
they may see (400, 403), and the one error type with its JSON shape.

Routes take these as FastAPI dependencies (``Who``, ``StoreInPath``, ``StoreInQuery``, ``Api``) rather
than closing over ``create_app``'s locals, so each area's routes live in their own module
(shelfstream/api/routes/) and a new store-scoped route cannot forget the store check: taking the
store as ``StoreInPath`` or ``StoreInQuery`` is what checks it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Final

from fastapi import Depends, Request

from config import Settings
from shelfstream.api.auth import Principal, TokenStore, bearer_token
from shelfstream.api.ingest import EventSink
from shelfstream.api.ratelimit import RateLimiter
from shelfstream.api.state import DashboardState

_STORE_ID: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")  # fullmatch: `$` allows a final newline


class ApiError(Exception):
    """An answer other than success: its status, its one-line message, and any headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass(frozen=True)
class ApiServices:
    """One app's view, tokens, event sink and settings, with its rate limiters and the clock that
    stamps the events the API makes itself (feedback). Kept on ``app.state.api``."""

    state: DashboardState
    tokens: TokenStore
    sink: EventSink
    settings: Settings
    limiter: RateLimiter  # per token
    failed_auth: RateLimiter  # per client address, for unknown tokens
    now: Callable[[], float]  # epoch seconds


def _services(request: Request) -> ApiServices:
    services: ApiServices = request.app.state.api
    return services


Api = Annotated[ApiServices, Depends(_services)]


async def _principal(request: Request, api: Api) -> Principal:
    """The token's holder; 401 for no or an unknown token (429 once an address keeps trying), 429
    over the token's rate. FastAPI runs it once per request, however many dependencies take it."""
    found = api.tokens.authenticate(bearer_token(request.headers.get("authorization")))
    if found is None:
        client = request.client.host if request.client is not None else "unknown"
        wait = api.failed_auth.take(f"client:{client}")
        if wait:
            raise ApiError(429, "too many failed sign-ins from this address", retry_after(wait))
        raise ApiError(
            401,
            "missing or unknown token (Authorization: Bearer <token>)",
            {"WWW-Authenticate": "Bearer"},
        )
    wait = api.limiter.take(found.key)
    if wait:
        raise ApiError(429, "rate limit exceeded for this token", retry_after(wait))
    return found


Who = Annotated[Principal, Depends(_principal)]


def check_store(who: Principal, store_id: str) -> None:
    """400 for a malformed store id, 403 for a store this token may not see (section 5 of the
    contract): a store token asking about another store is refused, never answered with nothing."""
    if not _STORE_ID.fullmatch(store_id):
        raise ApiError(400, "store_id must be 1-64 characters [A-Za-z0-9._-]")
    if not who.can_see(store_id):
        raise ApiError(403, f"this token is for store {who.store_id!r}; it may not see store {store_id!r}")


def _store_in_path(store_id: str, who: Who) -> str:
    check_store(who, store_id)
    return store_id


def _store_in_query(who: Who, store_id: str | None = None) -> str | None:
    if store_id is not None:
        check_store(who, store_id)
    return store_id


StoreInPath = Annotated[str, Depends(_store_in_path)]
StoreInQuery = Annotated[str | None, Depends(_store_in_query)]


def retry_after(wait_s: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(wait_s)))}


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to be over `limit` (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise ApiError(400, "bad Content-Length") from None
        if length > limit:
            raise ApiError(413, f"the body is {length} bytes; at most {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the body is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
