"""`backtest --workers N`: the file split by store over N processes gives the files one core gives."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.scenario import ScenarioConfig, write
from foundation.contract import format_ts
from processors.backtest import run_backtest
from processors.core import CoreConfig

# Enough days for the detector to warm up and alert, a few duplicates and late events.
SCENARIO = ScenarioConfig(seed=31, stores=5, days=10, warmup_days=7, incidents_per_store_week=3.0)
FILES = ("alerts.jsonl", "windows.jsonl", "rejected.jsonl", "inventory.json")


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("workers")
    write(SCENARIO, folder)
    lines = (folder / "events.jsonl").read_bytes().splitlines()
    # Bad lines among them (kept with their line numbers), and a store whose clock runs behind the
    # others by more than the allowed lateness (late in one core's event time, so in every worker's).
    lagging = [
        orjson.dumps(
            {
                "event_id": f"lag-{i}",
                "type": "sale",
                "store_id": "store-lagging",
                "ts": _minus(orjson.loads(lines[len(lines) // 2 + i])["ts"], 10 * 60_000),
                "product_id": "p-1",
                "quantity": 1,
                "unit_price": 2.0,
            }
        )
        for i in range(20)
    ]
    mixed: list[bytes] = []
    for i, line in enumerate(lines):
        mixed.append(line)
        if i % 5000 == 17:
            mixed += [b"not json", b'{"type":"sale","store_id":"store-001"}', b""]
        if len(lines) // 2 <= i < len(lines) // 2 + 20:
            mixed.append(lagging[i - len(lines) // 2])
        if len(lines) // 4 <= i < len(lines) // 4 + 30:
            # A till sending local time as UTC, 9 hours ahead, between the other stores' events: one
            # core's windows wait for it (WindowEngine.ahead), and so must every worker's.
            mixed.append(
                orjson.dumps(
                    {"event_id": f"tokyo-{i}", "type": "sale", "store_id": "store-tokyo"}
                    | {"ts": _minus(orjson.loads(line)["ts"], -9 * 3600_000), "product_id": "p-1"}
                    | {"quantity": 1, "unit_price": 2.0}
                )
            )
        if i == len(lines) // 3:
            # A delivery stamped a month ahead (a truck's clock) and a bad sale stamped a month ahead:
            # one core's windows ignore both, so a split must not close its windows on them either.
            ahead = _minus(orjson.loads(line)["ts"], -30 * 24 * 3600_000)
            mixed.append(
                orjson.dumps(
                    {"event_id": "truck-ahead", "type": "restock", "store_id": "store-002", "ts": ahead}
                    | {"product_id": "p-1", "quantity": 5}
                )
            )
            mixed.append(
                orjson.dumps(
                    {"event_id": "bad-ahead", "type": "sale", "store_id": "store-003", "ts": ahead}
                    | {"product_id": "p-1", "quantity": 0, "unit_price": 1.0}
                )
            )
    path = folder / "mixed.jsonl"
    path.write_bytes(b"\n".join(mixed) + b"\n")
    return path


def _without_peer_figures(data: bytes, since_ms: int) -> bytes:
    from foundation.contract import parse_ts

    lines = []
    for line in data.splitlines():
        alert = orjson.loads(line)
        if alert.get("kind") == "anomaly":
            if parse_ts(alert["window_start"]) < since_ms:
                continue
            for key in ("score", "expected", "severity", "explanation", "contributors"):
                alert.pop(key, None)
        elif "window" in alert:
            # The detector's view of a window (its expected range, which metrics it flagged) follows
            # the store's peers, the stores of its core: a borderline window may be flagged in one
            # split and not another, later too (a window flagged inside an open incident raises no
            # alert of its own). The window's figures are compared whole.
            alert.pop("expected", None)
            alert.pop("anomalies", None)
        lines.append(orjson.dumps(alert))
    return b"\n".join(lines)


def _minus(ts: str, ms: int) -> str:
    from foundation.contract import parse_ts

    return format_ts(parse_ts(ts) - ms)


@pytest.mark.slow  # seconds each: in `make test`, not the fast lane
def test_n_workers_write_the_files_one_worker_writes(events: Path, tmp_path: Path) -> None:
    meta = orjson.loads((events.parent / "meta.json").read_bytes())
    first_week = int(meta["start_ms"]) + 7 * 86_400_000
    one = run_backtest(str(events), str(tmp_path / "one"), CoreConfig(archive=False), workers=1)
    assert int(str(one.summary["events_rejected"])) >= 2
    # The lagging store's sales (10 minutes behind the others, beyond the idle bound) are not late now:
    # its windows close, then take them as revisions; every one is in its windows' latest revision
    # (before, each was late by the other stores' clock and left out)
    assert int(str(one.summary["late_events"])) == 0
    latest: dict[str, dict[str, int]] = {}
    for line in (tmp_path / "one" / "windows.jsonl").read_bytes().splitlines():
        if b'"store-lagging"' in line and b'"tumbling"' in line:
            w = orjson.loads(line)
            if w.get("revision", 0) >= latest.get(w["window_start"], {}).get("revision", 0):
                latest[w["window_start"]] = w
    assert sum(w["sales"] for w in latest.values()) == 20
    assert one.summary["alerts"]["anomaly"] > 0  # type: ignore[index]
    for n in (2, 3):
        many = run_backtest(str(events), str(tmp_path / f"n{n}"), CoreConfig(archive=False), workers=n)
        for name in FILES:
            got, want = (tmp_path / f"n{n}" / name).read_bytes(), (tmp_path / "one" / name).read_bytes()
            if name in ("alerts.jsonl", "windows.jsonl"):
                # A new store borrows the day's shape of its peers, the stores that share its core (as
                # they share a shard in the processor): split over workers, an anomaly's expected range
                # and score may move a little, and in a store's first week, while the peers' shape
                # still speaks, a borderline window may or may not be an alert. From the second week
                # on, which alerts, when, and for what are the same; every window's figures always.
                got, want = _without_peer_figures(got, first_week), _without_peer_figures(want, first_week)
                if name == "alerts.jsonl":
                    assert b'"anomaly"' in want  # the comparison still has anomaly alerts in it
            assert got == want, name
        drop = ("seconds", "events_per_second", "workers", "cpu_seconds", "alerts")
        assert {k: v for k, v in many.summary.items() if k not in drop} == {
            k: v for k, v in one.summary.items() if k not in drop
        }
        # Alert counts: the same but for first-week anomalies (above), and each run's summary
        # counts the anomaly alerts its file holds.
        counts, counts_one = dict(many.summary["alerts"]), dict(one.summary["alerts"])  # type: ignore[call-overload]
        anomalies = (tmp_path / f"n{n}" / "alerts.jsonl").read_bytes().count(b'"kind":"anomaly"')
        assert counts.pop("anomaly") == anomalies
        counts_one.pop("anomaly")
        assert counts == counts_one
        assert many.summary["workers"] == n
        assert not list((tmp_path / f"n{n}").glob(".part-*"))


def test_rejected_lines_keep_their_line_numbers(events: Path, tmp_path: Path) -> None:
    run_backtest(str(events), str(tmp_path), workers=2)
    rejected = [orjson.loads(line) for line in (tmp_path / "rejected.jsonl").read_bytes().splitlines()]
    lines = events.read_bytes().split(b"\n")
    assert rejected
    assert [r["line"] for r in rejected] == sorted(r["line"] for r in rejected)
    for r in rejected:
        assert lines[r["line"] - 1].decode() == r["record"]


@pytest.mark.slow  # seconds each: in `make test`, not the fast lane
def test_workers_read_standard_input(events: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers each read the file: standard input is kept in a file first, and that file is gone after."""
    import io
    import sys

    run_backtest(str(events), str(tmp_path / "file"), workers=1)
    fake = io.TextIOWrapper(io.BytesIO(events.read_bytes()))
    monkeypatch.setattr(sys, "stdin", fake)
    run_backtest("-", str(tmp_path / "stdin"), workers=2)
    for name in ("rejected.jsonl", "inventory.json"):
        assert (tmp_path / "stdin" / name).read_bytes() == (tmp_path / "file" / name).read_bytes()
    assert not list((tmp_path / "stdin").glob(".*"))


