"""GET /v1/stream: server-sent events filtered to the token's stores, driven as a server would."""

from __future__ import annotations

import asyncio

import pytest

from shelfstream.api.auth import Principal
from shelfstream.api.hub import Hub, sse_stream
from shelfstream.api.state import DashboardState
from tests.unit.api_helpers import HQ, STORE1, make_api, read_sse


def _alert(alert_id: str, store: str) -> dict[str, object]:
    return {
        "kind": "out_of_stock",
        "alert_id": alert_id,
        "store_id": store,
        "ts": "2026-08-01T10:00:00.000Z",
        "product_id": "p",
        "on_hand": 0,
    }


async def _subscribed(hub: Hub) -> None:
    """Yield to the loop until the stream under test has subscribed (it then sees what follows)."""
    for _ in range(10_000):
        if hub.subscribers:
            return
        await asyncio.sleep(0)
    raise AssertionError("the stream never subscribed")


async def _publish_soon(state: DashboardState, *alerts: dict[str, object]) -> None:
    await _subscribed(state.hub)
    for alert in alerts:
        state.add_alert(alert)


async def test_a_store_token_gets_only_its_stores_events() -> None:
    app, state, _, _ = make_api()
    publisher = asyncio.create_task(
        _publish_soon(state, _alert("a1", "store-002"), _alert("a2", "store-001"), _alert("a3", "store-002"))
    )
    status, frames = await read_sse(app, STORE1, frames=2)
    await publisher
    assert status == 200
    assert frames[0]["event"] == "hello"
    assert frames[0]["data"]["store_id"] == "store-001"
    assert frames[1]["event"] == "alert"
    assert frames[1]["data"]["alert_id"] == "a2"
    assert frames[1]["id"].endswith("-2")  # ids are the hub's sequence (a1 was 1, unseen here)


async def test_hq_gets_every_store_and_can_narrow_to_one() -> None:
    app, state, _, _ = make_api()
    publisher = asyncio.create_task(
        _publish_soon(state, _alert("a1", "store-002"), _alert("a2", "store-001"))
    )
    _, frames = await read_sse(app, HQ, frames=3)
    await publisher
    assert [f["data"]["alert_id"] for f in frames[1:]] == ["a1", "a2"]

    publisher = asyncio.create_task(
        _publish_soon(state, _alert("b1", "store-002"), _alert("b2", "store-001"))
    )
    _, frames = await read_sse(app, HQ, frames=2, query="store_id=store-001")
    await publisher
    assert frames[1]["data"]["alert_id"] == "b2"


async def test_trucks_are_cut_down_to_the_tokens_store() -> None:
    app, state, _, _ = make_api()
    trucks = [
        {"truck_id": "t1", "status": "on the road", "store_id": "store-001"},
        {"truck_id": "t2", "status": "on the road", "store_id": "store-002"},
    ]

    async def publish() -> None:
        await _subscribed(state.hub)
        state.set_trucks(trucks)

    publisher = asyncio.create_task(publish())
    _, frames = await read_sse(app, STORE1, frames=2)
    await publisher
    assert frames[1]["event"] == "trucks"
    assert [t["truck_id"] for t in frames[1]["data"]] == ["t1"]


async def test_an_idle_stream_sends_heartbeat_comments() -> None:
    app, _, _, _ = make_api(api={"sse_heartbeat_s": 0.01})
    status, frames = await read_sse(app, HQ, frames=3)
    assert status == 200
    assert frames[1] == {"comment": "keep-alive"}
    assert frames[2] == {"comment": "keep-alive"}


async def test_a_reconnect_with_last_event_id_gets_what_it_missed() -> None:
    app, state, _, _ = make_api()
    for i in range(4):
        state.add_alert(_alert(f"a{i}", "store-001"))
    epoch = state.hub.epoch
    _, frames = await read_sse(app, STORE1, frames=3, headers={"Last-Event-ID": f"{epoch}-2"})
    assert [f["data"]["alert_id"] for f in frames[1:]] == ["a2", "a3"]
    # An id from another server's run replays nothing (it would be a guess).
    task = asyncio.create_task(_publish_soon(state, _alert("new", "store-001")))
    _, frames = await read_sse(app, STORE1, frames=2, headers={"Last-Event-ID": "deadbeef-1"})
    await task
    assert frames[1]["data"]["alert_id"] == "new"


async def test_closing_the_hub_ends_every_stream() -> None:
    hub = Hub()
    who = Principal("hq", None, "k")
    stream = sse_stream(hub, who, None, None, heartbeat_s=60)
    hello = await anext(stream)
    assert b"event: hello" in hello
    pending = asyncio.ensure_future(anext(stream))
    await _subscribed(hub)
    hub.close()
    with pytest.raises(StopAsyncIteration):  # the stream ended
        await asyncio.wait_for(pending, timeout=5)
    assert hub.subscribers == 0


async def test_a_reader_that_falls_behind_is_cut_off_not_buffered_forever() -> None:
    hub = Hub(queue_size=3)
    who = Principal("hq", None, "k")
    stream = sse_stream(hub, who, None, None, heartbeat_s=60)
    await anext(stream)  # hello: subscribed
    for i in range(10):
        hub.publish("alert", "store-001", {"alert_id": f"a{i}"})
    last = await anext(stream)
    assert b"event: cut_off" in last
    assert hub.subscribers == 0
    with pytest.raises(StopAsyncIteration):  # the stream ended
        await anext(stream)
