"""Windows closed per store, late sales revising their windows, withdrawn alerts, and the end of input.

Pure core: no sockets. A stub detector (`Silence`) flags a drop for any judged short window with
fewer than half its expected sales, so what is judged, alerted and withdrawn is easy to see.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from pathlib import Path

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from foundation.contract import AnomalyWithdrawn, format_ts, parse_ts
from processors.backtest import run_backtest
from processors.core import CoreConfig, ShardCore
from processors.core.detectors import DetectorConfig, Finding, PeerDayShape, Verdict
from processors.core.monitor import still_anomalous
from processors.core.tails import Z99
from processors.core.windows import WindowEngine, WindowResult, WindowSpec

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
T0 = 1_773_043_200_000  # 2026-03-09T08:00:00Z, a Monday, on a window boundary
SPECS = (WindowSpec(15 * MIN, 15 * MIN), WindowSpec(HOUR, 15 * MIN))
EXPECTED = 20.0  # the stub's expected sales per 15 minutes


class Silence:
    """A stub detector: a short window with at most half of EXPECTED sales is a drop."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []

    def observe(self, window: WindowResult, offset_ms: int, fleet: PeerDayShape) -> Verdict:
        self.seen.append((window.start_ms, window.end_ms))
        if window.end_ms - window.start_ms != 15 * MIN or window.spec.kind != "tumbling":
            return Verdict()
        var = EXPECTED * 1.2
        high = EXPECTED + Z99 * var**0.5
        if window.sales <= 0.5 * EXPECTED:
            finding = Finding("sales", "low", float(window.sales), EXPECTED, 0.0, high, 9.0, 80)
            return Verdict((finding,))
        return Verdict()


def _event(kind: str, eid: str, store: str, ts: int, **fields: object) -> bytes:
    body: dict[str, object] = {"type": kind, "event_id": eid, "store_id": store, "ts": format_ts(ts)}
    if kind in ("sale", "refund"):
        body.update(product_id="p1", quantity=1, unit_price=2.0)
    body.update(fields)
    return orjson.dumps(body)


def _stubbed(core: ShardCore, *stores: str) -> dict[str, Silence]:
    monitor = core.state.monitor
    assert monitor is not None
    stubs = {s: Silence() for s in stores}
    monitor.detectors.update(stubs)  # type: ignore[arg-type]
    return stubs


def _windows(out: list[bytes]) -> list[dict[str, object]]:
    return [orjson.loads(w) for w in out]


def _trade(store: str, start: int, end: int, every: int = MIN, tag: str = "") -> list[bytes]:
    """One sale a minute (20 per quarter: EXPECTED) from start to end (exclusive)."""
    return [
        _event("sale", f"{store}-{tag}{t}", store, t, transaction_id=f"{store}-{tag}{t}")
        for t in range(start, end, every)
    ]


def _merge(*streams: list[bytes]) -> list[bytes]:
    """Streams interleaved by event time (what a shard reads when every till is online)."""
    return sorted((line for s in streams for line in s), key=lambda r: orjson.loads(r)["ts"])


# --- per-store progress ---------------------------------------------------------------------------


def test_a_store_behind_its_shard_mates_closes_by_its_own_clock() -> None:
    """Store b's uploads run 4 minutes behind store a's (within the idle bound): none of its sales is
    late or revised (by the shard's clock, with the allowed 2 minutes, every one of them was late)."""
    core = ShardCore(CoreConfig(detection=DetectorConfig(kind="off")))
    a = _trade("a", T0, T0 + 2 * HOUR)
    b = _trade("b", T0, T0 + 2 * HOUR)
    for i, raw in enumerate(a):
        core.apply(raw)
        if i >= 4:
            core.apply(b[i - 4])
    assert core.stats.late_events == 0
    records = [w for w in _windows(core.drain().windows) if w["window"] == "15m" and w["store_id"] == "b"]
    assert [w["sales"] for w in records][:6] == [15] * 6
    assert not any("revision" in w for w in records)


def test_a_store_further_behind_is_revised_not_lost() -> None:
    """Store b runs 12 minutes behind: beyond the idle bound its windows close before its sales come,
    and are revised when they do; none is late, and the last revisions hold them all."""
    core = ShardCore(CoreConfig(detection=DetectorConfig(kind="off")))
    a = _trade("a", T0, T0 + 2 * HOUR)
    b = _trade("b", T0, T0 + 2 * HOUR)
    for i, raw in enumerate(a):
        core.apply(raw)
        if i >= 12:
            core.apply(b[i - 12])
    core.finish()
    assert core.stats.late_events == 0
    latest: dict[str, dict[str, object]] = {}
    for w in _windows(core.drain().windows):
        if w["window"] != "15m" or w["store_id"] != "b" or w.get("partial"):
            continue
        if int(w.get("revision", 0)) >= int(latest.get(str(w["window_start"]), {}).get("revision", 0)):  # type: ignore[call-overload]
            latest[str(w["window_start"])] = w
    assert [w["sales"] for w in latest.values()][:6] == [15] * 6
    assert any(w.get("revision") for w in latest.values())