def test_workers_must_be_positive(events: Path, tmp_path: Path) -> None:
    from foundation.errors import UsageError

    with pytest.raises(UsageError):
        run_backtest(str(events), str(tmp_path), workers=0)


def test_stores_are_balanced_over_the_workers_by_their_size(tmp_path: Path) -> None:
    """A supermarket and five corner shops: dealt out in turn, one worker would take the supermarket
    and two shops; by size, the supermarket has a worker to itself."""
    from processors.backtest import plan_split

    lines = []
    for i in range(6000):
        store = "big" if i % 2 == 0 else f"shop-{i % 5}"
        lines.append(orjson.dumps({"event_id": f"e{i}", "type": "sale", "store_id": store}))
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    plan = plan_split(path, 2)
    assert plan.stores["big"] not in {plan.stores[f"shop-{k}"] for k in range(5)}
    assert set(plan.stores) == {"big", *(f"shop-{k}" for k in range(5))}


@settings(max_examples=300)
@given(
    store=st.from_regex(r"[A-Za-z0-9._-]{1,20}", fullmatch=True),
    ms=st.integers(0, 4_000_000_000_000),
    spaced=st.booleans(),
    nested=st.sampled_from(["", "before", "after"]),
    escaped=st.booleans(),
)
def test_routing_reads_the_store_the_decoder_reads(
    store: str, ms: int, spaced: bool, nested: str, escaped: bool
) -> None:
    """Whatever the spelling, a valid event routes to its own store id (or a store's events would be
    split over two workers), and a time is read only when it is the event's own, canonical one."""
    from foundation.contract import decode_event
    from processors.backtest import route_of

    event: dict[str, object] = {"event_id": "e", "type": "sale", "store_id": store, "ts": format_ts(ms)}
    event |= {"product_id": "p", "quantity": 1, "unit_price": 1.0}
    other = {"store_id": "elsewhere", "ts": "1999-01-01T00:00:00.000Z"}
    if nested == "before":
        event = {"note": other, **event}
    elif nested == "after":
        event = {**event, "note": other}
    raw = orjson.dumps(event, option=orjson.OPT_INDENT_2 if spaced else 0)
    if escaped:  # the store id's first character as a \u escape
        raw = raw.replace(f'"{store}"'.encode(), f'"\\u{ord(store[0]):04x}{store[1:]}"'.encode(), 1)
    decoded = decode_event(raw)
    assert getattr(decoded, "store_id", None) == store, decoded
    routed, ts = route_of(raw)
    assert routed == store
    assert ts in (None, format_ts(ms))


def test_routing_of_records_that_are_no_event() -> None:
    from processors.backtest import route_of

    assert route_of(b"not json") == ("", None)
    assert route_of(b'{"store_id":"s1"}') == ("s1", None)
    assert route_of(b'{"store_id":"s1","ts":"2026-01-01T00:00:00+01:00"}') == ("s1", None)
    assert route_of(b'{"store_id":"s1","ts":"2026-01-01 00:00:00.000Z"}') == ("s1", None)
    canonical = "2026-01-01T00:00:00.000Z"
    assert route_of(b'{"store_id":"s1","ts":"%s"}' % canonical.encode()) == ("s1", canonical)
    assert route_of(b'{"store_id":"s\\u0031"}') == ("s1", None)
