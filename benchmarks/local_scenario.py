"""Labelled fleets in local time: stores across time zones, new stores, incidents from the second day.

What a retailer's fleet looks like to a detector that has just been connected (docs/detection.md):

* every store trades in its own time zone (Europe, the Americas, Asia, Australia, UTC); the history
  crosses a daylight saving change (spring forward on even seeds, autumn back on odd seeds, at each
  zone's own date), and opening hours stay the same in local time, so they move in UTC;
* each store's own shape (busy and quiet stores, opening hours, a later Saturday, a Sunday closed or
  short, its own peaks) from benchmarks/scenario.py's `make_shape`, drawn in local time;
* one store opens for business in the middle of the history (`late_store_day`);
* every store sends a `store` event with its zone before its first sale;
* incidents from a store's second day on, about one per store-week and one in the first week of
  half the stores. An incident is a labelled change of the generator's own rates: a kind, a size
  and a duration drawn from fixed ranges, at a random time within opening hours. Nothing is kept or
  dropped by how visible it is: a small change in a quiet store is labelled like any other, and a
  detector that misses it shows it in its figures.

    python -m benchmarks.local_scenario --seed 1001 --out /tmp/fleet
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import zoneinfo
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from benchmarks.scenario import (
    KINDS,
    Incident,
    StoreShape,
    _visibility,
    _Writer,
    day_rates,
    make_shape,
    trade_day,
)
from foundation.timeunits import DAY_MS, HOUR_MS, MINUTE_MS

ZONES = (
    "Europe/Berlin",
    "Europe/London",
    "America/New_York",
    "America/Los_Angeles",
    "Asia/Tokyo",
    "Australia/Sydney",
    "UTC",
)
# (first local day, days): spring forward in Europe (29 March) and the US (8 March), autumn back in
# Sydney (5 April); autumn back in Europe (25 October) and the US (1 November), forward in Sydney (4 Oct).
SPRING = "2026-02-23"
AUTUMN = "2026-10-05"
# Incident sizes and durations (minutes): fixed ranges, nothing filtered afterwards.
SIZES = {
    "sales_collapse": ((0.0, 0.3), (45, 150)),  # share of sales left
    "sales_spike": ((2.5, 4.5), (45, 120)),  # sales multiplier
    "refund_burst": ((10.0, 24.0), (30, 90)),  # extra refunds an hour
}


@dataclass(frozen=True)
class FleetConfig:
    seed: int
    stores: int = 12
    days: int = 35
    late_store_day: int = 14  # the last store's first day of trading
    incidents_per_store_week: float = 1.0
    first_week_share: float = 0.5  # stores that get an extra incident in their first week (days 2-7)
    duplicate_rate: float = 0.001
    late_rate: float = 0.0002
    late_after_ms: int = 7 * MINUTE_MS
    # Share of the stores that run a weekly promotion from their second week (one local hour of one
    # weekday at 2-3 times the sales, unlabelled: the store's own rhythm, which a detector first takes
    # for a spike). 0 keeps the fleet exactly as before (its numbers come from a generator of their own).
    promotions: float = 0.0
    # Offline tills: this many stores (the first ones) each get `offline_spells` spells of `offline_ms`
    # in opening hours, on days without an incident; the events of a spell arrive together, a delay
    # drawn from `offline_upload_ms` after it ends (event times kept). 0: none. Drawn from a random
    # stream of their own, so the fleet's events and incidents are the same with and without them.
    offline_stores: int = 0
    offline_spells: int = 3
    offline_ms: int = 90 * MINUTE_MS
    offline_upload_ms: tuple[int, int] = (45 * MINUTE_MS, 120 * MINUTE_MS)

    @property
    def start(self) -> str:
        return SPRING if self.seed % 2 == 0 else AUTUMN


@dataclass
class FleetStore:
    shape: StoreShape
    zone: str
    first_day: int  # the store's first local day of trading (0 = the fleet's first)

    def midnight_ms(self, start: str, day: int) -> int:
        """UTC epoch ms of the store's local midnight of a day of the history."""
        first = dt.date.fromisoformat(start) + dt.timedelta(days=day)
        local = dt.datetime(first.year, first.month, first.day, tzinfo=zoneinfo.ZoneInfo(self.zone))
        return int(local.timestamp() * 1000)

    def noon_offset_ms(self, start: str, day: int) -> int:
        """The store's UTC offset at local noon of a day: opening hours keep to it."""
        first = dt.date.fromisoformat(start) + dt.timedelta(days=day)
        noon = dt.datetime(first.year, first.month, first.day, 12, tzinfo=zoneinfo.ZoneInfo(self.zone))
        delta = noon.utcoffset()
        return int(delta.total_seconds() * 1000) if delta is not None else 0


