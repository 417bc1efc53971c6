"""The API keeps its promise whatever the request: any depth or size under the limits is a 400 or a
per-entry rejection (never a 500, never a lost valid entry); ids match whole; headers parse safely;
proxies are trusted only by setting; the OpenAPI document says what the server does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from config import Settings
from shelfstream.api.hub import Hub
from shelfstream.api.server import bind, serve_app, url_of, uvicorn_config
from tests.unit.api_helpers import HQ, STORE1, FakeSink, auth, make_api, sale


@pytest.fixture
async def api() -> AsyncIterator[tuple[httpx.AsyncClient, FakeSink]]:
    app, _, sink, _ = make_api(api={"burst": 1000, "rate_per_s": 100.0})
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client, sink


def nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


@pytest.mark.parametrize("depth", [10, 254, 300, 1000, 1022])
async def test_any_nesting_depth_is_an_entry_rejection_and_the_valid_entries_stay(
    api: tuple[httpx.AsyncClient, FakeSink], depth: int
) -> None:
    client, sink = api
    body = b"[" + orjson.dumps(sale("e1")) + b"," + nested(depth) + b"]"
    answer = await client.post("/v1/events", content=body, headers=auth(HQ))
    assert answer.status_code == 202, answer.text
    assert answer.json()["accepted"] == 1
    assert [r["index"] for r in answer.json()["rejected"]] == [1]
    assert [e.index for e in sink.written] == [0]
    ((_, _, kept),) = sink.kept
    assert kept[0].record  # kept (the entry, or the whole body when it cannot be written again)


async def test_a_body_too_deep_to_parse_is_400(api: tuple[httpx.AsyncClient, FakeSink]) -> None:
    client, _ = api
    answer = await client.post("/v1/events", content=b"[" + nested(5000) + b"]", headers=auth(HQ))
    assert answer.status_code == 400
    assert "not valid JSON" in answer.json()["error"]


async def test_a_store_token_posting_a_nested_store_id_is_403_not_500(
    api: tuple[httpx.AsyncClient, FakeSink],
) -> None:
    client, _ = api
    body = b'[{"store_id":' + b"[" * 1000 + b"]" * 1000 + b"}]"
    answer = await client.post("/v1/events", content=body, headers=auth(STORE1))
    assert answer.status_code == 403


async def test_a_store_id_with_a_final_newline_is_rejected(api: tuple[httpx.AsyncClient, FakeSink]) -> None:
    client, sink = api
    answer = await client.post("/v1/events", json=[sale("e1", "store-002\n")], headers=auth(HQ))
    assert answer.status_code == 202
    assert answer.json()["accepted"] == 0
    assert "store_id" in answer.json()["rejected"][0]["reason"]
    assert sink.written == []


@pytest.mark.parametrize("path", ["/v1/stores/store-001%0A/inventory", "/v1/alerts?store_id=store-001%0A"])
async def test_a_store_id_with_a_newline_in_a_url_is_400(
    api: tuple[httpx.AsyncClient, FakeSink], path: str
) -> None:
    client, _ = api
    answer = await client.get(path, headers=auth(STORE1))
    assert answer.status_code == 400


def test_a_last_event_id_with_non_ascii_digits_is_ignored_not_a_crash() -> None:
    hub = Hub()
    hub.publish("alert", "store-001", {"n": 1})
    for bad in (f"{hub.epoch}-²", f"{hub.epoch}-١٢", f"{hub.epoch}-" + "9" * 40, f"{hub.epoch}-"):
        assert hub._seq_of(bad) is None
    assert hub._seq_of(f"{hub.epoch}-1") == 1


def test_proxy_headers_are_trusted_only_when_configured() -> None:
    app, *_ = make_api()
    plain = uvicorn_config(app)
    plain.load()
    assert plain.proxy_headers is False
    behind = uvicorn_config(app, "10.0.0.7")
    behind.load()
    assert behind.proxy_headers is True
    assert behind.forwarded_allow_ips == "10.0.0.7"


async def test_rotating_x_forwarded_for_does_not_get_around_the_sign_in_limit() -> None:
    app, state, _, _ = make_api()
    sock = bind("127.0.0.1", 0)
    stop = asyncio.Event()
    serving = asyncio.create_task(serve_app(app, sock, state, stop, Settings().api.trusted_proxies))
    try:
        async with httpx.AsyncClient(base_url=url_of(sock)) as client:
            statuses = []
            for i in range(12):
                headers = {**auth(f"guess-{i:020d}"), "X-Forwarded-For": f"203.0.113.{i}"}
                statuses.append((await client.get("/v1/stores", headers=headers)).status_code)
        assert statuses[:10] == [401] * 10
        assert statuses[10:] == [429, 429]
    finally:
        stop.set()
        await serving
        sock.close()


def test_the_openapi_document_says_what_the_server_does() -> None:
    app, *_ = make_api()
    doc: dict[str, Any] = app.openapi()
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "an HQ or a store token",
    }
    for path, item in doc["paths"].items():
        for op in item.values():
            assert "422" not in op["responses"], path
            if path.startswith("/v1/"):
                assert op["security"] == [{"bearer": []}]
                assert {"401", "429"} <= set(op["responses"])
    post = doc["paths"]["/v1/events"]["post"]
    assert {"202", "400", "401", "403", "413", "429", "503"} <= set(post["responses"])
    body = post["requestBody"]["content"]["application/json"]["schema"]
    assert body["oneOf"][0] == {"$ref": "#/components/schemas/Event"}
    assert "Sale" in doc["components"]["schemas"]
    stream = doc["paths"]["/v1/stream"]["get"]["responses"]["200"]["content"]
    assert list(stream) == ["text/event-stream"]
    assert "403" in doc["paths"]["/v1/alerts"]["get"]["responses"]
