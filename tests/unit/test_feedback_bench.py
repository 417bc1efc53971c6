"""The feedback mode of the fleet benchmark: which alerts the simulated operator marks, where its
events go in the input, and what is counted after the marks."""

from __future__ import annotations

from pathlib import Path

import orjson

from benchmarks.detect_fleet import (
    FEEDBACK_DELAY_MS,
    MARKS_PER_STORE,
    Raised,
    after_marks,
    operator_marks,
    write_marked,
)
from benchmarks.scenario import Incident
from foundation.contract import Feedback, decode_event, format_ts

HOUR = 3_600_000
DAY = 24 * HOUR
META = {"stores": {"s1": {"day_starts": [i * DAY for i in range(10)], "first_day": 0}}}


def _alert(n: int, start: int) -> Raised:
    return Raised(f"ano-{n}", "s1", start, start + HOUR // 4)


def test_the_operator_marks_the_first_false_alerts_of_each_store() -> None:
    incident = Incident("s1", "sales_spike", 2 * DAY, 2 * DAY + HOUR, 3.0, 0.0)
    alerts = [_alert(0, HOUR)]  # the store's first day: never judged, never marked
    alerts += [_alert(1, 2 * DAY)]  # over the incident: a true alert
    alerts += [_alert(n, (n + 1) * DAY) for n in range(2, 8)]  # false ones
    marks = operator_marks(alerts, [incident], META)
    assert [m.alert_id for m in marks] == ["ano-2", "ano-3", "ano-4"][:MARKS_PER_STORE]
    # After the first mark, the marked ones left out, the false alerts still there are counted
    assert after_marks(alerts, marks, [incident], META) == 3


def test_feedback_events_go_into_the_input_an_hour_after_the_alert(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    lines = [
        orjson.dumps({"event_id": f"e{i}", "type": "sale", "store_id": "s1", "ts": format_ts(i * HOUR)})
        for i in range(6)
    ]
    events.write_bytes(b"\n".join(lines) + b"\n")
    write_marked(events, [_alert(1, HOUR)], tmp_path / "marked.jsonl")
    out = (tmp_path / "marked.jsonl").read_bytes().splitlines()
    assert len(out) == 7
    feedback = decode_event(out[3])  # 1:15 + 1 h: after the 2:00 sale, before the 3:00 one
    assert isinstance(feedback, Feedback)
    assert feedback.alert_id == "ano-1"
    assert feedback.verdict == "not_anomaly"
    assert feedback.ts_ms == HOUR + HOUR // 4 + FEEDBACK_DELAY_MS