@dataclass
class SimulatedFleet:
    config: FleetConfig
    stores: list[FleetStore]
    incidents: list[Incident] = field(default_factory=list)
    # (store, start, end, upload): an offline spell and when its events arrive
    spells: list[tuple[str, int, int, int]] = field(default_factory=list)
    events: int = 0

    def day_start_ms(self, store: FleetStore, day: int) -> int:
        """UTC epoch ms of local 00:00 of a day, on the clock of local noon (DST moves at night)."""
        d = dt.date.fromisoformat(self.config.start) + dt.timedelta(days=day)
        utc_midnight = int(dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC).timestamp() * 1000)
        return utc_midnight - store.noon_offset_ms(self.config.start, day)

    def weekday(self, day: int) -> int:
        return (dt.date.fromisoformat(self.config.start) + dt.timedelta(days=day)).weekday()

    def meta(self) -> dict[str, object]:
        cfg = self.config
        return {
            "config": asdict(cfg),
            "start": cfg.start,
            "events": self.events,
            "incidents": len(self.incidents),
            "spells": [list(spell) for spell in self.spells],
            "stores": {
                s.shape.store_id: {
                    "zone": s.zone,
                    "first_day": s.first_day,
                    "tx_per_day": round(s.shape.tx_per_day, 1),
                    "hours": s.shape.hours,
                    # UTC start of each local day of the history, for scoring by store-day
                    "day_starts": [self.day_start_ms(s, d) for d in range(cfg.days + 1)],
                    "open": [
                        d >= s.first_day and s.shape.hours[self.weekday(d)] is not None
                        for d in range(cfg.days)
                    ],
                }
                for s in self.stores
            },
        }


def _rates(rng: np.random.Generator, fleet: SimulatedFleet, store: FleetStore) -> dict[int, np.ndarray]:
    """Expected sales per local minute of each trading day, with day and within-day noise drawn."""
    shape = store.shape
    rates: dict[int, np.ndarray] = {}
    for day in range(store.first_day, fleet.config.days):
        dow = fleet.weekday(day)
        age = (day - store.first_day) / 7.0
        level = shape.tx_per_day * shape.day_factor[dow] * (1.0 + shape.weekly_growth) ** age
        level *= math.exp(rng.normal(0.0, shape.day_sigma) - shape.day_sigma**2 / 2)
        noise = np.empty(48)
        acc = 0.0
        for b in range(48):
            acc = 0.7 * acc + rng.normal(0.0, shape.intraday_sigma * math.sqrt(1 - 0.49))
            noise[b] = acc
        rates[day] = level * shape.profiles[dow] * np.repeat(np.exp(noise), 30)
    return rates


def _incident(
    rng: np.random.Generator, fleet: SimulatedFleet, store: FleetStore, day: int
) -> Incident | None:
    hours = store.shape.hours[fleet.weekday(day)]
    if hours is None:
        return None
    opening, closing = int(hours[0] * 60), int(hours[1] * 60)
    kind = str(rng.choice(KINDS))
    (lo, hi), (dmin, dmax) = SIZES[kind]
    magnitude = float(rng.uniform(lo, hi))
    duration = int(rng.integers(dmin, dmax + 1))
    if closing - opening < duration + 30:
        return None
    start = int(rng.integers(opening + 15, closing - duration + 1))
    base = fleet.day_start_ms(store, day)
    return Incident(
        store_id=store.shape.store_id,
        kind=kind,
        start_ms=base + start * MINUTE_MS,
        end_ms=base + (start + duration) * MINUTE_MS,
        magnitude=round(magnitude, 3),
        impact=0.0,
    )


def _promote(
    cfg: FleetConfig, fleet: SimulatedFleet, store: FleetStore, rates: dict[int, np.ndarray], index: int
) -> None:
    """A weekly promotion of some stores (FleetConfig.promotions), from a generator of its own."""
    rng = np.random.default_rng((cfg.seed, 7919, index))
    if rng.random() >= cfg.promotions:
        return
    open_days = [d for d in range(7) if store.shape.hours[d] is not None and d < 5]
    if not open_days:
        return
    dow = int(rng.choice(open_days))
    hours = store.shape.hours[dow]
    assert hours is not None
    opening, closing = int(hours[0] * 60), int(hours[1] * 60)
    if closing - opening < 180:
        return
    start = int(rng.integers(opening + 60, closing - 90)) // 15 * 15
    factor = float(rng.uniform(2.0, 3.0))
    for day, rate in rates.items():
        if fleet.weekday(day) == dow and day >= store.first_day + 7:
            rate[start : start + 60] *= factor


