"""POST /v1/alerts/{alert_id}/feedback and POST /v1/stores/{store_id}/feedback: an operator's mark
becomes one `feedback` event of the alert's store on the stream, as POST /v1/events puts events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from foundation.contract import Feedback, decode_event
from tests.unit.api_helpers import HQ, STORE1, STORE2, FakeSink, auth, make_api

ANOMALY = {
    "kind": "anomaly",
    "alert_id": "ano-1",
    "store_id": "store-001",
    "ts": "2026-08-01T12:00:00.000Z",
    "window_start": "2026-08-01T11:45:00.000Z",
    "window_end": "2026-08-01T12:00:00.000Z",
    "severity": 70,
    "score": 6.1,
    "metric": "sales",
    "observed": 40,
    "expected": [10, 30],
    "explanation": "Sales were 40, about twice the usual.",
}
OUT_OF_STOCK = {
    "kind": "out_of_stock",
    "alert_id": "oos-1",
    "store_id": "store-001",
    "ts": "2026-08-01T10:00:00.000Z",
    "product_id": "p-1",
    "on_hand": 0,
}


@pytest.fixture
async def api() -> AsyncIterator[tuple[httpx.AsyncClient, Any, FakeSink]]:
    app, state, sink, _ = make_api()
    state.add_alert(ANOMALY)
    state.add_alert(OUT_OF_STOCK)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client, state, sink


async def _mark(client: httpx.AsyncClient, token: str, body: Any, alert: str = "ano-1") -> httpx.Response:
    return await client.post(f"/v1/alerts/{alert}/feedback", json=body, headers=auth(token))


@pytest.mark.parametrize("token", [HQ, STORE1])
async def test_hq_and_the_alerts_own_store_mark_it_not_an_anomaly(api: Any, token: str) -> None:
    client, state, sink = api
    r = await _mark(client, token, {"verdict": "not_anomaly", "note": "a promotion we ran"})
    assert r.status_code == 202, r.text
    event = r.json()["event"]
    assert event["type"] == "feedback"
    assert (event["store_id"], event["alert_id"], event["verdict"]) == ("store-001", "ano-1", "not_anomaly")
    assert event["note"] == "a promotion we ran"
    assert event["by"] == ("hq" if token == HQ else "store:store-001")
    (written,) = sink.written
    assert written.store_id == "store-001"  # the partition key: the alert's store
    decoded = decode_event(written.data)
    assert isinstance(decoded, Feedback)
    assert decoded.event_id == event["event_id"]
    # the dashboard's view shows it was marked
    assert state.find_alert("ano-1")["feedback"] == "not_anomaly"


async def test_pressing_twice_puts_the_same_event_id(api: Any) -> None:
    client, _, sink = api
    first = await _mark(client, HQ, {"verdict": "not_anomaly"})
    second = await _mark(client, STORE1, {"verdict": "not_anomaly"})
    assert first.status_code == second.status_code == 202
    ids = {orjson.loads(e.data)["event_id"] for e in sink.written}
    assert len(sink.written) == 2
    assert len(ids) == 1


async def test_another_stores_token_is_refused(api: Any) -> None:
    client, _, sink = api
    r = await _mark(client, STORE2, {"verdict": "not_anomaly"})
    assert r.status_code == 403
    assert "store-001" in r.json()["error"]
    assert sink.written == []


async def test_an_unknown_alert_is_404(api: Any) -> None:
    client, _, sink = api
    r = await _mark(client, HQ, {"verdict": "not_anomaly"}, alert="ano-nope")
    assert r.status_code == 404
    assert sink.written == []


async def test_no_token_is_401(api: Any) -> None:
    client, _, _ = api
    r = await client.post("/v1/alerts/ano-1/feedback", json={"verdict": "not_anomaly"})
    assert r.status_code == 401


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"verdict": "bogus"}, "verdict must be one of not_anomaly, missed"),
        ({}, "verdict must be one of not_anomaly, missed"),
        ([1, 2], "the body must be a JSON object"),
        ({"verdict": "not_anomaly", "note": "x" * 1001}, "$.note"),
        ({"verdict": "missed"}, "a `missed` feedback needs `window_start` and `window_end`"),
        (
            {
                "verdict": "missed",
                "window_start": "2026-08-01T12:00:00Z",
                "window_end": "2026-08-01T11:00:00Z",
            },
            "`window_end` must be after `window_start`",
        ),
    ],
)
async def test_a_bad_body_is_400_with_one_reason(api: Any, body: Any, reason: str) -> None:
    client, _, sink = api
    r = await _mark(client, HQ, body)
    assert r.status_code == 400
    assert reason in r.json()["error"]
    assert sink.written == []


async def test_a_body_that_is_not_json_is_400(api: Any) -> None:
    client, _, _ = api
    r = await client.post("/v1/alerts/ano-1/feedback", content=b"{nope", headers=auth(HQ))
    assert r.status_code == 400
    assert "not valid JSON" in r.json()["error"]


async def test_only_anomaly_alerts_take_feedback(api: Any) -> None:
    client, _, _ = api
    r = await _mark(client, HQ, {"verdict": "not_anomaly"}, alert="oos-1")
    assert r.status_code == 400
    assert "only anomaly alerts" in r.json()["error"]


async def test_a_missed_incident_of_a_store(api: Any) -> None:
    client, _, sink = api
    body = {"verdict": "missed", "window_start": "2026-08-01T09:00:00Z", "window_end": "2026-08-01T10:30:00Z"}
    r = await client.post("/v1/stores/store-001/feedback", json=body, headers=auth(STORE1))
    assert r.status_code == 202, r.text
    event = r.json()["event"]
    assert (event["verdict"], event["window_start"], event["window_end"]) == (
        "missed",
        "2026-08-01T09:00:00Z",
        "2026-08-01T10:30:00Z",
    )
    assert "alert_id" not in event
    assert sink.written[0].store_id == "store-001"
    forbidden = await client.post("/v1/stores/store-001/feedback", json=body, headers=auth(STORE2))
    assert forbidden.status_code == 403
    wrong = await client.post(
        "/v1/stores/store-001/feedback", json={"verdict": "not_anomaly"}, headers=auth(HQ)
    )
    assert wrong.status_code == 400


async def test_a_stream_that_refuses_it_is_503(api: Any) -> None:
    client, _, sink = api
    sink.fail = {0}
    r = await _mark(client, HQ, {"verdict": "not_anomaly"})
    assert r.status_code == 503
