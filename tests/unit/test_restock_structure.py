"""One stock event passes the stock ledger, the demand forecast and the restock policy once each, in
that order, and the policies decide what plain order-up-to rules written here decide.

Were the policy split between the ledger and the forecast again (the ledger asking the forecast for a
plan, the forecast learning from inside the ledger, the policy learning), the first test fails; were
a policy to decide from anything but the change, the ledger's stock and the forecast's figures, the
reference rules would part from it."""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.dispatcher import restock_event
from foundation.contract import RestockRequest, decode_event, encode, format_ts
from processors.core import CoreConfig, ShardCore
from processors.core.demand import HOUR_MS, DemandForecast, ReorderPlan, RestockConfig
from processors.core.effects import Effects
from processors.core.restock_policy import ForecastPolicy, ThresholdPolicy
from processors.core.stock_ledger import StockLedger
from producers.simulator import StoreSimulator

MONDAY = int(dt.datetime(2026, 8, 3, tzinfo=dt.UTC).timestamp() * 1000)
STOCK_KINDS = ("sale", "refund", "restock", "count")
LEDGER = ("sale", "refund", "restock", "count", "product", "opened")
LEARN = ("sale", "learn", "stock_changed", "delivered")
READ = ("plan", "order_up_to", "stockout_ms", "daily", "share", "lead_ms")


