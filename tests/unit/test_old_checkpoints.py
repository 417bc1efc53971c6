"""Checkpoints written before the restock policy had classes of its own still load, and the core goes
on from them exactly as the release that wrote them did (tests/unit/old_checkpoints.py made the data).

They pickled one `processors.core.inventory.Inventory` holding the stock, the demand forecast (a
`processors.core.demand.Demand`) and the reorder points; today each has its own place in the state."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import orjson
import pytest

from foundation.contract import encode
from processors.core import ShardCore
from processors.core.demand import DemandForecast
from processors.core.restock_policy import ForecastPolicy, ThresholdPolicy
from processors.core.stock_ledger import StockLedger
from tests.unit.old_checkpoints import STORE, after, before, core

DATA = Path(__file__).parent / "data" / "checkpoints-before-restock-policy.json"
CASES: dict[str, Any] = orjson.loads(DATA.read_bytes())


def requests_of(c: ShardCore, records: list[bytes]) -> list[Any]:
    for record in records:
        c.apply(record)
    return [orjson.loads(encode(r)) for r in c.drain().requests]


def restored(policy: str, form: str) -> ShardCore:
    blob = base64.b64decode(CASES[policy][form])
    if form == "snapshot":
        return ShardCore.restore(blob)
    return ShardCore.from_parts(blob, {}, {}, keys=False)  # a head without its dedup runs


@pytest.mark.parametrize("form", ["snapshot", "head"])
def test_a_forecast_core_of_the_earlier_release_goes_on_alike(form: str) -> None:
    case = CASES["forecast"]
    c = restored("forecast", form)
    state = c.state
    assert isinstance(state.inventory, StockLedger)
    assert isinstance(state.forecast, DemandForecast)
    assert isinstance(state.policy, ForecastPolicy)
    assert {p: rid for (_, p), rid in state.inventory.open_requests.items()} == case["open_requests"]
    assert set(state.inventory.requested_at) == set(state.inventory.open_requests)
    assert state.forecast.stores[STORE].hours_seen > 24  # two days learned, not started afresh
    assert set(state.forecast.items[STORE]) == {"fast", "slow", "rare"}
    assert state.policy.reorder_points  # the cached points came along
    got = requests_of(c, after(case["open_requests"]))
    assert got == case["requests_after"]
    assert got[0]["lead_time_s"] == 7260.0  # learned from the delivery that answered the old request
    assert c.inventory() == case["stock"]


@pytest.mark.parametrize("form", ["snapshot", "head"])
def test_a_threshold_core_of_the_earlier_release_goes_on_alike(form: str) -> None:
    case = CASES["threshold"]
    c = restored("threshold", form)
    assert c.state.forecast is None
    assert isinstance(c.state.policy, ThresholdPolicy)
    assert requests_of(c, after(case["open_requests"])) == case["requests_after"]
    assert c.inventory() == case["stock"]


@pytest.mark.parametrize("policy", ["forecast", "threshold"])
def test_todays_core_makes_the_requests_the_earlier_release_made(policy: str) -> None:
    case = CASES[policy]
    c = core(policy)
    assert requests_of(c, before()) == case["requests_before"]
    assert requests_of(c, after(case["open_requests"])) == case["requests_after"]
    again = ShardCore.restore(core_after_before(policy).snapshot())  # and today's own checkpoints
    assert requests_of(again, after(case["open_requests"])) == case["requests_after"]


def core_after_before(policy: str) -> ShardCore:
    c = core(policy)
    requests_of(c, before())
    return c
