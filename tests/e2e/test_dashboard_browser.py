"""The dashboard in a real browser: headless Chromium (Debian's) driven by Playwright.

The app runs under uvicorn on 127.0.0.1 (a free port, in a thread with its own event loop), over an
in-memory view the test pushes into from that loop, so "live" means through the real SSE stream.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from config import Settings
from shelfstream.api.app import create_app
from shelfstream.api.auth import Principal, TokenStore
from shelfstream.api.ingest import RejectedEntry, ValidEntry
from shelfstream.api.server import bind, serve_app, url_of
from shelfstream.api.state import DashboardState, ProductStock, StoreStock

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HQ_TOKEN = "hq-token-for-the-browser-test"
STORE_TOKEN = "store-2-token-for-the-browser-test"


class _NoSink:
    async def put(self, entries: Sequence[ValidEntry]) -> list[RejectedEntry]:
        return []

    async def keep_rejected(
        self, request_id: str, principal: Principal, entries: Sequence[RejectedEntry]
    ) -> None:
        return None


@dataclass
class LiveServer:
    url: str
    state: DashboardState
    loop: asyncio.AbstractEventLoop

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn` in the server's loop (the view and its hub belong to it) and wait for it."""
        done: Future[Any] = Future()

        def run() -> None:
            try:
                done.set_result(fn(*args))
            except Exception as exc:
                done.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return done.result(timeout=10)


def _window(
    store: str,
    end: str,
    sales: int,
    refunds: int,
    anomalies: tuple[str, ...] = (),
    expected: tuple[float, float] | None = None,
) -> dict[str, Any]:
    start = (
        f"{end[:11]}{int(end[11:13]):02d}:{int(end[14:16]) - 15:02d}:00.000Z" if end[14:16] != "00" else end
    )
    return {
        "store_id": store,
        "window": "15m",
        "kind": "tumbling",
        "window_start": start,
        "window_end": end,
        "sales": sales,
        "lines": sales,
        "units": sales,
        "revenue": sales * 3.0,
        "refunds": refunds,
        "refund_lines": refunds,
        "refund_units": refunds,
        "refund_amount": refunds * 3.0,
        "refund_ratio": None,
        "avg_basket": 3.0,
        "anomalies": list(anomalies),
        **({"expected": {"sales": list(expected), "refunds": [0.0, 2.0]}} if expected else {}),
    }


def _seed(state: DashboardState) -> None:
    state.set_stock(
        "store-001",
        StoreStock(
            {
                "apples": ProductStock(on_hand=0, threshold=5, name="Apples", open_request=True),
                "bread": ProductStock(on_hand=3, threshold=5, name="Bread", open_request=True),
                "milk": ProductStock(on_hand=27, threshold=5, name="Milk"),
            }
        ),
    )
    state.set_stock("store-002", StoreStock({"milk": ProductStock(on_hand=12, threshold=5)}))
    for i, (sales, refunds) in enumerate(
        [(14, 1), (18, 0), (25, 2), (31, 1), (22, 6), (19, 1), (40, 2), (9, 0)]
    ):
        hour, minute = divmod(10 * 60 + 15 * (i + 1), 60)
        flagged = ("refunds",) if refunds == 6 else ()
        # The detector's range appears from the third window on (the store's second day, here).
        expected = (max(0.0, sales - 10.0), sales + 10.0) if i >= 2 else None
        state.add_window(
            _window(
                "store-001", f"2026-08-01T{hour:02d}:{minute:02d}:00.000Z", sales, refunds, flagged, expected
            )
        )
    state.add_alert(
        {
            "kind": "out_of_stock",
            "alert_id": "out-1",
            "store_id": "store-001",
            "ts": "2026-08-01T11:02:00.000Z",
            "product_id": "apples",
            "on_hand": 0,
        }
    )
    state.add_delivery(
        {
            "delivery_id": "dlv-1",
            "truck_id": "truck-01",
            "store_id": "store-001",
            "product_id": "bread",
            "quantity": 37,
            "ts": "2026-08-01T11:20:00.000Z",
        }
    )
    state.set_trucks(
        [
            {
                "truck_id": "truck-01",
                "status": "on the road",
                "store_id": "store-001",
                "product_id": "apples",
                "deliveries": 1,
            },
            {
                "truck_id": "truck-02",
                "status": "at the depot",
                "store_id": None,
                "product_id": None,
                "deliveries": 0,
            },
        ]
    )


@pytest.fixture
def live_server() -> Iterator[LiveServer]:
    tokens = TokenStore({HQ_TOKEN: {"role": "hq"}, STORE_TOKEN: {"role": "store", "store_id": "store-002"}})
    sock = bind("127.0.0.1", 0)
    ready: Future[LiveServer] = Future()
    holder: dict[str, Any] = {}

    async def main() -> None:
        state = DashboardState()
        _seed(state)
        stop = asyncio.Event()
        holder["stop"] = stop
        app = create_app(state, tokens, _NoSink(), Settings(sse_heartbeat_s=1.0))
        ready.set_result(LiveServer(url_of(sock), state, asyncio.get_running_loop()))
        await serve_app(app, sock, state, stop)

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    server = ready.result(timeout=10)
    try:
        yield server
    finally:
        server.loop.call_soon_threadsafe(holder["stop"].set)
        thread.join(timeout=15)
        sock.close()
    assert not thread.is_alive(), "the server did not stop"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert shutil.which(CHROMIUM), "Debian's chromium is needed: `make browser-deps` installs it"
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _sign_in(page: Page, url: str, token: str) -> None:
    page.goto(url)
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("Access token").fill(token)
    page.get_by_role("button", name="Sign in").click()


