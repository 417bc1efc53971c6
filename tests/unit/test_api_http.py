"""The HTTP API's rules (docs/contract.md section 5), over an in-memory view and a fake event sink."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from shelfstream.api.state import ProductStock, StoreStock
from tests.unit.api_helpers import HQ, STORE1, STORE2, FakeClock, FakeSink, auth, make_api, sale


@pytest.fixture
async def api() -> AsyncIterator[tuple[httpx.AsyncClient, Any, FakeSink, FakeClock]]:
    app, state, sink, clock = make_api(
        api={"burst": 5, "rate_per_s": 1.0, "max_body_bytes": 4096, "max_events": 10}
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client, state, sink, clock


def _seed(state: Any) -> None:
    state.set_stock(
        "store-001", StoreStock({"p-1": ProductStock(0, 5, "Apples", True), "p-2": ProductStock(9, 5)})
    )
    state.set_stock("store-002", StoreStock({"p-1": ProductStock(30, 5)}))
    state.add_alert(
        {
            "kind": "out_of_stock",
            "alert_id": "a1",
            "store_id": "store-001",
            "ts": "2026-08-01T10:00:00.000Z",
            "product_id": "p-1",
            "on_hand": 0,
        }
    )
    state.add_alert(
        {
            "kind": "out_of_stock",
            "alert_id": "a2",
            "store_id": "store-002",
            "ts": "2026-08-01T11:00:00.000Z",
            "product_id": "p-9",
            "on_hand": -1,
        }
    )
    state.add_alert(
        {
            "kind": "anomaly",
            "alert_id": "a3",
            "store_id": "store-001",
            "ts": "2026-08-01T12:00:00.000Z",
            "window_start": "2026-08-01T11:45:00.000Z",
            "window_end": "2026-08-01T12:00:00.000Z",
            "severity": 70,
            "score": 6.1,
            "metric": "sales",
            "observed": 0,
            "expected": [10, 30],
            "explanation": "No sales at all.",
        }
    )
    state.add_delivery(
        {
            "delivery_id": "d1",
            "truck_id": "truck-01",
            "store_id": "store-001",
            "product_id": "p-1",
            "quantity": 40,
            "ts": "2026-08-01T10:30:00.000Z",
        }
    )
    state.add_delivery(
        {
            "delivery_id": "d2",
            "truck_id": "truck-02",
            "store_id": "store-002",
            "product_id": "p-1",
            "quantity": 10,
            "ts": "2026-08-01T10:40:00.000Z",
        }
    )
    state.set_trucks(
        [
            {
                "truck_id": "truck-01",
                "status": "on the road",
                "store_id": "store-001",
                "product_id": "p-1",
                "deliveries": 1,
            },
            {
                "truck_id": "truck-02",
                "status": "on the road",
                "store_id": "store-002",
                "product_id": "p-1",
                "deliveries": 1,
            },
        ]
    )


# --- 401 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer not-a-known-token-at-all"},
        {"Authorization": f"Basic {HQ}"},
        {"Authorization": "Bearer "},
        {"Authorization": HQ},
    ],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/stores"),
        ("GET", "/v1/alerts"),
        ("GET", "/v1/stores/store-001/inventory"),
        ("POST", "/v1/events"),
        ("GET", "/v1/stream"),
    ],
)
async def test_every_v1_call_needs_a_known_bearer_token(
    api: Any, headers: dict[str, str], method: str, path: str
) -> None:
    client, _, sink, _ = api
    body = orjson.dumps(sale("e1")) if method == "POST" else None
    resp = await client.request(method, path, headers=headers, content=body)
    assert resp.status_code == 401
    assert resp.json() == {"error": "missing or unknown token (Authorization: Bearer <token>)"}
    assert resp.headers["www-authenticate"] == "Bearer"
    assert sink.written == []


async def test_the_page_and_its_assets_need_no_token_and_carry_security_headers(api: Any) -> None:
    client, *_ = api
    page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'id="sign-in-form"' in page.text
    assert 'type="password"' in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    script = await client.get("/static/app.js")
    assert script.status_code == 200
    assert "text/javascript" in script.headers["content-type"]
    assert "Authorization" in script.text
    assert (await client.get("/static/app.css")).status_code == 200
    missing = await client.get("/static/secrets.txt")
    assert missing.status_code == 404
    assert missing.json() == {"error": "not found"}


async def test_unknown_routes_answer_json_errors(api: Any) -> None:
    client, *_ = api
    resp = await client.get("/v1/nothing-here", headers=auth(HQ))
    assert resp.status_code == 404
    assert resp.json() == {"error": "Not Found"}
    wrong = await client.delete("/v1/stores", headers=auth(HQ))
    assert wrong.status_code == 405
    assert "error" in wrong.json()


# --- reading: each store sees only its own data ------------------------------------------------------


async def test_hq_sees_every_store_and_a_store_token_only_its_own(api: Any) -> None:
    client, state, _, _ = api
    _seed(state)
    hq = (await client.get("/v1/stores", headers=auth(HQ))).json()["stores"]
    assert [s["store_id"] for s in hq] == ["store-001", "store-002"]
    first = hq[0]
    assert first["on_hand_total"] == 9
    assert first["stock_outs"] == 1
    assert first["open_requests"] == 1
    assert first["recent_anomalies"] == 1
    assert first["last_anomaly"]["explanation"] == "No sales at all."
    own = (await client.get("/v1/stores", headers=auth(STORE2))).json()["stores"]
    assert [s["store_id"] for s in own] == ["store-002"]
    me = (await client.get("/v1/me", headers=auth(STORE2))).json()
    assert me == {"role": "store", "store_id": "store-002"}


async def test_inventory_is_the_processors_stock_per_product(api: Any) -> None:
    client, state, _, _ = api
    _seed(state)
    resp = await client.get("/v1/stores/store-001/inventory", headers=auth(STORE1))
    assert resp.status_code == 200
    body = resp.json()
    assert body["store_id"] == "store-001"
    assert body["products"] == [
        {
            "product_id": "p-1",
            "name": "Apples",
            "on_hand": 0,
            "threshold": 5,
            "status": "out",
            "open_request": True,
        },
        {
            "product_id": "p-2",
            "name": None,
            "on_hand": 9,
            "threshold": 5,
            "status": "ok",
            "open_request": False,
        },
    ]
    assert resp.headers["cache-control"] == "no-store"
    unknown = await client.get("/v1/stores/store-404/inventory", headers=auth(HQ))
    assert unknown.status_code == 404
    assert "store-404" in unknown.json()["error"]


@pytest.mark.parametrize(
    "path",
    [
        "/v1/stores/store-002/inventory",
        "/v1/stores/store-002/windows",
        "/v1/alerts?store_id=store-002",
        "/v1/deliveries?store_id=store-002",
        "/v1/trucks?store_id=store-002",
        "/v1/stream?store_id=store-002",
    ],
)
async def test_a_store_token_asking_about_another_store_gets_403(api: Any, path: str) -> None:
    client, state, _, _ = api
    _seed(state)
    resp = await client.get(path, headers=auth(STORE1))
    assert resp.status_code == 403
    assert resp.json() == {"error": "this token is for store 'store-001'; it may not see store 'store-002'"}
    if "/stream" not in path:  # (the stream's 200 never ends; tests/unit/test_api_stream.py reads it)
        assert (await client.get(path, headers=auth(STORE2))).status_code == 200


def _store_scoped_calls() -> list[tuple[str, str]]:
    """Every route of the app that names a store (in its path or its query), from its own OpenAPI
    document, so a route added later is held to the same rule without this list being edited."""
    app, _, _, _ = make_api()
    calls = []
    for path, item in app.openapi()["paths"].items():
        for method, op in item.items():
            places = {p["in"] for p in op.get("parameters", []) if p["name"] == "store_id"}
            if "path" in places:
                calls.append((method, path.replace("{store_id}", "store-002")))
            elif "query" in places:
                calls.append((method, path + "?store_id=store-002"))
    return sorted(calls)


STORE_SCOPED = _store_scoped_calls()


def test_the_store_scoped_routes_are_found() -> None:
    assert {path.split("?")[0] for _, path in STORE_SCOPED} >= {
        "/v1/stores/store-002/inventory",
        "/v1/stores/store-002/windows",
        "/v1/stores/store-002/feedback",
        "/v1/alerts",
        "/v1/deliveries",
        "/v1/trucks",
        "/v1/stream",
        "/v1/kpis",
    }


@pytest.mark.parametrize(("method", "path"), STORE_SCOPED)
async def test_every_store_scoped_route_refuses_another_stores_token_with_a_clear_403(
    api: Any, method: str, path: str
) -> None:
    client, state, sink, _ = api
    _seed(state)
    body = {"verdict": "missed", "window_start": "2026-08-01T10:00:00Z", "window_end": "2026-08-01T11:00:00Z"}
    resp = await client.request(
        method.upper(), path, headers=auth(STORE1), json=body if method == "post" else None
    )
    assert resp.status_code == 403
    assert resp.json() == {"error": "this token is for store 'store-001'; it may not see store 'store-002'"}
    assert sink.written == []


async def test_alerts_are_filtered_to_the_tokens_stores_and_by_kind_and_time(api: Any) -> None:
    client, state, _, _ = api
    _seed(state)
    hq = (await client.get("/v1/alerts", headers=auth(HQ))).json()["alerts"]
    assert [a["alert_id"] for a in hq] == ["a3", "a2", "a1"]  # newest first
    own = (await client.get("/v1/alerts", headers=auth(STORE1))).json()["alerts"]
    assert {a["store_id"] for a in own} == {"store-001"}
    assert len(own) == 2
    kind = (await client.get("/v1/alerts?kind=anomaly", headers=auth(HQ))).json()["alerts"]
    assert [a["alert_id"] for a in kind] == ["a3"]
    since = (
        await client.get("/v1/alerts", params={"since": "2026-08-01T10:30:00Z"}, headers=auth(HQ))
    ).json()
    assert [a["alert_id"] for a in since["alerts"]] == ["a3", "a2"]
    limited = (await client.get("/v1/alerts?limit=1", headers=auth(HQ))).json()["alerts"]
    assert len(limited) == 1


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("kind=riot", "kind must be one of"),
        ("since=yesterday", "since must be an RFC 3339 time"),
        ("limit=0", "bad parameter limit"),
        ("limit=lots", "bad parameter limit"),
        ("store_id=../../etc", "store_id must be"),
    ],
)
async def test_bad_query_parameters_are_400_with_a_reason(api: Any, query: str, message: str) -> None:
    client, *_ = api
    resp = await client.get(f"/v1/alerts?{query}", headers=auth(HQ))
    assert resp.status_code == 400
    assert message in resp.json()["error"]


async def test_deliveries_and_trucks_are_cut_to_the_tokens_store(api: Any) -> None:
    client, state, _, _ = api
    _seed(state)
    hq = (await client.get("/v1/deliveries", headers=auth(HQ))).json()["deliveries"]
    assert [d["delivery_id"] for d in hq] == ["d2", "d1"]
    own = (await client.get("/v1/deliveries", headers=auth(STORE1))).json()["deliveries"]
    assert [d["delivery_id"] for d in own] == ["d1"]
    trucks = (await client.get("/v1/trucks", headers=auth(STORE1))).json()["trucks"]
    assert [t["truck_id"] for t in trucks] == ["truck-01"]
    assert len((await client.get("/v1/trucks", headers=auth(HQ))).json()["trucks"]) == 2


async def test_windows_come_back_oldest_first_and_by_window(api: Any) -> None:
    client, state, _, _ = api
    for end, window in (
        ("2026-08-01T10:30:00.000Z", "15m"),
        ("2026-08-01T10:15:00.000Z", "15m"),
        ("2026-08-01T10:30:00.000Z", "1h/15m"),
    ):
        state.add_window(
            {
                "store_id": "store-001",
                "window": window,
                "kind": "tumbling",
                "window_end": end,
                "sales": 1,
                "refunds": 0,
            }
        )
    body = (await client.get("/v1/stores/store-001/windows?window=15m", headers=auth(STORE1))).json()
    assert [w["window_end"] for w in body["windows"]] == [
        "2026-08-01T10:15:00.000Z",
        "2026-08-01T10:30:00.000Z",
    ]


# --- POST /v1/events ----------------------------------------------------------------------------------


async def test_a_mixed_batch_is_202_and_nothing_valid_is_lost(api: Any) -> None:
    client, _, sink, _ = api
    batch = [
        sale("e0"),
        {"event_id": "e1", "type": "sale", "store_id": "store-001"},  # fields missing
        sale("e2", quantity=0),  # quantity must be >= 1
        "not an object",
        sale("e4", store="store-002"),
        sale("e5", note="kept as is"),  # unknown fields are kept
        sale("e6", ts="2026-08-01T10:15:30"),  # no zone
    ]
    resp = await client.post("/v1/events", content=orjson.dumps(batch), headers=auth(HQ))
    assert resp.status_code == 202
    body = resp.json()
    assert body["accepted"] == 3
    assert [r["index"] for r in body["rejected"]] == [1, 2, 3, 6]
    reasons = {r["index"]: r["reason"] for r in body["rejected"]}
    assert "missing required field" in reasons[1]
    assert "$.quantity" in reasons[2]
    assert reasons[3] == "entry is not a JSON object"
    # The valid ones went to the stream, in order, keyed by store, byte-for-byte what was sent.
    assert [(e.index, e.store_id) for e in sink.written] == [
        (0, "store-001"),
        (4, "store-002"),
        (5, "store-001"),
    ]
    assert orjson.loads(sink.written[2].data) == batch[5]
    # The rejected ones were kept, with index, reason and the record itself.
    [(request_id, principal, kept)] = sink.kept
    assert request_id == body["request_id"]
    assert principal.role == "hq"
    assert [(k.index, orjson.loads(k.record)) for k in kept] == [(i, batch[i]) for i in (1, 2, 3, 6)]


async def test_one_event_as_an_object_is_accepted(api: Any) -> None:
    client, _, sink, _ = api
    resp = await client.post("/v1/events", json=sale("solo"), headers=auth(STORE1))
    assert resp.status_code == 202
    assert resp.json()["accepted"] == 1
    assert resp.json()["rejected"] == []
    assert [e.index for e in sink.written] == [0]


async def test_a_store_token_posting_for_another_store_is_403_for_the_whole_request(api: Any) -> None:
    client, _, sink, _ = api
    resp = await client.post(
        "/v1/events", content=orjson.dumps([sale("e0"), sale("e1", store="store-002")]), headers=auth(STORE1)
    )
    assert resp.status_code == 403
    assert "entry 1 is for store 'store-002'" in resp.json()["error"]
    assert sink.written == []
    assert sink.kept == []


async def test_a_body_over_the_size_limit_is_413(api: Any) -> None:
    client, _, sink, _ = api
    big = orjson.dumps([sale(f"e{i}", padding="x" * 600) for i in range(8)])
    assert len(big) > 4096
    resp = await client.post("/v1/events", content=big, headers=auth(HQ))
    assert resp.status_code == 413
    assert "at most 4096" in resp.json()["error"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit holds while reading
        for start in range(0, len(big), 1000):
            yield big[start : start + 1000]

    streamed = await client.post("/v1/events", content=chunks(), headers=auth(HQ))
    assert streamed.status_code == 413
    assert sink.written == []


async def test_more_events_than_allowed_in_one_request_is_413(api: Any) -> None:
    client, _, sink, _ = api
    resp = await client.post(
        "/v1/events", content=orjson.dumps([sale(f"e{i}") for i in range(11)]), headers=auth(HQ)
    )
    assert resp.status_code == 413
    assert resp.json() == {"error": "11 events in one request; at most 10"}
    assert sink.written == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b'"a string"', "one event (a JSON object) or a JSON array"),
        (b"[]", "holds no events"),
        (b"", "not valid JSON"),
    ],
)
async def test_a_body_that_is_not_events_is_400(api: Any, body: bytes, message: str) -> None:
    client, _, sink, _ = api
    resp = await client.post("/v1/events", content=body, headers=auth(HQ))
    assert resp.status_code == 400
    assert message in resp.json()["error"]
    assert sink.written == []


async def test_entries_the_stream_refused_are_reported_and_kept(api: Any) -> None:
    client, _, sink, _ = api
    sink.fail = {1}
    resp = await client.post(
        "/v1/events", content=orjson.dumps([sale("e0"), sale("e1"), sale("e2")]), headers=auth(HQ)
    )
    assert resp.status_code == 202
    assert resp.json()["accepted"] == 2
    assert resp.json()["rejected"] == [
        {"index": 1, "reason": "not written to the stream (throttled); send it again"}
    ]
    assert [k.index for k in sink.kept[0][2]] == [1]


async def test_when_the_stream_takes_nothing_the_answer_is_503(api: Any) -> None:
    client, _, sink, _ = api
    sink.fail = {0, 1}
    resp = await client.post("/v1/events", content=orjson.dumps([sale("e0"), sale("e1")]), headers=auth(HQ))
    assert resp.status_code == 503
    body = resp.json()
    assert body["accepted"] == 0
    assert [r["index"] for r in body["rejected"]] == [0, 1]
    assert "send them again" in body["error"]


async def test_an_unexpected_failure_is_a_500_without_a_stack_trace(api: Any) -> None:
    client, _, sink, _ = api
    sink.raise_on_put = RuntimeError("secret internals at /srv/app.py line 42")
    resp = await client.post("/v1/events", json=sale("e0"), headers=auth(HQ))
    assert resp.status_code == 500
    assert resp.json() == {"error": "internal error; it has been logged"}
    assert "Traceback" not in resp.text
    assert "secret" not in resp.text


# --- 429 -------------------------------------------------------------------------------------------------


async def test_each_token_has_its_own_rate_limit_with_retry_after(api: Any) -> None:
    client, _, _, clock = api
    for _ in range(5):  # the burst
        assert (await client.get("/v1/stores", headers=auth(STORE1))).status_code == 200
    limited = await client.get("/v1/stores", headers=auth(STORE1))
    assert limited.status_code == 429
    assert limited.json() == {"error": "rate limit exceeded for this token"}
    assert limited.headers["retry-after"] == "1"
    # Another token is not affected.
    assert (await client.get("/v1/stores", headers=auth(STORE2))).status_code == 200
    # Posting counts too.
    assert (await client.post("/v1/events", json=sale("e0"), headers=auth(STORE1))).status_code == 429
    clock.now += 1.0  # one request's worth refills at 1/s
    assert (await client.get("/v1/stores", headers=auth(STORE1))).status_code == 200
    assert (await client.get("/v1/stores", headers=auth(STORE1))).status_code == 429


async def test_guessing_tokens_from_one_address_is_slowed_down(api: Any) -> None:
    client, *_ = api
    statuses = [
        (await client.get("/v1/stores", headers=auth(f"guess-{i:020d}"))).status_code for i in range(12)
    ]
    assert statuses[:10] == [401] * 10
    assert statuses[10:] == [429, 429]
    # A valid token still gets in.
    assert (await client.get("/v1/stores", headers=auth(HQ))).status_code == 200
