"""Operator feedback on anomaly alerts: a request body becomes a `feedback` event of the store
(docs/contract.md section 1), validated as the processor will, with an `event_id` derived from what it
marks, so pressing the button twice puts the same event twice and the processor's dedup keeps one.

The event is put on the stream exactly as `POST /v1/events` puts events (an EventSink); the detector
learns from it there (docs/detection.md "Feedback: what one mark changes"), never from the API.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from foundation.contract import (
    FEEDBACK_VERDICTS,
    Feedback,
    Rejection,
    decode_event,
    feedback_event_id,
    format_ts,
)
from shelfstream.api.auth import Principal


class FeedbackError(Exception):
    """A feedback request refused: status and one-line reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_FIELDS = ("note", "by", "window_start", "window_end")


def parse_body(body: bytes) -> dict[str, Any]:
    """The request's JSON object with a known `verdict`, or a 400 with the reason."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise FeedbackError(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise FeedbackError(400, 'the body must be a JSON object, e.g. {"verdict": "not_anomaly"}')
    verdict = parsed.get("verdict")
    if verdict not in FEEDBACK_VERDICTS:
        raise FeedbackError(
            400, f"verdict must be one of {', '.join(FEEDBACK_VERDICTS)}, not {verdict!r:.80}"
        )
    return parsed


def for_alert(
    alert: dict[str, Any], body: dict[str, Any], who: Principal, now: Callable[[], float] = time.time
) -> tuple[bytes, Feedback]:
    """The feedback event of a mark of one (anomaly) alert: `not_anomaly`, or `missed` with a period."""
    if alert.get("kind") != "anomaly":
        raise FeedbackError(
            400,
            f"alert {alert.get('alert_id')!r} is a {alert.get('kind')} alert; "
            "only anomaly alerts take feedback",
        )
    aid = str(alert["alert_id"])
    verdict = str(body["verdict"])
    about = (
        (aid,)
        if verdict == "not_anomaly"
        else (aid, str(body.get("window_start")), str(body.get("window_end")))
    )
    return _event(str(alert["store_id"]), verdict, feedback_event_id(verdict, *about), body, who, now, aid)


def for_store(
    store_id: str, body: dict[str, Any], who: Principal, now: Callable[[], float] = time.time
) -> tuple[bytes, Feedback]:
    """The feedback event of a missed incident of a store (a period no alert caught)."""
    if body["verdict"] != "missed":
        raise FeedbackError(
            400,
            "a store takes only a `missed` verdict here; "
            "mark an alert at POST /v1/alerts/{alert_id}/feedback",
        )
    about = (store_id, str(body.get("window_start")), str(body.get("window_end")))
    return _event(store_id, "missed", feedback_event_id("missed", *about), body, who, now, None)


def _event(
    store_id: str,
    verdict: str,
    event_id: str,
    body: dict[str, Any],
    who: Principal,
    now: Callable[[], float],
    aid: str | None,
) -> tuple[bytes, Feedback]:
    """Build and validate the event (the contract's reasons, as 400): the raw record and the event."""
    event: dict[str, Any] = {
        "event_id": event_id,
        "type": "feedback",
        "store_id": store_id,
        "ts": format_ts(int(now() * 1000)),
        "verdict": verdict,
    }
    if aid is not None:
        event["alert_id"] = aid
    event.update({k: body[k] for k in _FIELDS if body.get(k) is not None})
    event.setdefault("by", who.label)
    raw = orjson.dumps(event)
    decoded = decode_event(raw)
    if isinstance(decoded, Rejection):
        raise FeedbackError(400, decoded.reason)
    assert isinstance(decoded, Feedback)
    return raw, decoded
