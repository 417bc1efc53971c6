"""Restocking, side by side: threshold rules against the demand-aware policy, in two worlds.

Each run is the whole loop on a simulated clock, in the code the product runs, without AWS sockets:

    demand -> processor core (ShardCore, the policy under test) -> restock requests
      -> (the warehouse's preparation) -> trip planning (consumers/trips.plan_trip) and the fleet
      -> deliveries: restock events back into the core, units onto the shelves

The varied world (benchmarks/restock_world.py) is the measure: rates spread over three orders of
magnitude, products' own hour and weekday shapes, over-dispersed baskets, lead times of 2-12 hours.
There three rules meet the same demand:

- `fair`: the threshold rule set from each product's true demand, as a careful store manager sets it
  (reorder at a day of demand, fill to three days): the baseline the targets are against;
- `catalog`: the threshold rule with the simulator's kind of catalog (thresholds 5-12, targets 40-80,
  whatever a product sells);
- `forecast`: the demand-aware policy, on the careful catalog (its threshold a floor, its target the
  shelf).

The store simulator's world (producers/simulator.py) follows, its own catalog's thresholds the only
baseline there.

Measured from the end of the warm-up to the end, from the real shelves: on-shelf availability (share of
store-product minutes in stock while open), lost sales (units and value), stock-out episodes, truck
trips, units per trip, average stock held (all hours), and requests made while the shelf held its target.

Settings were tuned on the tuning seeds only; the tables report the other seeds.

    python -m benchmarks.restock [--seeds 11 12 13] [--days 12] [--world varied] [--docs docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal, Protocol

from rich.progress import Progress

from benchmarks.restock_world import VariedWorld
from config import Settings, core_config
from consumers.dispatcher import restock_event, travel_of
from consumers.fleet import Truck, TruckFleet
from consumers.trips import Trip, plan_trip
from foundation.contract import RestockRequest, encode
from foundation.timeunits import DAY_MS, MINUTE_MS
from processors.core import ShardCore
from processors.core.demand import PolicyName
from producers.simulator import ShelfFigures, StoreSimulator

TUNING_SEEDS = (1, 2, 3)
EVAL_SEEDS = (11, 12, 13, 14, 15)
STEP_MS = MINUTE_MS
START_MS = 1_785_628_800_000  # Monday 2026-08-03 00:00 UTC

WorldName = Literal["varied", "simulator"]
# A rule under test: which policy the core runs, and whether the catalog is set from the true demand.
ARMS: dict[str, tuple[PolicyName, bool]] = {
    "fair": ("threshold", True),
    "catalog": ("threshold", False),
    "forecast": ("forecast", True),
}
WORLD_ARMS: dict[WorldName, tuple[str, ...]] = {
    "varied": ("fair", "catalog", "forecast"),
    "simulator": ("catalog", "forecast"),  # its catalog is the only one it has
}


@dataclass(frozen=True)
class Scenario:
    world: WorldName = "simulator"
    stores: int = 8
    products: int = 40
    baskets_per_hour: float = 45.0  # the simulator's world
    days: int = 14
    warmup_days: int = 2
    trucks: int = 3
    truck_capacity: int = 600
    depot_s: float = 45 * 60  # depot to any store
    neighbour_s: float = 12 * 60  # between neighbouring stores (store-001|store-002, ...)
    between_s: float = 50 * 60  # any other pair


SIMULATOR = Scenario()
VARIED = Scenario(world="varied", stores=6, products=25, days=12, trucks=4)


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


class World(Protocol):
    position_ms: int

    def events_until(self, ts_ms: int) -> Sequence[_HasData]: ...

    def deliver(self, store_id: str, product_id: str, quantity: int, ts_ms: int) -> None: ...

    def figures(self) -> ShelfFigures: ...


class _HasData(Protocol):
    @property
    def data(self) -> bytes: ...


def make_world(
    sc: Scenario, fair: bool, seed: int
) -> tuple[World, dict[tuple[str, str], int], Callable[[str], float]]:
    """The world, each store-product's target stock, and the lead time of a request at a store (the
    warehouse's preparation and the drive: 0 in the simulator's world, where trucks leave at once)."""
    if sc.world == "varied":
        world = VariedWorld(seed, sc.stores, sc.products, START_MS, fair=fair)
        return world, world.targets(), world.lead_ms
    sim = StoreSimulator(
        seed,
        sc.stores,
        sc.products,
        START_MS,
        baskets_per_hour=sc.baskets_per_hour,
        price_changes_per_day=0.5,
        initial_stock=(30, 60),
    )
    targets = {(s, i.product_id): i.target_stock for s in sim.store_ids for i in sim.catalog}
    return sim, targets, lambda store_id: 0.0


@dataclass
class Result:
    arm: str
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
    full_shelf_requests: int = 0  # made while the shelf held its target or more
    empty_requests: int = 0  # for less than one unit
    never_delivered: int = 0
    cpu_s: float = 0.0


@dataclass(order=True)
class _Arrival:
    at_ms: float
    seq: int
    truck: Truck = field(compare=False)
    trip: Trip = field(compare=False)
    stop: int = field(compare=False)  # index of the stop; len(stops): back at the depot


def run(sc: Scenario, arm: str, seed: int, overrides: dict[str, float | int] | None = None) -> Result:
    """One rule over one seed; `overrides`: RestockConfig fields to set (experiments, `--set`)."""
    cpu = time.process_time()
    policy, fair = ARMS[arm]
    settings = scenario_settings(sc, policy)
    travel = travel_of(settings)
    world, targets, lead_of = make_world(sc, fair, seed)
    config = core_config(settings.replaced(windows={"tumbling_s": 0}), archive=False)
    restock = replace(config.restock, **(overrides or {}))  # type: ignore[arg-type]
    core = ShardCore(replace(config, restock=restock))
    fleet = TruckFleet.of(settings.trucks.count, settings.trucks.capacity_units)
    preparing: list[tuple[float, int, RestockRequest]] = []  # (ready to leave, seq, request)
    pending: dict[str, RestockRequest] = {}
    delivered: set[str] = set()  # the delivery log: each request delivered at most once
    arrivals: list[_Arrival] = []
    seq = 0
    trips = units = 0
    result = Result(arm, seed)
    warm_end = START_MS + sc.warmup_days * DAY_MS
    end = START_MS + sc.days * DAY_MS
    before = None
    counted_trips = counted_units = 0
    counting = False

    def feed(until_ms: int) -> None:
        nonlocal seq
        for event in world.events_until(until_ms):
            core.apply(event.data)
        for request in core.drain().requests:
            if counting:
                result.requests += 1
                result.forecast_requests += request.reason == "forecast"
                target = targets[(request.store_id, request.product_id)]
                result.full_shelf_requests += request.on_hand >= target
                result.empty_requests += request.requested_quantity < 1
            # The warehouse prepares the order; the truck's drive is the rest of the lead time.
            ready = until_ms + max(0.0, lead_of(request.store_id) - sc.depot_s * 1000)
            seq += 1
            heapq.heappush(preparing, (ready, seq, request))

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
                world.deliver(request.store_id, request.product_id, load.quantity, at)
                event = restock_event(
                    request, load.quantity, arrival.trip.trip_id, arrival.truck.truck_id, at
                )
                core.apply(encode(event))
                units += load.quantity
        if before is None and t >= warm_end:
            feed(warm_end)
            before = world.figures()
            counted_trips, counted_units = trips, units
            counting = True
        feed(t)
        while preparing and preparing[0][0] <= t:
            request = heapq.heappop(preparing)[2]
            pending.setdefault(request.alert_id, request)
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
    figures = world.figures().minus(before)
    items = len(targets)
    result.availability = figures.availability
    result.lost_units = figures.lost_units
    result.lost_value = round(figures.lost_value, 2)
    result.demand_units = figures.demand_units
    result.stockouts = figures.stockouts
    result.trips = trips - counted_trips
    result.units_delivered = units - counted_units
    result.units_per_trip = round(result.units_delivered / result.trips, 1) if result.trips else 0.0
    result.average_stock = round(figures.average_stock(end - warm_end, items), 2)
    result.never_delivered = (
        len(pending) + len(preparing) + sum(len(a.trip.requests) for a in arrivals if a.stop == 0)
    )
    result.cpu_s = round(time.process_time() - cpu, 1)
    return result


@dataclass
class Comparison:
    sc: Scenario
    seeds: list[int]
    runs: dict[str, list[Result]]  # per arm, one per seed in `seeds` order

    def total(self, arm: str) -> dict[str, float]:
        rows = self.runs[arm]
        trips = sum(r.trips for r in rows)
        return {
            "availability": sum(r.availability for r in rows) / len(rows),
            "lost_units": sum(r.lost_units for r in rows),
            "lost_value": round(sum(r.lost_value for r in rows), 2),
            "stockouts": sum(r.stockouts for r in rows),
            "trips": trips,
            "units_per_trip": sum(r.units_delivered for r in rows) / trips if trips else 0.0,
            "average_stock": sum(r.average_stock for r in rows) / len(rows),
            "requests": sum(r.requests for r in rows),
            "full_shelf_requests": sum(r.full_shelf_requests for r in rows),
        }

    def targets(self) -> list[tuple[str, bool]]:
        """The targets of the demand-aware policy, against the fair threshold rule on these seeds."""
        fair, new = self.runs["fair"], self.runs["forecast"]
        base_t, new_t = self.total("fair"), self.total("forecast")
        worst = min(r.availability for r in new)
        lost_cut = 1 - new_t["lost_units"] / base_t["lost_units"] if base_t["lost_units"] else 0.0
        lower_each = sum(n.lost_units < b.lost_units for b, n in zip(fair, new, strict=True))
        stock = new_t["average_stock"] / base_t["average_stock"] - 1 if base_t["average_stock"] else 0.0
        full = int(new_t["full_shelf_requests"])
        runs = len(new)
        return [
            (f"availability >= 99.5% on every run (lowest {worst:.2%})", worst >= 0.995),
            (
                f"lost units at least 50% lower over all runs "
                f"({int(new_t['lost_units']):,} against {int(base_t['lost_units']):,}: {-lost_cut:+.1%})",
                lost_cut >= 0.5,
            ),
            (f"lost units lower on every run ({lower_each} of {runs})", lower_each == runs),
            (
                f"no more truck trips ({int(new_t['trips']):,} against {int(base_t['trips']):,})",
                new_t["trips"] <= base_t["trips"],
            ),
            (f"no more average stock (here {stock:+.1%})", stock <= 0.0),
            (f"no request while the shelf holds its target ({full:,} such requests)", full == 0),
        ]


def compare(sc: Scenario, seeds: list[int], overrides: dict[str, float | int] | None = None) -> Comparison:
    arms = WORLD_ARMS[sc.world]
    runs: dict[str, list[Result]] = {arm: [] for arm in arms}
    with Progress(transient=True) as progress:
        task = progress.add_task(f"restock runs ({sc.world})", total=len(seeds) * len(arms))
        for seed in seeds:
            for arm in arms:
                runs[arm].append(run(sc, arm, seed, overrides))
                progress.advance(task)
    return Comparison(sc, seeds, runs)


def describe(sc: Scenario) -> str:
    fleet = (
        f"{sc.trucks} trucks of {sc.truck_capacity} units, {sc.depot_s / 60:g} min from the depot, "
        f"{sc.neighbour_s / 60:g} min between neighbouring stores, {sc.between_s / 60:g} min between others"
    )
    days = f"{sc.days} days from a Monday, the first {sc.warmup_days} not counted"
    if sc.world == "varied":
        return (
            f"{sc.stores} stores x {sc.products} products, rates lognormal (median 10 units/day, 1% under "
            f"0.4, 1% over 260), each product's own hour and weekday shape, over-dispersed sale lines, "
            f"a lead time per store of 2-12 h (+-20% per request); {days}; {fleet}"
        )
    return (
        f"{sc.stores} stores x {sc.products} products, {sc.baskets_per_hour:g} baskets/h per store "
        f"(x0.6-1.4); {days}; {fleet}"
    )


def _pct(new: float, base: float) -> str:
    return f"{new / base - 1:+.0%}" if base else "n/a"


def table(c: Comparison) -> list[str]:
    sc = c.sc
    arms = WORLD_ARMS[sc.world]
    lines = [
        f"{describe(sc)}. Seeds {', '.join(map(str, c.seeds))} "
        f"(settings tuned on seeds {', '.join(map(str, TUNING_SEEDS))} only).",
        "",
        "| rule | seed | availability | lost units | lost value | stock-outs | trips | units/trip "
        "| avg stock | requests | at target |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for i in range(len(c.seeds)):
        for arm in arms:
            r = c.runs[arm][i]
            lines.append(
                f"| {arm} | {r.seed} | {r.availability:.2%} | {r.lost_units:,} | {r.lost_value:,.2f} | "
                f"{r.stockouts:,} | {r.trips:,} | {r.units_per_trip:.1f} | {r.average_stock:.1f} | "
                f"{r.requests:,} | {r.full_shelf_requests:,} |"
            )
    for arm in arms:
        t = c.total(arm)
        lines.append(
            f"| **{arm}, all runs** | | {t['availability']:.2%} | {t['lost_units']:,} | "
            f"{t['lost_value']:,.2f} | {t['stockouts']:,} | {t['trips']:,} | {t['units_per_trip']:.1f} | "
            f"{t['average_stock']:.1f} | {t['requests']:,} | {t['full_shelf_requests']:,} |"
        )
    lines += ["", "The forecast policy against each baseline (negative: fewer than the baseline):", ""]
    lines += [
        "| seed | against | availability (forecast / baseline) | lost units | trips | avg stock |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    new = c.runs["forecast"]
    for base_arm in (a for a in arms if a != "forecast"):
        base = c.runs[base_arm]
        for b, n in zip(base, new, strict=True):
            lines.append(
                f"| {n.seed} | {base_arm} | {n.availability:.2%} / {b.availability:.2%} | "
                f"{_pct(n.lost_units, b.lost_units)} | {_pct(n.trips, b.trips)} | "
                f"{_pct(n.average_stock, b.average_stock)} |"
            )
        bt, nt = c.total(base_arm), c.total("forecast")
        lines.append(
            f"| **all runs** | {base_arm} | {nt['availability']:.2%} / {bt['availability']:.2%} | "
            f"{_pct(nt['lost_units'], bt['lost_units'])} | {_pct(nt['trips'], bt['trips'])} | "
            f"{_pct(nt['average_stock'], bt['average_stock'])} |"
        )
    if "fair" in arms:
        lines += ["", "Targets, against the fair rule on these seeds:", ""]
        lines += [f"- {text}: {'met' if ok else 'missed'}" for text, ok in c.targets()]
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


WORLD_TITLES: dict[WorldName, str] = {
    "varied": (
        "### Varied demand: against the threshold rule set from the true demand (`fair`: reorder at a day "
        "of demand, fill to three days) and the catalog's thresholds (`catalog`: 5-12, fill to 40-80)"
    ),
    "simulator": (
        "### The store simulator's demand: against its catalog's thresholds (`catalog`: 5-12, fill to "
        "40-80, whatever a product sells; a tighter rule than a careful manager's)"
    ),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=list(EVAL_SEEDS))
    parser.add_argument("--tuning", action="store_true", help="run the tuning seeds instead")
    parser.add_argument("--days", type=int, help="days per run (default: each world's own)")
    parser.add_argument("--world", choices=("varied", "simulator"), action="append", help="only these")
    parser.add_argument("--docs", type=Path, help="write the figures into this Markdown file")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    parser.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE", help="a RestockConfig field (not --docs)"
    )
    args = parser.parse_args(argv)
    overrides = {k: float(v) if "." in v else int(v) for k, v in (item.split("=", 1) for item in args.set)}
    seeds = list(TUNING_SEEDS) if args.tuning else args.seeds
    if not args.tuning and set(seeds) & set(TUNING_SEEDS):
        parser.error(f"seeds {sorted(set(seeds) & set(TUNING_SEEDS))} are tuning seeds: report on others")
    worlds: list[WorldName] = args.world or ["varied", "simulator"]
    started = time.perf_counter()
    lines: list[str] = []
    comparisons: list[Comparison] = []
    for name in worlds:
        sc = VARIED if name == "varied" else SIMULATOR
        if args.days:
            sc = replace(sc, days=args.days)
        comparison = compare(sc, seeds, overrides)
        comparisons.append(comparison)
        lines += [WORLD_TITLES[name], "", *table(comparison), ""]
    seconds = time.perf_counter() - started
    runs = sum(len(c.seeds) * len(c.runs) for c in comparisons)
    machine = (
        f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), Python "
        f"{platform.python_version()}, {platform.system()} {platform.release()}"
    )
    lines.append(
        f"Written by `make bench-restock` (`python -m benchmarks.restock`) on {time.strftime('%Y-%m-%d')}, "
        f"{machine}; {seconds:.0f} s for {runs} runs."
    )
    print("\n".join(lines))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    c.sc.world: {arm: [asdict(r) for r in rows] for arm, rows in c.runs.items()}
                    for c in comparisons
                },
                indent=2,
            )
        )
    if args.docs and not args.tuning and len(worlds) == 2 and not overrides:
        write_docs(args.docs, lines)
    verdicts = [ok for c in comparisons if "fair" in c.runs for _, ok in c.targets()]
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    raise SystemExit(main())