def test_hq_signs_in_sees_the_stores_opens_one_and_an_alert_arrives_live(
    live_server: LiveServer, browser: Browser
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    _sign_in(page, live_server.url, HQ_TOKEN)

    stores = page.locator("#stores-body")
    expect(stores.get_by_role("link", name="store-001")).to_be_visible()
    expect(stores.get_by_role("link", name="store-002")).to_be_visible()
    expect(stores.locator("tr").first).to_contain_text("30")  # store-001 holds 0 + 3 + 27 units
    expect(page.locator("#live")).to_contain_text("live")
    page.screenshot(path="/tmp/shelfstream-dashboard-overview-desktop.png", full_page=True)

    stores.get_by_role("link", name="store-001").click()
    expect(page.get_by_role("heading", name="Store store-001")).to_be_visible()
    stock = page.locator("#stock-body")
    expect(stock.locator("tr")).to_have_count(3)
    expect(stock).to_contain_text("out of stock")
    expect(page.locator("#chart svg polyline.sales")).to_have_count(1)
    expect(page.locator("#chart svg circle.marker")).to_have_count(1)  # the window flagged for refunds
    expect(page.locator("#chart svg polygon.band")).to_have_count(1)  # the expected range, once learned
    expect(page.locator("#chart svg desc")).to_contain_text("expected")
    expect(page.locator("#deliveries-body")).to_contain_text("truck-01")
    feed = page.locator("#store-alerts")
    expect(feed.locator("li")).to_have_count(1)

    # Live: an anomaly for this store appears in its feed without a reload; one for another store does not.
    explanation = "Refunds were 6 in 15 minutes, about five times the usual for a Saturday morning."
    live_server.call(
        live_server.state.add_alert,
        {
            "kind": "anomaly",
            "alert_id": "ano-live-1",
            "store_id": "store-001",
            "ts": "2026-08-01T12:15:00.000Z",
            "window_start": "2026-08-01T12:00:00.000Z",
            "window_end": "2026-08-01T12:15:00.000Z",
            "severity": 80,
            "score": 7.5,
            "metric": "refunds",
            "observed": 6,
            "expected": [0, 2],
            "explanation": explanation,
        },
    )
    live_server.call(
        live_server.state.add_alert,
        {
            "kind": "out_of_stock",
            "alert_id": "out-other",
            "store_id": "store-002",
            "ts": "2026-08-01T12:16:00.000Z",
            "product_id": "milk",
            "on_hand": 0,
        },
    )
    expect(feed.locator("li").first).to_contain_text(explanation)
    expect(feed.locator("li")).to_have_count(2)
    expect(feed).not_to_contain_text("milk is out of stock")
    expect(page.locator("#card-anomalies")).to_have_text("1")

    # Live stock: the processor's new numbers replace the table's.
    live_server.call(
        live_server.state.set_stock,
        "store-001",
        StoreStock(
            {
                "apples": ProductStock(on_hand=40, threshold=5, name="Apples"),
                "bread": ProductStock(on_hand=3, threshold=5, name="Bread", open_request=True),
                "milk": ProductStock(on_hand=27, threshold=5, name="Milk"),
            }
        ),
    )
    expect(stock).not_to_contain_text("out of stock")
    expect(page.locator("#card-on-hand")).to_have_text("70")
    page.screenshot(path="/tmp/shelfstream-dashboard-store-desktop.png", full_page=True)

    page.set_viewport_size({"width": 375, "height": 812})
    expect(page.get_by_role("heading", name="Store store-001")).to_be_visible()
    # The chart is redrawn at the phone's width, so its labels keep their size.
    expect(page.locator("#chart svg")).to_have_attribute("viewBox", re.compile(r"^0 0 3\d\d 200$"))
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"the page is {width}px wide on a 375px screen"
    page.screenshot(path="/tmp/shelfstream-dashboard-store-phone.png", full_page=True)
    page.close()


def test_a_store_token_sees_only_its_store_and_a_bad_token_is_refused(
    live_server: LiveServer, browser: Browser
) -> None:
    page = browser.new_page(viewport={"width": 375, "height": 812})
    _sign_in(page, live_server.url, "not-a-real-token-at-all")
    expect(page.get_by_role("alert")).to_contain_text("not accepted")

    page.get_by_label("Access token").fill(STORE_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    stores = page.locator("#stores-body")
    expect(stores.get_by_role("link", name="store-002")).to_be_visible()
    expect(stores.locator("tr")).to_have_count(1)
    expect(page.locator("#overview-alerts")).not_to_contain_text("apples")
    page.screenshot(path="/tmp/shelfstream-dashboard-overview-phone.png", full_page=True)

    # Keyboard only: tab to the store's link and follow it.
    link = stores.get_by_role("link", name="store-002")
    link.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Store store-002")).to_be_visible()
    expect(page.locator("#stock-body")).to_contain_text("milk")
    page.close()
