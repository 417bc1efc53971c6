"""The dashboard in a real browser: headless Chromium (Debian's) driven by Playwright.

The app runs under uvicorn on 127.0.0.1 (a free port, in a thread with its own event loop), over an
in-memory view the test pushes into from that loop, so "live" means through the real SSE stream.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from config import Settings
from shelfstream.api.app import create_app
from shelfstream.api.auth import Principal, TokenStore
from shelfstream.api.ingest import RejectedEntry, ValidEntry
from shelfstream.api.server import bind, serve_app, url_of
from shelfstream.api.state import DashboardState, ProductStock, StoreStock

pytestmark = [pytest.mark.e2e, pytest.mark.chromium]

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
    """Takes every event and remembers it (the stream the API would have put it on)."""

    def __init__(self) -> None:
        self.written: list[ValidEntry] = []

    async def put(self, entries: Sequence[ValidEntry]) -> list[RejectedEntry]:
        self.written.extend(entries)
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
    sink: _NoSink

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
    closes = dt.datetime.fromisoformat(end.replace("Z", "+00:00"))
    start = (closes - dt.timedelta(minutes=15)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
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
        sink = _NoSink()
        app = create_app(state, tokens, sink, Settings(api={"sse_heartbeat_s": 1.0}))
        ready.set_result(LiveServer(url_of(sock), state, asyncio.get_running_loop(), sink))
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


@dataclass
class Traffic:
    """What a page asked for, what it was served, and what its Content-Security-Policy refused."""

    requests: list[str]
    responses: dict[str, int]
    violations: list[str]


def _watch(page: Page) -> Traffic:
    traffic = Traffic([], {}, [])
    page.on("request", lambda request: traffic.requests.append(request.url))
    page.on("response", lambda response: traffic.responses.__setitem__(response.url, response.status))
    page.on(
        "console",
        lambda message: (
            traffic.violations.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    # Violations are also events in the page (inline styles, scripts, other origins); keep them.
    page.add_init_script(
        "window.__violations = [];"
        "document.addEventListener('securitypolicyviolation',"
        " (e) => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));"
    )
    return traffic


def _chart(page: Page) -> dict[str, Any]:
    """The store chart as drawn: uPlot's data and what its canvas shows at the marker and in the band."""
    found: dict[str, Any] = page.evaluate(
        """() => {
        const holder = document.getElementById("chart");
        const u = holder.uplot;
        const canvas = holder.querySelector(".uplot canvas");
        if (!u || !canvas) return { drawn: false };
        const ctx = canvas.getContext("2d");
        const pixel = (x, y) => Array.from(ctx.getImageData(Math.round(x), Math.round(y), 1, 1).data);
        const [x, sales, , , high, marks] = u.data;
        const flagged = marks.findIndex((v) => v !== null && v !== undefined);
        const banded = high.findIndex((v) => v !== null && v !== undefined);
        const at = (i, v) => [u.valToPos(x[i], "x", true), u.valToPos(v, "y", true)];
        return {
          drawn: true,
          // uPlot's own instance (a plain object with its API), made by the global the vendored script set.
          isUPlot: typeof uPlot === "function" && typeof u.setData === "function"
            && u.root.parentNode === holder && u.root.classList.contains("uplot"),
          canvasWidth: canvas.getBoundingClientRect().width,
          bands: u.bands.map((b) => b.series),
          windows: x.length,
          x: x,
          flagged: flagged,
          marker: flagged < 0 ? null : pixel(...at(flagged, marks[flagged])),
          // Halfway between the expected sales and the upper edge: inside the band, off the sales line.
          band: banded < 0 ? null : pixel(...at(banded, (sales[banded] + high[banded]) / 2)),
        };
      }"""
    )
    return found


def _sign_in(page: Page, url: str, token: str) -> None:
    page.goto(url)
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("Access token").fill(token)
    page.get_by_role("button", name="Sign in").click()