@contextmanager
def rooms(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str, tuple[str, ...]]]]:
    """Every call into the ledger, the forecast and the policy, as (part, method, the parts it was
    called from): the walk an event takes through the three."""
    log: list[tuple[str, str, tuple[str, ...]]] = []
    inside: list[str] = []

    def spy(cls: type, part: str, name: str) -> None:
        real: Callable[..., Any] = getattr(cls, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            log.append((part, name, tuple(inside)))
            inside.append(part)
            try:
                return real(*args, **kwargs)
            finally:
                inside.pop()

        monkeypatch.setattr(cls, name, wrapper)

    for name in LEDGER:
        spy(StockLedger, "ledger", name)
    for name in LEARN + READ:
        spy(DemandForecast, "forecast", name)
    for cls in (ThresholdPolicy, ForecastPolicy):
        spy(cls, "policy", "decide")
    yield log


@pytest.mark.parametrize("policy", ["forecast", "threshold"])
def test_a_stock_event_passes_ledger_forecast_and_policy_once_each(
    policy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = StoreSimulator(3, 2, 10, MONDAY, baskets_per_hour=40, price_changes_per_day=2)
    core = ShardCore(
        CoreConfig(archive=False, window_ms=0, restock=RestockConfig(policy=policy))  # type: ignore[arg-type]
    )
    kinds: Counter[str] = Counter()
    reasons: Counter[str | None] = Counter()
    pending: list[RestockRequest] = []
    with rooms(monkeypatch) as log:

        def apply(record: bytes) -> None:
            log.clear()
            kind = orjson.loads(record)["type"]
            core.apply(record)
            made = core.drain().requests
            pending.extend(made)
            reasons.update(r.reason for r in made)
            top = [(part, name) for part, name, within in log if not within]
            if kind in STOCK_KINDS:
                kinds[kind] += 1
                learn = [("forecast", "sale" if kind == "sale" else "learn")] if policy == "forecast" else []
                opened = [("ledger", "opened")] if made else []
                assert top == [("ledger", kind), *learn, ("policy", "decide"), *opened], kind
            # The ledger calls nobody; the forecast learns only when the core says so; the policy is
            # called by the core only, and only reads the forecast.
            for part, name, within in log:
                if not within:
                    continue
                assert "ledger" not in within, (part, name, within)
                assert part == "forecast", (part, name, within)
                assert name in READ or within[-1] == "forecast", (part, name, within)
                assert name in READ or "policy" not in within, (part, name, within)

        for hour in range(1, 3 * 24):  # three days, a truck every hour for what was asked
            at = MONDAY + hour * HOUR_MS
            for event in sim.events_until(at):
                apply(event.data)
            for request in pending[:]:
                pending.remove(request)
                sim.deliver(request.store_id, request.product_id, request.requested_quantity, at)
                apply(encode(restock_event(request, request.requested_quantity, "trip", "truck-01", at)))
    assert set(kinds) >= {"sale", "restock"}
    assert reasons["forecast" if policy == "forecast" else "threshold"] > 0, reasons


# --- the reference rules ---------------------------------------------------------------------------

T0 = MONDAY + 9 * HOUR_MS
PRODUCTS = ("p1", "p2", "p3")
THRESHOLD, TARGET = 5, 40

events = st.lists(
    st.one_of(
        st.tuples(st.just("sale"), st.sampled_from(PRODUCTS), st.integers(1, 9)),
        st.tuples(st.just("refund"), st.sampled_from(PRODUCTS), st.integers(1, 3)),
        st.tuples(st.just("restock"), st.sampled_from(PRODUCTS), st.integers(1, 40)),
        st.tuples(st.just("count"), st.sampled_from(PRODUCTS), st.integers(0, 60)),
        st.tuples(st.just("threshold"), st.sampled_from(PRODUCTS), st.integers(0, 20)),
        st.tuples(st.just("target"), st.sampled_from(PRODUCTS), st.integers(1, 80)),
    ),
    max_size=60,
)


def record(i: int, kind: str, product: str, n: int) -> bytes:
    body: dict[str, Any] = {"event_id": f"e{i}", "store_id": "s", "product_id": product}
    body["ts"] = format_ts(T0 + i * 60_000)
    if kind in ("sale", "refund"):
        body.update(type=kind, quantity=n, unit_price=1.0)
    elif kind == "restock":
        body.update(type=kind, quantity=n)
    elif kind == "count":
        body.update(type=kind, count=n)
    else:
        body.update({"type": "product", "restock_threshold" if kind == "threshold" else "target_stock": n})
    return orjson.dumps(body)


class Reference:
    """Stock, the catalog's limits and open requests, kept as plainly as can be."""

    def __init__(self) -> None:
        self.stock: dict[str, int] = {}
        self.threshold: dict[str, int] = {}
        self.target: dict[str, int] = {}
        self.open: set[str] = set()

    def limits(self, product: str) -> tuple[int, int]:
        threshold = self.threshold.get(product, THRESHOLD)
        return threshold, max(self.target.get(product, TARGET), threshold + 1)

    def apply(self, kind: str, product: str, n: int) -> bool:
        """The event's effect on stock; True when it is a stock event (one the policy looks at)."""
        if kind == "threshold":
            self.threshold[product] = n
            return False
        if kind == "target":
            self.target[product] = n
            return False
        on_hand = self.stock.get(product, 0)
        if kind == "restock":
            self.open.discard(product)
        self.stock[product] = {"sale": on_hand - n, "refund": on_hand + n, "restock": on_hand + n}.get(
            kind, n
        )
        return True


@settings(max_examples=150, deadline=None)
@given(events)
def test_the_threshold_policy_is_the_order_up_to_target_rule(seq: list[tuple[str, str, int]]) -> None:
    core = ShardCore(
        CoreConfig(
            archive=False,
            window_ms=0,
            default_restock_threshold=THRESHOLD,
            default_target_stock=TARGET,
            restock=RestockConfig(policy="threshold"),
        )
    )
    ref = Reference()
    for i, (kind, product, n) in enumerate(seq):
        core.apply(record(i, kind, product, n))
        got = [
            (r.product_id, r.on_hand, r.threshold, r.requested_quantity, r.reason)
            for r in core.drain().requests
        ]
        want = []
        if ref.apply(kind, product, n) and product not in ref.open:
            on_hand = ref.stock[product]
            threshold, target = ref.limits(product)
            if on_hand <= threshold:
                ref.open.add(product)
                want.append((product, on_hand, threshold, target - on_hand, "threshold"))
        assert got == want, (i, kind, product, n)
    assert core.inventory().get("s", {}) == ref.stock


class FixedForecast(DemandForecast):
    """A forecast that says the same of every product at every moment: its figures are the test's."""

    def __init__(
        self, point: float, lead_demand: float, up_to: float, cycle: float, products: tuple[str, ...]
    ) -> None:
        super().__init__(RestockConfig())
        self.fixed = ReorderPlan(reorder_point=point, lead_ms=HOUR_MS, lead_demand=lead_demand, z=2.0)
        self.up_to = up_to
        self.cycle = cycle  # units sold before the store's next delivery could come
        self.items = {"s": {p: None for p in products}}  # type: ignore[misc]

    def plan(self, store_id: str, product_id: str, ts_ms: int, price: float | None = None) -> ReorderPlan:
        return self.fixed

    def order_up_to(self, store_id: str, product_id: str, ts_ms: int, plan: ReorderPlan) -> float:
        return self.up_to

    def stockout_ms(self, store_id: str, product_id: str, on_hand: int, ts_ms: int) -> int | None:
        return None

    def daily(self, store_id: str, product_id: str, ts_ms: int) -> float:
        return 0.0

    def demand(self, store_id: str, product_id: str, ts_ms: int, span_ms: float) -> float:
        return self.cycle


def order_up_to_quantity(on_hand: int, limits: tuple[int, int], forecast: FixedForecast) -> int:
    """Up to the forecast's level, no more than fits under the target when the truck comes (zero or
    less: nothing to ask for)."""
    threshold, target = limits
    want = max(threshold + 1, math.ceil(forecast.up_to)) - on_hand
    room = target - max(0, math.floor(on_hand - forecast.fixed.lead_demand))
    return min(want, room)


@settings(max_examples=150, deadline=None)
@given(
    seq=events,
    point=st.integers(0, 30),
    lead_demand=st.integers(0, 15),
    extra=st.integers(0, 40),
    cycle=st.integers(0, 30),
)
def test_the_forecast_policy_is_the_order_up_to_rule_of_its_forecast(
    seq: list[tuple[str, str, int]], point: int, lead_demand: int, extra: int, cycle: int
) -> None:
    """Driven as the core drives it (ledger, then policy, then the ledger keeps what was asked), with
    a forecast whose figures are fixed: ask at the threshold or the reorder point (below the target),
    up to the forecast's level; the store's other products below their target that would ask before
    the next delivery could come, and need at least a fifth of an order, join it."""
    forecast = FixedForecast(point + 0.5, lead_demand + 0.25, point + 0.5 + extra, cycle + 0.5, PRODUCTS)
    ledger = StockLedger(THRESHOLD, TARGET)
    policy = ForecastPolicy()
    ref = Reference()
    out, tally = Effects(), Counter[str]()
    for i, (kind, product, n) in enumerate(seq):
        ev = decode_event(record(i, kind, product, n))
        ts = T0 + i * 60_000
        got: list[RestockRequest] = []
        if kind in STOCK_KINDS:
            change = getattr(ledger, kind)(ev, ts, out, tally)
            got = list(policy.decide(change, ledger, forecast))
            ledger.opened(got, ts)
        else:
            ledger.product(ev, out, tally)
            policy.catalog_changed((ev.store_id, ev.product_id))
        want = []
        if ref.apply(kind, product, n) and product not in ref.open:
            on_hand = ref.stock[product]
            limits = ref.limits(product)
            reason = (
                "threshold"
                if on_hand <= limits[0]
                else "forecast"
                if on_hand <= point + 0.5 and on_hand < limits[1]
                else None
            )
            quantity = order_up_to_quantity(on_hand, limits, forecast)
            if reason is not None and quantity >= 1:
                ref.open.add(product)
                want.append((product, on_hand, reason, quantity))
                for other in PRODUCTS:
                    if other == product or other in ref.open or other not in ref.stock:
                        continue
                    other_limits = ref.limits(other)
                    other_on_hand = ref.stock[other]
                    if other_on_hand >= other_limits[1]:
                        continue
                    if other_on_hand - (cycle + 0.5) > max(other_limits[0], point + 0.5):
                        continue
                    quantity = order_up_to_quantity(other_on_hand, other_limits, forecast)
                    if quantity >= max(1.0, 0.2 * min(other_limits[1], forecast.up_to)):
                        ref.open.add(other)
                        want.append((other, ref.stock[other], "forecast", quantity))
        assert [(r.product_id, r.on_hand, r.reason, r.requested_quantity) for r in got] == want, (i, kind)
