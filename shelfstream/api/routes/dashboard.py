"""The dashboard page and its static files (static/): ours and the vendored chart library."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Final

from fastapi import APIRouter
from fastapi.responses import Response

from shelfstream.api.deps import ApiError

_JS: Final = "text/javascript; charset=utf-8"
_CSS: Final = "text/css; charset=utf-8"
# Everything the page loads, by path under static/: our own files and the vendored chart library (uPlot,
# checked against deploy/vendor/uplot.sha256). Nothing else is served, and nothing comes from another site.
STATIC: Final = {
    "app.js": _JS,
    "app.css": _CSS,
    "vendor/uplot/uPlot.iife.min.js": _JS,
    "vendor/uplot/uPlot.min.css": _CSS,
    "vendor/uplot/LICENSE": "text/plain; charset=utf-8",
}

router = APIRouter(include_in_schema=False)


@cache
def _file(name: str) -> bytes:
    """A packaged file, read once per process (the package does not change while it runs)."""
    return resources.files("shelfstream.api").joinpath("static", *name.split("/")).read_bytes()


@router.get("/")
async def index() -> Response:
    return Response(
        _file("index.html"), media_type="text/html; charset=utf-8", headers={"cache-control": "no-cache"}
    )


@router.get("/static/{name:path}")
async def static(name: str) -> Response:
    if name not in STATIC:
        raise ApiError(404, "not found")
    return Response(_file(name), media_type=STATIC[name], headers={"cache-control": "no-cache"})