def test_hq_signs_in_sees_the_stores_opens_one_and_an_alert_arrives_live(
    live_server: LiveServer, browser: Browser
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    traffic = _watch(page)
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
    # The chart is uPlot's, loaded from the package through the app's own origin, drawn on a canvas.
    chart = page.locator("#chart")
    expect(chart.locator(".uplot canvas").first).to_be_visible()
    expect(chart).to_have_attribute("data-store", "store-001")
    expect(chart).to_have_attribute("data-windows", "8")
    expect(chart).to_have_attribute("data-bands", "6")  # the expected range, from the third window on
    expect(chart).to_have_attribute("data-anomalies", "1")  # the window flagged for refunds
    vendor = live_server.url.rstrip("/") + "/static/vendor/uplot/"
    assert traffic.responses.get(vendor + "uPlot.iife.min.js") == 200, traffic.responses
    assert traffic.responses.get(vendor + "uPlot.min.css") == 200, traffic.responses
    drawn = _chart(page)
    assert drawn["drawn"]
    assert drawn["isUPlot"]
    assert drawn["bands"] == [[4, 3]]  # filled between the upper and lower edge of the expected range
    assert drawn["x"][0] == 1785578400  # 2026-08-01T10:00Z: x is each window's start, in seconds
    # The canvas itself: the marker's red where the flagged window is, the band's tint inside the range.
    red, green, blue, alpha = drawn["marker"]
    assert (alpha > 200, red > 150, green < 90, blue < 90) == (True,) * 4, f"no marker: {drawn['marker']}"
    red, _, blue, alpha = drawn["band"]
    assert (alpha > 0, blue > red) == (True, True), f"no band: {drawn['band']}"
    # Readable without the canvas: a description for screen readers, the anomaly with its window.
    expect(page.locator("#chart-desc")).to_contain_text("8 windows")
    expect(page.locator("#chart-desc")).to_contain_text("1 marked as an anomaly")
    expect(page.locator("#chart-anomalies li")).to_have_count(1)
    expect(page.locator("#chart-anomalies li")).to_contain_text("11:00–11:15")
    expect(page.locator("#chart-anomalies li")).to_contain_text("refunds")
    # Hovering a window reads its numbers out.
    box = chart.locator(".u-over").bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] - 2, box["y"] + box["height"] / 2)
    expect(page.locator("#chart-readout")).to_contain_text(
        "11:45–12:00 UTC: 9 sales, 0 refunds, expected 0–19 sales"
    )
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

    # Live chart: the window the alert was about arrives; the same uPlot chart takes it (no rebuild),
    # marks it, and lists the alert's sentence beside the chart.
    live_server.call(
        live_server.state.add_window,
        _window("store-001", "2026-08-01T12:15:00.000Z", 12, 6, ("refunds",), (2.0, 22.0)),
    )
    expect(chart).to_have_attribute("data-windows", "9")
    expect(chart).to_have_attribute("data-bands", "7")
    expect(chart).to_have_attribute("data-anomalies", "2")
    expect(chart).to_have_attribute("data-built", "1")
    expect(page.locator("#chart-anomalies li").first).to_contain_text(explanation)
    expect(page.locator("#chart-table tr").first).to_contain_text("12:00–12:15")
    assert _chart(page)["windows"] == 9

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
    # The chart follows the phone's width (resized, not rebuilt), so its labels keep their size.
    page.wait_for_function("() => document.getElementById('chart').uplot.width < 375")
    assert _chart(page)["canvasWidth"] <= 375
    expect(chart).to_have_attribute("data-built", "1")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"the page is {width}px wide on a 375px screen"
    page.screenshot(path="/tmp/shelfstream-dashboard-store-phone.png", full_page=True)

    # Nothing left the app's origin, and the Content-Security-Policy refused nothing.
    origin = live_server.url.rstrip("/") + "/"
    assert traffic.requests
    assert [url for url in traffic.requests if not url.startswith(origin)] == []
    assert traffic.violations == [], traffic.violations
    assert page.evaluate("window.__violations") == []
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

    # Another store's page, opened by its address: the API's refusal, not an empty store page.
    page.goto(live_server.url + "#/store/store-001")
    expect(page.get_by_role("heading", name="Store store-001 is not yours to see")).to_be_visible()
    expect(page.locator("#refused-reason")).to_contain_text(
        "this token is for store 'store-002'; it may not see store 'store-001'"
    )
    expect(page.locator("#store")).to_be_hidden()
    page.get_by_role("link", name="Your store").click()
    expect(page.locator("#stores-body").get_by_role("link", name="store-002")).to_be_visible()
    page.close()


