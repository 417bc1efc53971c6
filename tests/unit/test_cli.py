"""The command line: clear one-line errors, exit codes, and backtest's output files (no AWS)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shelfstream.cli import main

LINES = [
    '{"type":"product","event_id":"p1","store_id":"Berlin","ts":"2026-08-01T08:00:00Z","product_id":"echo",'
    '"name":"Echo Dot","price":49.0,"restock_threshold":2,"target_stock":10}',
    '{"type":"count","event_id":"c1","store_id":"Berlin","ts":"2026-08-01T08:00:00Z","product_id":"echo","count":3}',
    '{"type":"sale","event_id":"s1","store_id":"Berlin","ts":"2026-08-01T09:00:00Z","product_id":"echo",'
    '"quantity":3,"unit_price":49.0}',
    "",
    "this is not json",
    '{"type":"sale","event_id":"s1","store_id":"Berlin","ts":"2026-08-01T09:00:00Z","product_id":"echo",'
    '"quantity":3,"unit_price":49.0}',
]


def test_backtest_writes_the_four_files_of_the_contract(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "events.jsonl"
    source.write_text("\n".join(LINES) + "\n")
    out = tmp_path / "out"
    assert main(["backtest", str(source), "--out", str(out)]) == 0
    assert json.loads((out / "inventory.json").read_text()) == {"Berlin": {"echo": 0}}
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert rejected == [
        {
            "line": 5,
            "reason": rejected[0]["reason"],
            "record": "this is not json",
            "record_b64": "dGhpcyBpcyBub3QganNvbg==",  # the exact bytes, whatever they are
        }
    ]
    assert "not valid JSON" in rejected[0]["reason"]
    alerts = [json.loads(line) for line in (out / "alerts.jsonl").read_text().splitlines()]
    assert {a["kind"] for a in alerts} == {"restock_request", "out_of_stock"}
    request = next(a for a in alerts if a["kind"] == "restock_request")
    assert request["requested_quantity"] == 10
    assert request["threshold"] == 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["events_read"] == 5
    assert summary["events_valid"] == 4
    assert summary["events_rejected"] == 1
    assert summary["duplicates_ignored"] == 1
    assert summary["alerts"] == {"out_of_stock": 1, "restock_request": 1}
    for key in ("late_events", "seconds", "events_per_second"):
        assert key in summary
    assert "5 events read" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["backtest", "/no/such/file.jsonl", "--out", "x"], "does not exist"),
        (["demo", "--duration", "-3"], "must be greater than 0"),
        (["simulate", "--stores", "many"], "is not a whole number"),
        (["local-aws", "--port", "70000"], "not a port number"),
        (["frobnicate"], "invalid choice"),
        (["backtest", "f.jsonl"], "--out"),
        (["replay", "/no/such/file.jsonl"], "does not exist"),
    ],
)
def test_user_mistakes_give_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse exits by itself
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


@pytest.mark.parametrize("command", ["provision", "process", "dispatch", "inventory", "alerts"])
def test_commands_that_need_aws_say_so_when_none_is_configured(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command]) == 2
    err = capsys.readouterr().err.strip()
    assert "no AWS endpoint and no AWS credentials" in err
    assert len(err.splitlines()) == 1


def test_bad_settings_are_reported_as_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("SHELFSTREAM_AWS__SHARD_COUNT", "zero")
    source = tmp_path / "e.jsonl"
    source.write_text(LINES[0] + "\n")
    assert main(["backtest", str(source), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "SHELFSTREAM_AWS__SHARD_COUNT" in err
    assert len(err.strip().splitlines()) == 1


def _trading_days(days: int) -> str:
    """Two stores selling every 5 minutes from 09:00 to 17:00 UTC for `days` days (from a Monday)."""
    lines = []
    for day in range(days):
        for minute in range(9 * 60, 17 * 60, 5):
            for store in ("Berlin", "Paris"):
                ts = f"2026-08-{3 + day:02d}T{minute // 60:02d}:{minute % 60:02d}:00Z"
                lines.append(
                    json.dumps(
                        {
                            "type": "sale",
                            "event_id": f"{day}-{minute}",
                            "store_id": store,
                            "ts": ts,
                            "product_id": "echo",
                            "quantity": 1,
                            "unit_price": 2.0,
                        }
                    )
                )
    return "\n".join(lines) + "\n"


def test_backtest_writes_its_fleet_shape_and_takes_one_as_prior(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "events.jsonl"
    source.write_text(_trading_days(5))
    assert main(["backtest", str(source), "--out", str(tmp_path / "first")]) == 0
    shape = json.loads((tmp_path / "first" / "fleet.json").read_text())
    assert shape["version"] == 1
    weekday = shape["kinds"][0]
    assert weekday["days"] >= 4  # store-days that ended within the input
    assert sum(weekday["share"][:36]) == 0.0  # nothing sold before 09:00
    assert sum(weekday["share"][36:68]) > 0.9  # the day's trade, 09:00 to 17:00
    prior = str(tmp_path / "first" / "fleet.json")
    assert main(["backtest", str(source), "--out", str(tmp_path / "again"), "--fleet-prior", prior]) == 0
    capsys.readouterr()
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\x80\x04K\x01.")  # a pickle, not a shape
    assert main(["backtest", str(source), "--out", str(tmp_path / "o"), "--fleet-prior", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "--fleet-prior" in err
    assert "not a fleet shape" in err
    assert len(err.strip().splitlines()) == 1