def test_a_silent_store_is_judged_the_idle_bound_after_its_windows_end() -> None:
    eng = WindowEngine(SPECS, 2 * MIN, 7 * DAY, idle_ms=15 * MIN)
    assert eng.sale("quiet", T0 + MIN, 1, 1.0, None)
    closed: list[WindowResult] = []
    for t in range(T0 + MIN, T0 + 90 * MIN, MIN):  # another store trades on; "quiet" says nothing
        assert eng.sale("busy", t, 1, 1.0, None)
        closed += eng.advance(t)
    quiet = [w for w in closed if w.store_id == "quiet" and w.spec.kind == "tumbling"]
    busy = [w for w in closed if w.store_id == "busy" and w.spec.kind == "tumbling"]
    # busy: closed 2 minutes after each quarter (up to 08:45-09:00 by 09:02 < 09:29), quiet: 15 after
    assert [w.end_ms for w in busy][-1] == T0 + 75 * MIN
    assert [w.end_ms for w in quiet] == [T0 + k * 15 * MIN for k in range(1, 5)]
    assert [w.sales for w in quiet] == [1, 0, 0, 0]


def test_one_silent_store_among_trading_ones_is_still_caught() -> None:
    core = ShardCore(CoreConfig())
    stubs = _stubbed(core, "a", "b", "c")
    stream = _merge(
        _trade("a", T0, T0 + 3 * HOUR),
        _trade("b", T0, T0 + 3 * HOUR),
        _trade("c", T0, T0 + HOUR),  # c's tills stop at 09:00: an outage
    )
    for raw in stream:
        core.apply(raw)
    alerts = [a for a in core.drain().alerts if a.store_id == "c" and type(a).__name__ == "Anomaly"]
    assert alerts, "the outage is judged while the others trade"
    first = parse_ts(alerts[0].window_start)
    assert first == T0 + HOUR  # the first silent quarter
    # judged the idle bound after it ended: by 09:15 + 15 minutes of the others' trade
    assert (T0 + HOUR, T0 + HOUR + 15 * MIN) in stubs["c"].seen


# --- late sales: revisions and withdrawn alerts -----------------------------------------------------


def _spell_stream(delay: int) -> tuple[list[bytes], int, int]:
    """Stores a and b trade 08:00-12:00; b's tills are offline 09:00-10:30 and upload the spell's
    sales `delay` after it ends (event times kept; the file is in arrival order)."""
    spell = (T0 + HOUR, T0 + 150 * MIN)
    a = _trade("a", T0, T0 + 4 * HOUR)
    b = _trade("b", T0, T0 + 4 * HOUR)
    held = [r for r in b if spell[0] <= parse_ts(orjson.loads(r)["ts"]) < spell[1]]
    live = _merge(a, [r for r in b if r not in held])
    upload_at = spell[1] + delay
    cut = next(i for i, r in enumerate(live) if parse_ts(orjson.loads(r)["ts"]) >= upload_at)
    return live[:cut] + held + live[cut:], spell[0], spell[1]