def test_without_the_chart_library_the_store_page_still_shows_its_numbers(
    live_server: LiveServer, browser: Browser
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.route("**/static/vendor/uplot/uPlot.iife.min.js", lambda route: route.abort())
    _sign_in(page, live_server.url, HQ_TOKEN)
    page.locator("#stores-body").get_by_role("link", name="store-001").click()
    expect(page.get_by_role("heading", name="Store store-001")).to_be_visible()
    expect(page.locator("#chart")).to_contain_text("could not be loaded")
    expect(page.locator("#chart .uplot")).to_have_count(0)
    expect(page.locator("#chart-table tr")).to_have_count(8)
    expect(page.locator("#chart-anomalies li")).to_have_count(1)
    expect(page.locator("#chart-desc")).to_contain_text("8 windows")
    expect(page.locator("#stock-body tr")).to_have_count(3)
    page.close()


def test_a_store_in_another_zone_is_charted_in_its_local_time(
    live_server: LiveServer, browser: Browser
) -> None:
    """Window records of a store outside UTC carry its zone: the chart's axis, labels and table are in it."""
    for end, sales in [("2026-08-01T12:00:00.000Z", 7), ("2026-08-01T12:15:00.000Z", 9)]:
        window = _window("store-berlin", end, sales, 0, expected=(2.0, 12.0)) | {"timezone": "Europe/Berlin"}
        live_server.call(live_server.state.add_window, window)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    _sign_in(page, live_server.url, HQ_TOKEN)
    page.locator("#stores-body").get_by_role("link", name="store-berlin").click()
    expect(page.get_by_role("heading", name="Store store-berlin")).to_be_visible()
    expect(page.locator("#chart-zone")).to_have_text("Europe/Berlin")
    expect(page.locator("#chart-zone-table")).to_have_text("Europe/Berlin")
    # 12:00Z is 14:00 in Berlin in August (CEST, UTC+2)
    expect(page.locator("#chart-desc")).to_contain_text("2 windows from 13:45 to 14:15 Europe/Berlin")
    expect(page.locator("#chart-table")).to_contain_text("2026-08-01 14:00–14:15")
    expect(page.locator("#chart .uplot canvas").first).to_be_visible()
    page.close()


def test_alerts_and_deliveries_are_shown_on_one_stated_clock_the_stores_local_time(
    live_server: LiveServer, browser: Browser
) -> None:
    """An alert (an event time) and a delivery (the dispatcher's time) of a store in Berlin both read in
    Berlin time with the zone's abbreviation, and the columns say which clock they are on."""
    window = _window("store-berlin", "2026-08-01T12:00:00.000Z", 7, 0) | {"timezone": "Europe/Berlin"}
    live_server.call(live_server.state.add_window, window)
    live_server.call(
        live_server.state.add_alert,
        {
            "kind": "out_of_stock",
            "alert_id": "out-berlin",
            "store_id": "store-berlin",
            "ts": "2026-08-01T12:05:00.000Z",
            "product_id": "pretzels",
            "on_hand": 0,
        },
    )
    live_server.call(
        live_server.state.add_delivery,
        {
            "delivery_id": "dlv-berlin",
            "truck_id": "truck-02",
            "store_id": "store-berlin",
            "product_id": "pretzels",
            "quantity": 12,
            "ts": "2026-08-01T12:20:00.000Z",
        },
    )
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    _sign_in(page, live_server.url, HQ_TOKEN)
    # The overview's feed: each alert in its own store's time, labelled (UTC for a store with no zone).
    feed = page.locator("#overview-alerts")
    expect(feed).to_contain_text("2026-08-01 14:05 CEST")
    expect(feed).to_contain_text("2026-08-01 11:02 UTC")
    page.locator("#stores-body").get_by_role("link", name="store-berlin").click()
    expect(page.get_by_role("heading", name="Store store-berlin")).to_be_visible()
    expect(page.locator("#store-alerts time").first).to_have_text("2026-08-01 14:05 CEST")
    expect(page.locator("#deliveries-body time").first).to_have_text("2026-08-01 14:20 CEST")
    header = page.locator("#deliveries-body").locator("xpath=../thead/tr/th").first
    expect(header).to_have_text("Delivered (store's local time, Europe/Berlin)")
    page.close()


def test_a_200_character_product_name_does_not_push_the_stock_numbers_off_the_page(
    live_server: LiveServer, browser: Browser
) -> None:
    name = "Organic stone-ground wholemeal sourdough loaf " * 4 + "X" * 16
    name = name[:200]
    long_word = "Z" * 200  # no space to break at: the hardest case
    live_server.call(
        live_server.state.set_stock,
        "store-long",
        StoreStock(
            {
                "long-name": ProductStock(on_hand=41, threshold=5, name=name),
                "long-word": ProductStock(on_hand=42, threshold=5, name=long_word),
            }
        ),
    )
    for width in (375, 1280):
        page = browser.new_page(viewport={"width": width, "height": 900})
        _sign_in(page, live_server.url, HQ_TOKEN)
        page.locator("#stores-body").get_by_role("link", name="store-long").click()
        expect(page.get_by_role("heading", name="Store store-long")).to_be_visible()
        rows = page.locator("#stock-body tr")
        expect(rows).to_have_count(2)
        for i, (full, on_hand) in enumerate(
            [(f"long-name · {name}", "41"), (f"long-word · {long_word}", "42")]
        ):
            cell = rows.nth(i).locator("th")
            expect(cell).to_have_attribute("title", full)
            number = rows.nth(i).locator("td").first
            expect(number).to_have_text(on_hand)
            box = number.bounding_box()
            assert box is not None
            assert box["x"] + box["width"] <= width, f"the on-hand column is off a {width}px page"
            status = rows.nth(i).locator("td").nth(1).bounding_box()
            assert status is not None
            assert status["x"] + status["width"] <= width
        # The table fits its panel: nothing to scroll sideways.
        assert page.evaluate(
            "(() => { const t = document.getElementById('stock-table');"
            " return t.scrollWidth <= t.parentElement.clientWidth; })()"
        )
        page.close()


def test_an_anomaly_alert_is_marked_not_an_anomaly_and_the_feedback_reaches_the_api(
    live_server: LiveServer, browser: Browser
) -> None:
    """The "Not an anomaly" button posts the operator's mark; the alert then says it was marked, also
    after a reload, and the API put one `feedback` event of the alert's store on the stream."""
    explanation = "Sales were 40 in 15 minutes, about twice the usual for a Saturday at noon."
    live_server.call(
        live_server.state.add_alert,
        {
            "kind": "anomaly",
            "alert_id": "ano-promo-1",
            "store_id": "store-001",
            "ts": "2026-08-01T12:15:00.000Z",
            "window_start": "2026-08-01T12:00:00.000Z",
            "window_end": "2026-08-01T12:15:00.000Z",
            "severity": 60,
            "score": 6.0,
            "metric": "sales",
            "observed": 40,
            "expected": [10, 25],
            "explanation": explanation,
        },
    )
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    _sign_in(page, live_server.url, HQ_TOKEN)
    page.locator("#stores-body").get_by_role("link", name="store-001").click()
    alert = page.locator("#store-alerts li", has_text=explanation)
    expect(alert).to_have_count(1)
    # Only the anomaly takes feedback: the out-of-stock alert has no button.
    expect(page.locator("#store-alerts li", has_text="out of stock").get_by_role("button")).to_have_count(0)
    alert.get_by_role("button", name="Mark this alert as not an anomaly").click()
    expect(alert).to_contain_text("Marked: not an anomaly")
    expect(alert.get_by_role("button")).to_have_count(0)

    written = live_server.call(lambda: list(live_server.sink.written))
    assert len(written) == 1
    event = orjson.loads(written[0].data)
    assert written[0].store_id == "store-001"
    assert (event["type"], event["verdict"], event["alert_id"]) == ("feedback", "not_anomaly", "ano-promo-1")
    assert event["by"] == "hq"

    page.reload()  # the same store page (its address), read again from the API
    expect(page.get_by_role("heading", name="Store store-001")).to_be_visible()
    expect(page.locator("#store-alerts li", has_text=explanation)).to_contain_text("Marked: not an anomaly")
    page.close()


def test_the_store_page_shows_its_daily_kpis_with_unknowns_as_dashes(
    live_server: LiveServer, browser: Browser
) -> None:
    """The daily KPIs come from `GET /v1/kpis` (the history tables; tested in test_api_kpis.py): here its
    answer is given, to check what the page makes of it: newest day first, availability as a share,
    a figure the tables do not know (no deliveries: no sell-through) as a dash, never 0."""
    answer = {
        "kpis": [
            {
                "store_id": "store-001",
                "day": "2026-08-02",
                "products": 3,
                "units_sold": 120,
                "revenue": 360.5,
                "availability": 0.875,
                "products_out_of_stock": 1,
                "lost_units": 6.5,
                "lost_value": 19.5,
                "sell_through": None,
            },
            {
                "store_id": "store-001",
                "day": "2026-08-01",
                "products": 3,
                "units_sold": 98,
                "revenue": 294.0,
                "availability": 1.0,
                "products_out_of_stock": 0,
                "lost_units": 0.0,
                "lost_value": 0.0,
                "sell_through": 0.8,
            },
        ]
    }
    asked: list[str] = []

    def fulfil(route: Any) -> None:
        asked.append(route.request.url)
        route.fulfill(status=200, content_type="application/json", body=orjson.dumps(answer))

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.route("**/v1/kpis*", fulfil)
    _sign_in(page, live_server.url, HQ_TOKEN)
    page.locator("#stores-body").get_by_role("link", name="store-001").click()
    expect(page.get_by_role("heading", name="Store store-001")).to_be_visible()
    rows = page.locator("#kpis-body tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("2026-08-02")
    expect(rows.nth(0)).to_contain_text("87.5%")
    expect(rows.nth(0)).to_contain_text("1 of 3")
    expect(rows.nth(0).locator("td").last).to_have_text("–")
    expect(rows.nth(1)).to_contain_text("80.0%")
    expect(page.locator("#kpis-empty")).to_be_hidden()
    assert any("store_id=store-001" in url and "per=store" in url for url in asked)
    page.close()
