"""The end of an input is not a store's silence: a backtest drops the alerts about the time after a
store's last event, and keeps an outage the store's later trade shows was one."""

from __future__ import annotations

import json
from pathlib import Path

from foundation.contract import Anomaly, AnomalyWithdrawn, format_ts
from processors.backtest import run_backtest
from processors.core import CoreConfig
from processors.trailing_silence import TrailingSilence

MIN = 60_000
MONDAY = 1_785_715_200_000  # 2026-08-03T00:00:00Z


def anomaly(store: str, start_ms: int, aid: str = "a1") -> Anomaly:
    return Anomaly(
        alert_id=aid,
        store_id=store,
        ts=format_ts(start_ms + 15 * MIN),
        window_start=format_ts(start_ms),
        window_end=format_ts(start_ms + 15 * MIN),
        severity=80,
        score=9.0,
        metric="sales",
        observed=0.0,
        expected=(20.0, 40.0),
        explanation="Sales fell to 0.",
    )


def test_an_alert_after_the_stores_newest_event_waits_for_its_next_one() -> None:
    hold = TrailingSilence()
    early = anomaly("A", MONDAY, "early")
    quiet = anomaly("A", MONDAY + 60 * MIN, "quiet")
    assert hold.admit([early, quiet], {"A": MONDAY + 30 * MIN}) == [early]
    assert hold.admit([], {"A": MONDAY + 60 * MIN}) == []  # an event at the window's start: not after it
    assert hold.admit([], {"A": MONDAY + 61 * MIN}) == [quiet]  # the store traded again: it was news
    assert hold.end() == 0


def test_what_still_waits_at_the_end_is_dropped_and_counted_with_its_withdrawal() -> None:
    hold = TrailingSilence()
    assert hold.admit([anomaly("A", MONDAY, "x"), anomaly("B", MONDAY, "y")], {"A": 0, "B": 0}) == []
    withdrawn = AnomalyWithdrawn(
        alert_id="w",
        store_id="B",
        ts=format_ts(MONDAY),
        withdrawn_alert_id="y",
        reason="late",
        observed=30.0,
        metric="sales",
        window_start=format_ts(MONDAY),
        window_end=format_ts(MONDAY + 15 * MIN),
    )
    assert hold.admit([withdrawn], {"A": 0, "B": 0}) == []
    assert hold.end() == 1
    assert (hold.dropped, hold.cancelled) == (1, 1)


def _sales(store: str, days: range, until_min: int = 17 * 60, skip: range = range(0)) -> list[str]:
    lines = []
    for day in days:
        last = until_min if day == days[-1] else 17 * 60
        for minute in range(9 * 60, last):
            if day == days[-1] and minute in skip:
                continue
            ts = MONDAY + day * 24 * 60 * MIN + minute * MIN
            lines.append(
                json.dumps(
                    {
                        "type": "sale",
                        "event_id": f"{store}-{day}-{minute}",
                        "store_id": store,
                        "ts": format_ts(ts),
                        "product_id": "p1",
                        "quantity": 1,
                        "unit_price": 2.0,
                    }
                )
            )
    return lines


def _run(tmp_path: Path, lines: list[str], name: str) -> tuple[list[dict[str, object]], dict[str, object]]:
    source = tmp_path / f"{name}.jsonl"
    source.write_text("\n".join(sorted(lines, key=lambda line: json.loads(line)["ts"])) + "\n")
    out = tmp_path / name
    run_backtest(str(source), str(out), CoreConfig(archive=False))
    alerts = [json.loads(line) for line in (out / "alerts.jsonl").read_text().splitlines()]
    return [a for a in alerts if a["kind"] == "anomaly"], json.loads((out / "summary.json").read_text())


def test_a_store_whose_data_ends_before_the_others_gets_no_alert_for_it(tmp_path: Path) -> None:
    """A trades four days; B's data ends at 12:00 on the fourth while A trades on: the afternoon's
    silence is the end of B's data, not B's sales collapsing."""
    anomalies, summary = _run(tmp_path, _sales("A", range(4)) + _sales("B", range(4), 12 * 60), "cut")
    assert [a for a in anomalies if a["store_id"] == "B"] == []
    assert summary["alerts_after_last_event_dropped"] >= 1  # it was raised, and held back
    assert summary["alerts"].get("anomaly", 0) == len(anomalies)  # type: ignore[union-attr]


def test_an_outage_the_store_trades_after_is_still_alerted(tmp_path: Path) -> None:
    """B's tills stop from 12:00 to 15:00 on the fourth day and trade again: that is an outage."""
    outage = range(12 * 60, 15 * 60)
    anomalies, summary = _run(tmp_path, _sales("A", range(4)) + _sales("B", range(4), skip=outage), "outage")
    fell = [a for a in anomalies if a["store_id"] == "B" and a["metric"] == "sales"]
    assert fell, "the outage was not alerted"
    assert all("T12:" <= str(a["window_start"])[10:14] <= "T15:" for a in fell)
    assert summary["alerts_after_last_event_dropped"] == 0