def test_an_offline_spell_uploaded_late_is_counted_revised_and_its_alert_withdrawn() -> None:
    stream, start, end = _spell_stream(45 * MIN)
    core = ShardCore(CoreConfig())
    _stubbed(core, "a", "b")
    for raw in stream:
        core.apply(raw)
    core.finish()
    out = core.drain()
    assert core.stats.late_events == 0  # within the 2-hour bound: every sale is in its window
    anomalies = [a for a in out.alerts if a.store_id == "b" and type(a).__name__ == "Anomaly"]
    withdrawn = [a for a in out.alerts if isinstance(a, AnomalyWithdrawn)]
    assert anomalies, "the silence was alerted while the tills were offline"
    assert {w.withdrawn_alert_id for w in withdrawn} == {a.alert_id for a in anomalies}
    w = withdrawn[0]
    assert w.store_id == "b"
    assert w.metric == "sales"
    assert w.observed >= EXPECTED * 0.5
    assert "uploaded late by the tills" in w.reason
    assert "withdrawn" in w.reason
    assert core.stats.alerts["anomaly_withdrawn"] == len(withdrawn)
    # The latest revision of every window of b holds all its sales
    latest: dict[tuple[str, str], dict[str, object]] = {}
    for rec in _windows(out.windows):
        if rec["store_id"] == "b" and not rec.get("partial"):
            key = (str(rec["window"]), str(rec["window_start"]))
            if key not in latest or int(rec.get("revision", 0)) > int(latest[key].get("revision", 0)):  # type: ignore[call-overload]
                latest[key] = rec
    quarters = {k[1]: v for k, v in latest.items() if k[0] == "15m"}
    for t in range(start, end, 15 * MIN):
        assert quarters[format_ts(t)]["sales"] == 15
        assert int(quarters[format_ts(t)].get("revision", 0)) >= 1  # type: ignore[call-overload]
    assert latest[("1h/15m", format_ts(start))]["sales"] == 60
    # The same alert id for the same cause: a replay withdraws with the same id
    again = ShardCore(CoreConfig())
    _stubbed(again, "a", "b")
    for raw in stream:
        again.apply(raw)
    again.finish()
    assert [a.alert_id for a in again.drain().alerts if isinstance(a, AnomalyWithdrawn)] == [
        a.alert_id for a in withdrawn
    ]


def test_a_real_outage_with_a_few_late_sales_is_not_withdrawn() -> None:
    core = ShardCore(CoreConfig())
    _stubbed(core, "a", "b")
    stream = _merge(_trade("a", T0, T0 + 4 * HOUR), _trade("b", T0, T0 + HOUR))
    # Two sales of the outage's first quarter arrive an hour later
    late = [_event("sale", f"late-{i}", "b", T0 + HOUR + i * MIN) for i in range(2)]
    cut = next(i for i, r in enumerate(stream) if parse_ts(orjson.loads(r)["ts"]) >= T0 + 2 * HOUR)
    for raw in stream[:cut] + late + stream[cut:]:
        core.apply(raw)
    out = core.drain()
    assert any(type(a).__name__ == "Anomaly" and a.store_id == "b" for a in out.alerts)
    assert not any(isinstance(a, AnomalyWithdrawn) for a in out.alerts)
    assert any(b'"revision":1' in w and b'"b"' in w for w in out.windows)


