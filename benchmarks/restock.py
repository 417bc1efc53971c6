"""Restocking, side by side: the fixed threshold rule against the demand-aware policy.

Same simulated demand (the store simulator, whose customers want the same things whatever is on the
shelf), same trucks, same roads, several seeds. Each run is the whole loop on a simulated clock, in
the code the product runs, without AWS sockets:

    simulator -> processor core (ShardCore, the policy under test) -> restock requests
      -> trip planning (consumers/trips.plan_trip) and the fleet (consumers/fleet)
      -> deliveries: restock events back into the core, units onto the simulator's shelves

Measured from the end of the warm-up to the end (both policies alike), from the simulator's real
shelves: on-shelf availability (share of store-product minutes in stock while open), lost sales (units
and value), stock-out episodes, truck trips, units per trip, average stock held (all hours).

Settings were tuned on the tuning seeds only; the table reports the other seeds.

    python -m benchmarks.restock [--seeds 11 12 13] [--docs docs/benchmarks.md] [--json out.json]
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.progress import Progress

from config import Settings, core_config
from consumers.dispatcher import restock_event, travel_of
from consumers.fleet import Truck, TruckFleet
from consumers.trips import Trip, plan_trip
from foundation.contract import RestockRequest, encode
from foundation.timeunits import DAY_MS, MINUTE_MS
from processors.core import ShardCore
from processors.core.demand import PolicyName
from producers.simulator import StoreSimulator

TUNING_SEEDS = (1, 2, 3)
EVAL_SEEDS = (11, 12, 13, 14, 15)
POLICIES: tuple[PolicyName, ...] = ("threshold", "forecast")
STEP_MS = MINUTE_MS
START_MS = 1_785_628_800_000  # Monday 2026-08-03 00:00 UTC


@dataclass(frozen=True)
class Scenario:
    stores: int = 8
    products: int = 40
    baskets_per_hour: float = 45.0
    days: int = 14
    warmup_days: int = 2
    trucks: int = 3
    truck_capacity: int = 600
    depot_s: float = 45 * 60  # depot to any store
    neighbour_s: float = 12 * 60  # between neighbouring stores (store-001|store-002, ...)
    between_s: float = 50 * 60  # any other pair


def scenario_settings(sc: Scenario, policy: PolicyName) -> Settings:
    pairs = {f"store-{i:03d}|store-{i + 1:03d}": sc.neighbour_s for i in range(1, sc.stores)}
    return Settings(
        restock={"policy": policy},
        trucks={
            "count": sc.trucks,
            "capacity_units": sc.truck_capacity,
            "travel_s": sc.depot_s,
            "travel_between_s": sc.between_s,
            "travel_pairs_s": pairs,
        },
    )


@dataclass
class Result:
    policy: str
    seed: int
    availability: float = 0.0
    lost_units: int = 0
    lost_value: float = 0.0
    demand_units: int = 0
    stockouts: int = 0
    trips: int = 0
    units_delivered: int = 0
    units_per_trip: float = 0.0
    average_stock: float = 0.0
    requests: int = 0
    forecast_requests: int = 0
    never_delivered: int = 0
    cpu_s: float = 0.0


@dataclass(order=True)
class _Arrival:
    at_ms: float
    seq: int
    truck: Truck = field(compare=False)
    trip: Trip = field(compare=False)
    stop: int = field(compare=False)  # index of the stop; len(stops): back at the depot


def run(sc: Scenario, policy: PolicyName, seed: int) -> Result:
    cpu = time.process_time()
    settings = scenario_settings(sc, policy)
    travel = travel_of(settings)
    sim = StoreSimulator(
        seed,
        sc.stores,
        sc.products,
        START_MS,
        baskets_per_hour=sc.baskets_per_hour,
        price_changes_per_day=0.5,
        initial_stock=(30, 60),
    )
    core = ShardCore(core_config(settings.replaced(windows={"tumbling_s": 0}), archive=False))
    fleet = TruckFleet.of(settings.trucks.count, settings.trucks.capacity_units)
    pending: dict[str, RestockRequest] = {}
    delivered: set[str] = set()  # the delivery log: each request delivered at most once
    arrivals: list[_Arrival] = []
    seq = 0
    trips = units = 0
    result = Result(policy, seed)
    warm_end = START_MS + sc.warmup_days * DAY_MS
    end = START_MS + sc.days * DAY_MS
    before = None
    counted_trips = counted_units = 0

    def feed(until_ms: int) -> None:
        for event in sim.events_until(until_ms):
            core.apply(event.data)
        for request in core.drain().requests:
            result.requests += 1
            result.forecast_requests += request.reason == "forecast"
            pending.setdefault(request.alert_id, request)

    t = START_MS
    while t < end:
        t += STEP_MS
        while arrivals and arrivals[0].at_ms <= t:
            arrival = heapq.heappop(arrivals)
            at = int(arrival.at_ms)
            feed(at)
            if arrival.stop == len(arrival.trip.stops):
                fleet.release(arrival.truck, True)
                continue
            for load in arrival.trip.stops[arrival.stop].loads:
                request = load.request
                if request.alert_id in delivered:
                    raise AssertionError(f"{request.alert_id} delivered twice")
                delivered.add(request.alert_id)
                sim.deliver(request.store_id, request.product_id, load.quantity, at)
                event = restock_event(
                    request, load.quantity, arrival.trip.trip_id, arrival.truck.truck_id, at
                )
                core.apply(encode(event))
                units += load.quantity
        if before is None and t >= warm_end:
            feed(warm_end)
            before = sim.figures()
            counted_trips, counted_units = trips, units
        feed(t)
        while pending and fleet.free():
            trip = plan_trip(
                list(pending.values()),
                settings.trucks.capacity_units,
                travel,
                settings.trucks.max_stops,
                fleet.next_truck_in_s(t),
            )
            if trip is None:
                break
            truck = fleet.assign(trip, t)
            assert truck is not None
            trips += 1
            for request in trip.requests:
                del pending[request.alert_id]
            for index, stop in enumerate(trip.stops):
                seq += 1
                heapq.heappush(arrivals, _Arrival(t + stop.arrive_s * 1000, seq, truck, trip, index))
            seq += 1
            heapq.heappush(arrivals, _Arrival(t + trip.back_s * 1000, seq, truck, trip, len(trip.stops)))
    feed(end)
    assert before is not None
    figures = sim.figures().minus(before)
    result.availability = figures.availability
    result.lost_units = figures.lost_units
    result.lost_value = round(figures.lost_value, 2)
    result.demand_units = figures.demand_units
    result.stockouts = figures.stockouts
    result.trips = trips - counted_trips
    result.units_delivered = units - counted_units
    result.units_per_trip = round(result.units_delivered / result.trips, 1) if result.trips else 0.0
    result.average_stock = round(figures.average_stock(end - warm_end, sc.stores * sc.products), 2)
    result.never_delivered = len(pending) + sum(len(a.trip.requests) for a in arrivals)
    result.cpu_s = round(time.process_time() - cpu, 1)
    return result


@dataclass
class Comparison:
    seeds: list[int]
    threshold: list[Result]
    forecast: list[Result]

    def total(self, policy: str) -> dict[str, float]:
        rows = self.threshold if policy == "threshold" else self.forecast
        trips = sum(r.trips for r in rows)
        return {
            "availability": sum(r.availability for r in rows) / len(rows),
            "lost_units": sum(r.lost_units for r in rows),
            "lost_value": round(sum(r.lost_value for r in rows), 2),
            "stockouts": sum(r.stockouts for r in rows),
            "trips": trips,
            "units_per_trip": sum(r.units_delivered for r in rows) / trips if trips else 0.0,
            "average_stock": sum(r.average_stock for r in rows) / len(rows),
        }

    def verdicts(self) -> list[tuple[str, bool]]:
        base, new = self.total("threshold"), self.total("forecast")
        lost_cut = 1 - new["lost_units"] / base["lost_units"] if base["lost_units"] else 0.0
        stock_more = new["average_stock"] / base["average_stock"] - 1 if base["average_stock"] else 0.0
        worst = min(r.availability for r in self.forecast)
        return [
            (f"on-shelf availability >= 99% (every seed; lowest {worst:.2%})", worst >= 0.99),
            (f"lost sales at least 80% lower (here {lost_cut:.1%} lower)", lost_cut >= 0.80),
            (
                f"no more truck trips ({new['trips']:,} against {base['trips']:,})",
                new["trips"] <= base["trips"],
            ),
            (f"at most 25% more average stock (here {stock_more:+.1%})", stock_more <= 0.25),
        ]


def compare(sc: Scenario, seeds: list[int]) -> Comparison:
    results: dict[str, list[Result]] = {p: [] for p in POLICIES}
    with Progress(transient=True) as progress:
        task = progress.add_task("restock runs", total=len(seeds) * len(POLICIES))
        for seed in seeds:
            for policy in POLICIES:
                results[policy].append(run(sc, policy, seed))
                progress.advance(task)
    return Comparison(seeds, results["threshold"], results["forecast"])


def describe(sc: Scenario) -> str:
    return (
        f"{sc.stores} stores x {sc.products} products, {sc.baskets_per_hour:g} baskets/h per store "
        f"(x0.6-1.4), {sc.days} days from a Monday, the first {sc.warmup_days} not counted; "
        f"{sc.trucks} trucks of {sc.truck_capacity} units, {sc.depot_s / 60:g} min from the depot, "
        f"{sc.neighbour_s / 60:g} min between neighbouring stores, {sc.between_s / 60:g} min between others"
    )


HEADER = (
    "| policy | seed | availability | lost units | lost value | stock-outs | trips | units/trip | avg stock |"
)


def table(c: Comparison, sc: Scenario) -> list[str]:
    seeds = ", ".join(map(str, c.seeds))
    lines = [
        f"{describe(sc)}. Seeds {seeds} (settings tuned on seeds {', '.join(map(str, TUNING_SEEDS))} only).",
        "",
        HEADER,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for base, new in zip(c.threshold, c.forecast, strict=True):
        for r in (base, new):
            lines.append(
                f"| {r.policy} | {r.seed} | {r.availability:.2%} | {r.lost_units:,} | {r.lost_value:,.2f} | "
                f"{r.stockouts:,} | {r.trips:,} | {r.units_per_trip:.1f} | {r.average_stock:.1f} |"
            )
    for policy in POLICIES:
        t = c.total(policy)
        lines.append(
            f"| **{policy}, all seeds** | | {t['availability']:.2%} | {t['lost_units']:,} | "
            f"{t['lost_value']:,.2f} | {t['stockouts']:,} | {t['trips']:,} | {t['units_per_trip']:.1f} | "
            f"{t['average_stock']:.1f} |"
        )
    lines.append("")
    for text, ok in c.verdicts():
        lines.append(f"- {text}: {'met' if ok else 'NOT met'}")
    return lines


def write_docs(path: Path, lines: list[str]) -> None:
    """Replace the restock section of the benchmarks page (added at the end if missing)."""
    begin, end = "<!-- bench-restock:begin -->", "<!-- bench-restock:end -->"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    head, _, rest = text.partition(begin)
    _, _, tail = rest.partition(end)
    if not rest:
        head = text.rstrip("\n") + "\n\n## Restocking: threshold rule against the demand-aware policy\n\n"
        tail = "\n"
    path.write_text(head + begin + "\n" + "\n".join(lines) + "\n" + end + tail, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=list(EVAL_SEEDS))
    parser.add_argument("--tuning", action="store_true", help="run the tuning seeds instead")
    parser.add_argument("--days", type=int, default=Scenario.days)
    parser.add_argument("--docs", type=Path, help="write the figures into this Markdown file")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    sc = Scenario(days=args.days)
    seeds = list(TUNING_SEEDS) if args.tuning else args.seeds
    started = time.perf_counter()
    comparison = compare(sc, seeds)
    seconds = time.perf_counter() - started
    lines = table(comparison, sc)
    machine = (
        f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), Python "
        f"{platform.python_version()}, {platform.system()} {platform.release()}"
    )
    lines += [
        "",
        f"Written by `make bench-restock` (`python -m benchmarks.restock`) on {time.strftime('%Y-%m-%d')}, "
        f"{machine}; {seconds:.0f} s for {2 * len(seeds)} runs.",
    ]
    print("\n".join(lines))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "threshold": [asdict(r) for r in comparison.threshold],
                    "forecast": [asdict(r) for r in comparison.forecast],
                },
                indent=2,
            )
        )
    if args.docs and not args.tuning:
        write_docs(args.docs, lines)
    return 0 if all(ok for _, ok in comparison.verdicts()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
