"""The API's OpenAPI document, as the server really answers: bearer tokens, every error status with
the ``{"error": "..."}`` shape, no 422 (validation errors are 400 here), the events body schema (the
contract's, from its msgspec structs), and the live stream as ``text/event-stream``."""

from __future__ import annotations

from typing import Any, Final

import msgspec
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from config import Settings
from foundation.contract import Event

_ERROR: Final = {"$ref": "#/components/schemas/Error"}


def _answer(text: str) -> dict[str, Any]:
    return {"description": text, "content": {"application/json": {"schema": _ERROR}}}


def install(app: FastAPI, settings: Settings) -> None:
    """Replace the app's generated document with the accurate one (built once, on first request)."""

    def build() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
        components = doc.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        schemas["Error"] = {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string"}},
        }
        (event,), defs = msgspec.json.schema_components([Event], ref_template="#/components/schemas/{name}")
        schemas.update(defs)
        schemas["Event"] = event
        components["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "an HQ or a store token"}
        }
        for path, item in doc["paths"].items():
            for method, op in item.items():
                _operation(path, method, op, settings)
        app.openapi_schema = doc
        return doc

    app.openapi = build  # type: ignore[method-assign]


def _operation(path: str, method: str, op: dict[str, Any], settings: Settings) -> None:
    responses: dict[str, Any] = op.setdefault("responses", {})
    responses.pop("422", None)
    if not path.startswith("/v1/"):
        return
    op["security"] = [{"bearer": []}]
    names = {p["name"] for p in op.get("parameters", [])}
    if names or method == "post":
        responses["400"] = _answer("a bad parameter or body, with the reason")
    responses["401"] = {
        **_answer("missing or unknown token"),
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    }
    if "store_id" in names or method == "post":
        responses["403"] = _answer("the token may not see (or post for) that store")
    responses["429"] = {
        **_answer("rate limit of the token, or too many failed sign-ins from the address"),
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    }
    if path == "/v1/stores/{store_id}/inventory":
        responses["404"] = _answer("no such store in the processor's state")
    if path == "/v1/events" and method == "post":
        _events(op, responses, settings)
    if path.endswith("/feedback") and method == "post":
        _feedback(path, op, responses)
    if path == "/v1/stream":
        responses["200"] = {
            "description": "server-sent events (alerts, stock, windows, trucks); resumes after Last-Event-ID",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
        op.setdefault("parameters", []).append(
            {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"}}
        )


def _events(op: dict[str, Any], responses: dict[str, Any], settings: Settings) -> None:
    """`POST /v1/events`: the body (one event of the contract, or an array of them) and its answers."""
    op["requestBody"] = {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/Event"},
                        {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Event"},
                            "minItems": 1,
                            "maxItems": settings.api.max_events,
                        },
                    ]
                }
            }
        },
    }
    answer = {
        "type": "object",
        "required": ["accepted", "rejected", "request_id"],
        "properties": {
            "accepted": {"type": "integer"},
            "rejected": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"index": {"type": "integer"}, "reason": {"type": "string"}},
                },
            },
            "request_id": {"type": "string"},
        },
    }
    responses["202"] = {
        "description": "valid entries are in the stream; each refused entry is listed with its reason",
        "content": {"application/json": {"schema": answer}},
    }
    responses["413"] = _answer(
        f"over {settings.api.max_body_bytes} bytes or {settings.api.max_events} events"
    )
    responses["503"] = _answer("the stream took none of the valid events; send them again")


def _feedback(path: str, op: dict[str, Any], responses: dict[str, Any]) -> None:
    """An operator's mark: the body, and the `feedback` event of the store it becomes."""
    period = {
        "window_start": {"type": "string", "format": "date-time", "description": "RFC 3339 UTC"},
        "window_end": {
            "type": "string",
            "format": "date-time",
            "description": "after window_start, within 24 h",
        },
    }
    on_alert = path.startswith("/v1/alerts/")
    op["requestBody"] = {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["verdict"],
                    "properties": {
                        "verdict": {"enum": ["not_anomaly", "missed"] if on_alert else ["missed"]},
                        "note": {"type": "string", "maxLength": 1000},
                        "by": {"type": "string", "maxLength": 128},
                        **period,
                    },
                }
            }
        },
    }
    responses["202"] = {
        "description": "the `feedback` event (docs/contract.md section 1) of the store is in the stream",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["event"],
                    "properties": {"event": {"$ref": "#/components/schemas/Feedback"}},
                }
            }
        },
    }
    responses["403"] = _answer("the token may not post for the alert's (or that) store")
    if on_alert:
        responses["404"] = _answer("no such alert among the recent alerts")
    responses["413"] = _answer("the body is too large")
    responses["503"] = _answer("the stream did not take the event; send it again")