def test_events_beyond_the_late_bound_are_still_counted_late() -> None:
    core = ShardCore(CoreConfig(detection=DetectorConfig(kind="off"), late_bound_ms=HOUR))
    for raw in _trade("a", T0, T0 + 3 * HOUR, every=5 * MIN):
        core.apply(raw)
    core.drain()
    assert core.apply(_event("sale", "old", "a", T0 + 10 * MIN))  # ~3 hours behind: beyond the bound
    assert core.apply(_event("refund", "old-r", "a", T0 + 10 * MIN))
    assert core.apply(_event("sale", "recent", "a", T0 + 2 * HOUR + 10 * MIN))  # within it
    assert core.stats.late_events == 2
    assert core.inventory() == {"a": {"p1": -37}}  # stock follows every one of them
    core.apply(_event("sale", "next", "a", T0 + 3 * HOUR + 20 * MIN))  # the next closing point
    revised = [w for w in _windows(core.drain().windows) if w.get("revision")]
    assert {(w["window"], w["window_start"]) for w in revised} == {
        ("15m", format_ts(T0 + 2 * HOUR)),
        ("1h/15m", format_ts(T0 + 75 * MIN)),
        ("1h/15m", format_ts(T0 + 90 * MIN)),
        ("1h/15m", format_ts(T0 + 105 * MIN)),
    }  # [10:00, 11:00) had not closed yet: it closes with the late sale in it
    assert all(w["revision"] == 1 for w in revised)


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=0, max_value=2**32), st.integers(min_value=1, max_value=60))
def test_for_any_arrival_order_within_the_bound_the_last_revision_is_the_sum_of_all_events(
    seed: int, n: int
) -> None:
    rng = random.Random(seed)
    events = []
    for i in range(n * 3):
        store = rng.choice(["a", "b", "c"])
        # any order of 55 minutes: all within the 2-hour bound (and under the hour that a clock jumps
        # only with a quorum: WindowEngine.ahead)
        ts = T0 + rng.randrange(0, 55 * MIN)
        tid = rng.choice([None, f"t{rng.randrange(20)}"])
        events.append((store, ts, rng.randrange(1, 4), tid, rng.random() < 0.2, i))
    # A store's windows begin at its first event: its earliest event arrives first (any order after)
    for store in "abc":
        mine = [k for k, e in enumerate(events) if e[0] == store]
        if mine:
            earliest = min(mine, key=lambda k: events[k][1])
            events[mine[0]], events[earliest] = events[earliest], events[mine[0]]
    core = ShardCore(CoreConfig(detection=DetectorConfig(kind="off")))
    for store, ts, qty, tid, refund, i in events:
        extra = {} if tid is None else {"transaction_id": tid}
        core.apply(_event("refund" if refund else "sale", f"e{i}", store, ts, quantity=qty, **extra))
    core.finish()
    assert core.stats.late_events == 0
    latest: dict[tuple[str, str, str], dict[str, object]] = {}
    for rec in _windows(core.drain().windows):
        key = (str(rec["store_id"]), str(rec["window"]), str(rec["window_start"]))
        if key not in latest or int(rec.get("revision", 0)) > int(latest[key].get("revision", 0)):  # type: ignore[call-overload]
            latest[key] = rec
    for (store, name, start_text), rec in latest.items():
        start, end = parse_ts(start_text), parse_ts(str(rec["window_end"]))
        inside = [e for e in events if e[0] == store and start <= e[1] < end]
        sales = [e for e in inside if not e[4]]
        refunds = [e for e in inside if e[4]]
        # distinct transactions per pane (a sale counts once in each pane it has lines in)
        panes: dict[int, set[object]] = defaultdict(set)
        anon = 0
        for e in sales:
            if e[3] is None:
                anon += 1
            else:
                panes[e[1] // (15 * MIN)].add(e[3])
        assert rec["lines"] == len(sales), (name, start_text)
        assert rec["units"] == sum(e[2] for e in sales)
        assert rec["sales"] == anon + sum(len(v) for v in panes.values())
        assert rec["refund_lines"] == len(refunds)
        assert rec["refund_units"] == sum(e[2] for e in refunds)
    # every event is in its 15-minute window's last revision
    quarters = [r for r in latest.values() if r["window"] == "15m"]
    assert sum(int(r["lines"]) + int(r["refund_lines"]) for r in quarters) == len(events)  # type: ignore[call-overload]


def test_still_anomalous_uses_the_detectors_bars() -> None:
    cfg = DetectorConfig()
    assert still_anomalous(cfg, "sales", "low", 0.0, 20.0, 24.0, cfg.drop_threshold)
    assert not still_anomalous(cfg, "sales", "low", 11.0, 20.0, 24.0, cfg.drop_threshold)  # above the ratio
    assert not still_anomalous(cfg, "sales", "low", 0.0, 2.0, 2.0, cfg.drop_threshold)  # too few expected


# --- end of input ----------------------------------------------------------------------------------


def test_no_alert_after_the_input_ends_with_stores_open_in_several_zones() -> None:
    """At 16:07 UTC the input ends: Berlin (17:07), New York (12:07) and Tokyo (01:07: closed) stores.
    Nothing after 16:07 is judged: no window that ends after it is a silence."""
    end = T0 + 8 * HOUR + 7 * MIN
    zones = {"berlin": "Europe/Berlin", "new-york": "America/New_York", "tokyo": "Asia/Tokyo"}
    core = ShardCore(CoreConfig())
    stubs = _stubbed(core, *zones)
    for store, zone in zones.items():
        core.apply(_event("store", f"{store}-zone", store, T0, timezone=zone))
    stream = _merge(
        _trade("berlin", T0, end + 1),
        _trade("new-york", T0 + 5 * HOUR, end + 1),
        _trade("tokyo", T0, T0 + HOUR),  # closed for the night since 09:00 UTC
    )
    for raw in stream:
        core.apply(raw)
    core.finish()
    out = core.drain()
    for stub in stubs.values():
        assert all(e <= end for _, e in stub.seen)
    anomalies = [a for a in out.alerts if type(a).__name__ == "Anomaly"]
    assert all(parse_ts(a.window_end) <= end for a in anomalies)
    assert not [a for a in anomalies if a.store_id in ("berlin", "new-york")]
    partial = [w for w in _windows(out.windows) if w.get("partial")]
    assert partial
    assert all(parse_ts(str(w["window_start"])) <= end < parse_ts(str(w["window_end"])) for w in partial)
    # Tokyo went quiet long before the end while the others traded: judged (the stub flags it)
    assert any(a.store_id == "tokyo" for a in anomalies)


def _arrival(stream: list[bytes], others: list[bytes]) -> list[bytes]:
    """`others` (in time order) read among `stream` (in arrival order) as they happen: each before
    the first line of `stream` that arrives after it (by the newest time read so far)."""
    out: list[bytes] = []
    newest = -1
    rest = list(others)
    for raw in stream:
        newest = max(newest, parse_ts(orjson.loads(raw)["ts"]))
        while rest and parse_ts(orjson.loads(rest[0])["ts"]) <= newest:
            out.append(rest.pop(0))
        out.append(raw)
    return out + rest


def test_a_split_backtest_ends_like_one_worker(tmp_path: Path) -> None:
    """Stores a-d; b's spell uploaded late, c stops two hours before the end: two workers write the
    same files as one (the end of input is the whole file's last event time in both)."""
    stream, _, _ = _spell_stream(50 * MIN)
    others = _merge(
        _trade("c", T0, T0 + 2 * HOUR, every=3 * MIN), _trade("d", T0, T0 + 4 * HOUR, every=2 * MIN)
    )
    lines = _arrival(stream, others)
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    one = run_backtest(str(path), str(tmp_path / "one"), CoreConfig(archive=False), workers=1)
    two = run_backtest(str(path), str(tmp_path / "two"), CoreConfig(archive=False), workers=2)
    for name in ("alerts.jsonl", "windows.jsonl", "inventory.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    assert one.summary["late_events"] == two.summary["late_events"] == 0
    windows = [orjson.loads(w) for w in (tmp_path / "one" / "windows.jsonl").read_bytes().splitlines()]
    last = max(parse_ts(orjson.loads(r)["ts"]) for r in lines)
    assert all(parse_ts(w["window_end"]) <= last or w.get("partial") for w in windows)
    assert any(w.get("revision") for w in windows)


# --- checkpoints keep the new state ----------------------------------------------------------------


def _run(core: ShardCore, lines: list[bytes]) -> None:
    for raw in lines:
        core.apply(raw)


def test_checkpoints_keep_kept_panes_revisions_and_judged_alerts() -> None:
    stream, _, _end = _spell_stream(45 * MIN)
    cut = next(
        i
        for i, r in enumerate(stream)
        if orjson.loads(r)["store_id"] == "b" and parse_ts(orjson.loads(r)["ts"]) >= T0 + HOUR
    )
    whole = ShardCore(CoreConfig())
    _stubbed(whole, "a", "b")
    _run(whole, stream)
    whole.finish()
    want = whole.drain()

    for how in ("snapshot", "parts"):
        first = ShardCore(CoreConfig())
        _stubbed(first, "a", "b")
        _run(first, stream[:cut])  # the alert is raised, the spell's upload has not come yet
        before = first.drain()
        # The stub detectors are no part of the stored format: they go out and come back around it
        first.state.monitor.detectors.clear()  # type: ignore[union-attr]
        if how == "snapshot":
            resumed = ShardCore.restore(first.snapshot())
        else:
            parts = first.checkpoint_parts()
            resumed = ShardCore.from_parts(parts.head, parts.runs, parts.pieces)
        _stubbed(resumed, "a", "b")
        _run(resumed, stream[cut:])
        resumed.finish()
        after = resumed.drain()
        assert before.windows + after.windows == want.windows, how
        assert [a.alert_id for a in before.alerts + after.alerts] == [a.alert_id for a in want.alerts], how
        assert any(isinstance(a, AnomalyWithdrawn) for a in after.alerts), how
        engine = resumed.state.windows
        assert engine is not None
        assert engine.late_panes == CoreConfig().late_bound_ms // (15 * MIN)  # the bound, in panes
        assert Counter(type(v).__name__ for v in engine.stores["b"].kept.values()) == Counter(
            type(v).__name__
            for v in whole.state.windows.stores["b"].kept.values()  # type: ignore[union-attr]
        )


def test_a_withdrawal_is_an_alert_like_the_others() -> None:
    from foundation.contract import ALERT_KINDS, alert_kind, decode_alert, encode
    from processors.sinks.sns import message_attributes

    withdrawn = AnomalyWithdrawn(
        alert_id="ano-x",
        store_id="s1",
        ts=format_ts(T0),
        withdrawn_alert_id="ano-y",
        reason="Sales at s1 between 09:00 and 10:30 were uploaded late by the tills: 90 sales, as expected "
        "(70-110); the alert is withdrawn.",
        observed=90.0,
        metric="sales",
        window_start=format_ts(T0 - HOUR),
        window_end=format_ts(T0),
    )
    assert "anomaly_withdrawn" in ALERT_KINDS
    assert decode_alert(encode(withdrawn)) == withdrawn  # what `alerts` and the API read back
    attributes = message_attributes(withdrawn)
    assert attributes["kind"]["StringValue"] == alert_kind(withdrawn) == "anomaly_withdrawn"
    assert attributes["store_id"]["StringValue"] == "s1"