def _plan(rng: np.random.Generator, fleet: SimulatedFleet, store: FleetStore) -> list[Incident]:
    cfg = fleet.config
    days = [d for d in range(store.first_day + 1, cfg.days) if store.shape.hours[fleet.weekday(d)]]
    count = int(rng.poisson(cfg.incidents_per_store_week * len(days) / 7.0))
    chosen: set[int] = set()
    first_week = [d for d in days if d < store.first_day + 7]
    if first_week and rng.random() < cfg.first_week_share:
        chosen.add(int(rng.choice(first_week)))
    for _ in range(count):
        chosen.add(int(rng.choice(days)))
    planned = []
    for day in sorted(chosen):
        for _attempt in range(10):
            inc = _incident(rng, fleet, store, day)
            if inc is not None:
                planned.append(inc)
                break
    return planned


def generate(cfg: FleetConfig) -> tuple[SimulatedFleet, list[str]]:
    rng = np.random.default_rng(cfg.seed)
    stores = []
    for i in range(cfg.stores):
        shape = make_shape(rng, f"store-{i + 1:03d}")
        zone = ZONES[i % len(ZONES)] if i < len(ZONES) else str(rng.choice(ZONES))
        first = cfg.late_store_day if i == cfg.stores - 1 else 0
        stores.append(FleetStore(shape, zone, first))
    fleet = SimulatedFleet(cfg, stores)
    from benchmarks.scenario import ScenarioConfig  # the writer's settings (delays, duplicates)

    out = _Writer(
        rng, ScenarioConfig(seed=cfg.seed, duplicate_rate=cfg.duplicate_rate, late_rate=cfg.late_rate)
    )
    spell_rng = np.random.default_rng([cfg.seed, 7919])
    for index, store in enumerate(stores):
        rates = _rates(rng, fleet, store)
        if cfg.promotions > 0:
            _promote(cfg, fleet, store, rates, index)
        incidents = _plan(rng, fleet, store)
        spells = _spells(spell_rng, fleet, store, incidents) if index < cfg.offline_stores else []
        fleet.spells.extend(spells)
        _events(rng, fleet, store, rates, incidents, out, spells)
        fleet.incidents.extend(_measured(fleet, store, rates, incidents))
    fleet.incidents.sort(key=lambda i: (i.start_ms, i.store_id))
    lines = list(out.lines())
    fleet.events = len(lines)
    return fleet, lines


def _spells(
    rng: np.random.Generator, fleet: SimulatedFleet, store: FleetStore, incidents: list[Incident]
) -> list[tuple[str, int, int, int]]:
    """Offline spells of a store's tills: in opening hours, from its second day, on days without an
    incident (so a spell never hides or fakes one), one a day at most."""
    cfg = fleet.config
    busy = {_day_of(fleet, store, inc.start_ms) for inc in incidents}
    days = []
    for day in range(store.first_day + 1, cfg.days):
        hours = store.shape.hours[fleet.weekday(day)]
        if (
            hours is not None
            and day not in busy
            and (hours[1] - hours[0]) * HOUR_MS >= cfg.offline_ms + HOUR_MS
        ):
            days.append(day)
    chosen = sorted(rng.choice(len(days), size=min(cfg.offline_spells, len(days)), replace=False))
    spells = []
    for i in chosen:
        day = days[int(i)]
        opening, closing = store.shape.hours[fleet.weekday(day)]  # type: ignore[misc]
        room = (closing - opening) * HOUR_MS - cfg.offline_ms - 30 * MINUTE_MS
        start = fleet.day_start_ms(store, day) + int(opening * HOUR_MS) + int(rng.integers(0, max(room, 1)))
        start -= start % MINUTE_MS
        low, high = cfg.offline_upload_ms
        upload = start + cfg.offline_ms + int(rng.integers(low, high + 1))
        spells.append((store.shape.store_id, start, start + cfg.offline_ms, upload))
    return spells


def _day_of(fleet: SimulatedFleet, store: FleetStore, ts_ms: int) -> int:
    """The store's local day (number) an instant falls in; incidents lie within the generated days."""
    for day in range(store.first_day, fleet.config.days):
        start = fleet.day_start_ms(store, day)
        if start <= ts_ms < start + DAY_MS:
            return day
    raise ValueError(f"{ts_ms} is outside {store.shape.store_id}'s days")


def _measured(
    fleet: SimulatedFleet, store: FleetStore, rates: dict[int, np.ndarray], incidents: list[Incident]
) -> list[Incident]:
    """Each incident with its impact (sales lost or gained, extra refunds) and its visibility: the best
    -log10 p of a 15, 30 or 60-minute window over it for a detector that knew the day's true rate
    (benchmarks/scenario.py's `_visibility`). Reported beside the figures, never used to keep or drop
    an incident (and no random number is drawn here, so the events are the same)."""
    measured = []
    for inc in incidents:
        day = _day_of(fleet, store, inc.start_ms)
        start = fleet.day_start_ms(store, day)
        base = rates[day]
        a, b = (inc.start_ms - start) // MINUTE_MS, (inc.end_ms - start) // MINUTE_MS
        effect = np.zeros_like(base)
        if inc.kind == "sales_collapse":
            effect[a:b] = base[a:b] * (1.0 - inc.magnitude)
        elif inc.kind == "sales_spike":
            effect[a:b] = base[a:b] * (inc.magnitude - 1.0)
        else:
            effect[a:b] = inc.magnitude / 60.0
        visibility = _visibility(inc.kind, base, store.shape.refund_rate, effect, int(a), int(b))
        measured.append(replace(inc, impact=round(float(effect.sum()), 1), visibility=round(visibility, 1)))
    return measured


def _events(
    rng: np.random.Generator,
    fleet: SimulatedFleet,
    store: FleetStore,
    rates: dict[int, np.ndarray],
    incidents: list[Incident],
    out: _Writer,
    spells: list[tuple[str, int, int, int]] = (),  # type: ignore[assignment]
) -> None:
    shape = store.shape
    sid = shape.store_id
    counter = 0
    tx_counter = 0
    cfg = fleet.config

    def emit(ts_ms: int, body: str) -> None:
        nonlocal counter
        counter += 1
        line = f'{{"event_id":"{sid}-{counter:08d}","store_id":"{sid}","ts":"{out.ts(ts_ms)}",{body}}}'
        delay = int(rng.exponential(1500.0))
        if rng.random() < cfg.late_rate:
            delay += cfg.late_after_ms + int(rng.integers(0, 30 * MINUTE_MS))
        for _, start, end, upload in spells:
            if start <= ts_ms < end:
                delay = upload - ts_ms  # held by the till, uploaded with the spell's other events
        out.add(ts_ms, line, delay)
        if rng.random() < cfg.duplicate_rate:
            out.add(ts_ms, line, delay + int(rng.integers(1000, 120_000)))

    t0 = fleet.day_start_ms(store, store.first_day) + 5 * HOUR_MS
    emit(t0 - 1000, f'"type":"store","timezone":"{store.zone}","name":"Store {sid}"')
    categories = ("grocery", "household", "tech", "clothing", "toys")
    for p in range(len(shape.prices)):
        emit(
            t0,
            f'"type":"product","product_id":"p-{p:03d}","name":"Product {p}","price":{shape.prices[p]:.2f},'
            f'"category":"{categories[p % len(categories)]}","restock_threshold":3,"target_stock":400',
        )
        emit(t0 + 1000, f'"type":"count","product_id":"p-{p:03d}","count":400')
    by_day: dict[int, list[Incident]] = {}
    for inc in incidents:
        by_day.setdefault(_day_of(fleet, store, inc.start_ms), []).append(inc)
    for day in range(store.first_day, cfg.days):
        hours = shape.hours[fleet.weekday(day)]
        if hours is None:
            continue
        day_start = fleet.day_start_ms(store, day)
        rate, refund_rate, spike_rate, burst_rate, bad_product, bad_price, burst_product = day_rates(
            rng, rates[day], by_day.get(day, []), day_start, shape.refund_rate, shape.prices
        )
        tx_counter = trade_day(
            rng,
            emit,
            sid,
            shape,
            day_start,
            (rate, spike_rate, refund_rate, burst_rate),
            (bad_product, bad_price, burst_product),
            tx_counter,
        )


def write(cfg: FleetConfig, out_dir: Path) -> SimulatedFleet:
    """events.jsonl (arrival order), labels.jsonl and meta.json into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fleet, lines = generate(cfg)
    with (out_dir / "events.jsonl").open("w", encoding="utf-8") as fh:
        fh.write("\n".join(lines))
        fh.write("\n")
    with (out_dir / "labels.jsonl").open("w", encoding="utf-8") as fh:
        for inc in fleet.incidents:
            fh.write(json.dumps(inc.to_json()) + "\n")
    (out_dir / "meta.json").write_text(json.dumps(fleet.meta()), encoding="utf-8")
    return fleet


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    fleet = write(FleetConfig(seed=args.seed), args.out)
    print(f"{fleet.events} events, {len(fleet.incidents)} incidents, starting {fleet.config.start}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
