"""Labelled retail scenarios: stores with a daily and weekly rhythm, noise, and injected incidents.

Each store gets its own shape from the seed (size, opening hours per weekday, a closed or short Sunday,
morning/lunch/evening peaks, weekday levels, day-to-day and within-day noise, a slow trend), so a
detector cannot be tuned to one curve. Incidents (refund bursts, sales collapses, sales spikes from a
pricing error) are injected at random stores and times after a warm-up, and written as labels.

An incident is only labelled when it matters: its expected impact (sales lost or gained, extra refunds)
must reach a minimum; an "incident" of two lost sales at 7 a.m. in a corner shop is noise, not something
to page a manager about. Events are written in arrival order (small delivery delays, a few redelivered
duplicates and a few events later than the allowed lateness), exactly as a shard would carry them.

    python -m benchmarks.scenario --seed 7 --out /tmp/scn
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import special

from foundation.timeunits import DAY_MS, HOUR_MS, MINUTE_MS

KINDS = ("refund_burst", "sales_collapse", "sales_spike")
# The least impact that makes an incident worth a manager's attention (expected counts over the incident).
MIN_LOST_SALES = 15.0
MIN_EXTRA_SALES = 20.0
MIN_EXTRA_REFUNDS = 6.0
# ... and it must be visible: some 15, 30 or 60-minute window (on the 15-minute grid) over it must be
# at least this unlikely (-log10 p) for a detector that knew the true normal rate of that very day.
MIN_VISIBILITY = 6.0
_REASONS = ("damaged", "changed mind", "wrong size", "faulty", "expired")


@dataclass(frozen=True)
class ScenarioConfig:
    seed: int
    stores: int = 12
    days: int = 35
    start: str = "2026-03-02"  # a Monday
    warmup_days: int = 14
    incidents_per_store_week: float = 1.0
    duplicate_rate: float = 0.001
    late_rate: float = 0.0002
    late_after_ms: int = 7 * MINUTE_MS  # beyond the allowed lateness (2 minutes by default)
    size_scale: float = 1.0  # multiplies every store's traffic (the speed benchmark uses busy stores)


@dataclass(frozen=True)
class Incident:
    store_id: str
    kind: str
    start_ms: int
    end_ms: int
    magnitude: float  # collapse: remaining share of sales; spike: sales multiplier; burst: refunds/hour
    impact: float  # expected sales lost or gained, or extra refunds
    visibility: float = 0.0  # best -log10 p of a window over it, knowing the true normal rate

    def to_json(self) -> dict[str, object]:
        row: dict[str, object] = asdict(self)
        row["start"] = _iso(self.start_ms)
        row["end"] = _iso(self.end_ms)
        return row


@dataclass
class StoreShape:
    store_id: str
    tx_per_day: float
    hours: list[tuple[float, float] | None]  # per weekday (Monday first), None = closed
    day_factor: list[float]
    profiles: list[np.ndarray]  # per weekday: expected share of the day's sales per minute (sums to 1)
    day_sigma: float
    intraday_sigma: float
    weekly_growth: float
    refund_rate: float
    prices: np.ndarray
    popularity: np.ndarray


@dataclass
class Scenario:
    config: ScenarioConfig
    shapes: list[StoreShape]
    incidents: list[Incident] = field(default_factory=list)
    events: int = 0
    eval_store_days: int = 0

    @property
    def start_ms(self) -> int:
        return _day_ms(self.config.start)

    @property
    def eval_start_ms(self) -> int:
        return self.start_ms + self.config.warmup_days * DAY_MS

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.config.days * DAY_MS

    def meta(self) -> dict[str, object]:
        return {
            "config": asdict(self.config),
            "start_ms": self.start_ms,
            "eval_start_ms": self.eval_start_ms,
            "end_ms": self.end_ms,
            "events": self.events,
            "eval_store_days": self.eval_store_days,
            "incidents": len(self.incidents),
            "stores": {
                s.store_id: {
                    "tx_per_day": round(s.tx_per_day, 1),
                    "hours": s.hours,
                    "day_factor": [round(f, 3) for f in s.day_factor],
                    "day_sigma": round(s.day_sigma, 3),
                    "intraday_sigma": round(s.intraday_sigma, 3),
                    "refund_rate": round(s.refund_rate, 4),
                }
                for s in self.shapes
            },
        }


def _day_ms(day: str) -> int:
    return int(dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC).timestamp()) * 1000


def _iso(ts_ms: int) -> str:
    secs, ms = divmod(ts_ms, 1000)
    return dt.datetime.fromtimestamp(secs, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{ms:03d}Z"


def _bump(t: np.ndarray, center: float, width: float) -> np.ndarray:
    return np.exp(-0.5 * ((t - center) / width) ** 2)


def _profile(rng: np.random.Generator, hours: tuple[float, float] | None, kind: str) -> np.ndarray:
    """Share of a day's sales per minute: zero when closed, a ramp after opening, peaks in between."""
    prof = np.zeros(1440)
    if hours is None:
        return prof
    opening, closing = hours
    t = np.arange(1440) / 60.0
    shape = np.full(1440, rng.uniform(0.2, 0.5))
    if kind == "weekday":
        shape += rng.uniform(0.2, 0.7) * _bump(t, opening + rng.uniform(0.7, 2.0), rng.uniform(0.5, 1.0))
        shape += rng.uniform(0.5, 1.6) * _bump(t, rng.uniform(12.0, 13.0), rng.uniform(0.5, 1.0))
        shape += rng.uniform(0.3, 1.3) * _bump(t, rng.uniform(16.5, 18.5), rng.uniform(0.8, 1.5))
    else:
        shape += rng.uniform(0.6, 1.5) * _bump(t, rng.uniform(11.5, 14.5), rng.uniform(1.5, 3.0))
        shape += rng.uniform(0.0, 0.6) * _bump(t, rng.uniform(16.0, 18.0), rng.uniform(0.8, 1.5))
    ramp_up = rng.uniform(0.3, 1.0)
    ramp_down = rng.uniform(0.3, 0.7)
    shape *= np.clip(0.3 + 0.7 * (t - opening) / ramp_up, 0.3, 1.0)
    shape *= np.clip(0.5 + 0.5 * (closing - t) / ramp_down, 0.5, 1.0)
    shape[(t < opening) | (t >= closing)] = 0.0
    normalised: np.ndarray = shape / shape.sum()
    return normalised


def make_shape(rng: np.random.Generator, store_id: str, size_scale: float = 1.0) -> StoreShape:
    opening = float(rng.choice([7.0, 7.5, 8.0, 8.5, 9.0]))
    closing = float(rng.choice([19.0, 20.0, 20.5, 21.0, 22.0]))
    weekday_hours: tuple[float, float] | None = (opening, closing)
    sat_hours: tuple[float, float] | None = (
        opening + float(rng.choice([0.0, 0.5, 1.0])),
        closing - float(rng.choice([0.0, 1.0, 2.0])),
    )
    sun_hours: tuple[float, float] | None = None
    if rng.random() > 0.35:
        sun_hours = (float(rng.choice([9.0, 10.0, 11.0])), float(rng.choice([16.0, 17.0, 18.0, 19.0])))
    hours: list[tuple[float, float] | None] = [weekday_hours] * 5 + [sat_hours, sun_hours]
    factors = [0.9, 0.95, 1.0, 1.05, 1.2]
    day_factor = [f * float(rng.normal(1.0, 0.05)) for f in factors]
    day_factor += [float(rng.uniform(1.0, 1.6)), float(rng.uniform(0.5, 0.9))]
    weekday_profile = _profile(rng, weekday_hours, "weekday")
    friday_profile = 0.5 * weekday_profile + 0.5 * _profile(rng, weekday_hours, "weekday")
    profiles = [weekday_profile] * 4 + [friday_profile]
    profiles += [_profile(rng, sat_hours, "weekend"), _profile(rng, sun_hours, "weekend")]
    n_products = 40
    return StoreShape(
        store_id=store_id,
        tx_per_day=size_scale * float(np.clip(rng.lognormal(math.log(450), 0.55), 120, 2500)),
        hours=hours,
        day_factor=day_factor,
        profiles=profiles,
        day_sigma=float(rng.uniform(0.05, 0.15)),
        intraday_sigma=float(rng.uniform(0.03, 0.10)),
        weekly_growth=float(rng.uniform(-0.02, 0.03)),
        refund_rate=float(rng.uniform(0.008, 0.03)),
        prices=np.round(rng.lognormal(math.log(6.0), 0.8, n_products), 2) + 0.09,
        popularity=(w := 1.0 / np.arange(1, n_products + 1) ** 0.9) / w.sum(),
    )


def _plan_incidents(
    rng: np.random.Generator, scn: Scenario, shape: StoreShape, rates: dict[int, np.ndarray]
) -> list[Incident]:
    """Random incidents for one store after the warm-up, each with at least the minimum impact."""
    cfg = scn.config
    eval_days = [d for d in range(cfg.warmup_days, cfg.days) if shape.hours[d % 7] is not None]
    count = rng.poisson(cfg.incidents_per_store_week * len(eval_days) / 7.0)
    planned: list[Incident] = []
    busy: set[int] = set()
    for _ in range(count):
        for _attempt in range(30):
            day = int(rng.choice(eval_days))
            if day in busy:
                continue
            incident = _try_incident(rng, scn, shape, day, rates[day])
            if incident is not None:
                planned.append(incident)
                busy.add(day)
                break
    return planned


def _try_incident(
    rng: np.random.Generator, scn: Scenario, shape: StoreShape, day: int, rate: np.ndarray
) -> Incident | None:
    hours = shape.hours[day % 7]
    assert hours is not None
    opening, closing = int(hours[0] * 60), int(hours[1] * 60)
    kind = str(rng.choice(KINDS))
    start = int(rng.integers(opening + 15, closing - 30))
    if kind == "sales_collapse":
        magnitude = float(rng.uniform(0.0, 0.35))
        duration = int(rng.integers(30, 151))
        per_minute = rate * (1.0 - magnitude)  # sales lost per minute
        minimum = MIN_LOST_SALES
    elif kind == "sales_spike":
        magnitude = float(rng.uniform(2.0, 4.5))
        duration = int(rng.integers(30, 121))
        per_minute = rate * (magnitude - 1.0)
        minimum = MIN_EXTRA_SALES
    else:
        magnitude = float(rng.uniform(6.0, 20.0))
        duration = int(rng.integers(20, 91))
        per_minute = np.full(1440, magnitude / 60.0)
        minimum = MIN_EXTRA_REFUNDS
    end = min(start + duration, closing)
    impact = float(per_minute[start:end].sum())
    while impact < minimum and end < closing and end - start < 240:
        end += 1
        impact += float(per_minute[end - 1])
    if impact < minimum:
        return None
    visibility = _visibility(kind, rate, shape.refund_rate, per_minute, start, end)
    if visibility < MIN_VISIBILITY:
        return None
    day_start = scn.start_ms + day * DAY_MS
    return Incident(
        store_id=shape.store_id,
        kind=kind,
        start_ms=day_start + start * MINUTE_MS,
        end_ms=day_start + end * MINUTE_MS,
        magnitude=round(magnitude, 3),
        impact=round(impact, 1),
        visibility=round(visibility, 1),
    )


def _visibility(
    kind: str, rate: np.ndarray, refund_rate: float, effect: np.ndarray, start: int, end: int
) -> float:
    """Best -log10 p over 15/30/60-minute windows on the 15-minute grid overlapping the incident,
    for a detector that knew the day's true rate (Poisson; the count at its expected value)."""
    best = 0.0
    first_end = (start // 15 + 1) * 15
    for size in (15, 30, 60):
        for w_end in range(first_end, end + size + 1, 15):
            w_start = max(w_end - size, 0)
            a, b = max(w_start, start), min(w_end, end)
            change = float(effect[a:b].sum()) if b > a else 0.0
            normal = float(rate[w_start:w_end].sum())
            if kind == "refund_burst":
                normal *= refund_rate
                p = float(special.gammainc(round(normal + change), normal)) if normal > 0 else 0.0
            elif kind == "sales_spike":
                p = float(special.gammainc(round(normal + change), normal)) if normal > 0 else 0.0
            else:
                observed = round(normal - change)
                p = float(special.gammaincc(observed + 1, normal)) if normal > 0 else 1.0
            best = max(best, -math.log10(max(p, 1e-300)))
    return best


def _expected_rates(rng: np.random.Generator, scn: Scenario, shape: StoreShape) -> dict[int, np.ndarray]:
    """Expected sales per minute for every day, with day-level and within-day noise already drawn."""
    rates: dict[int, np.ndarray] = {}
    blocks = 48  # within-day noise moves every 30 minutes, AR(1)
    rho = 0.7
    for day in range(scn.config.days):
        dow = day % 7
        level = shape.tx_per_day * shape.day_factor[dow] * (1.0 + shape.weekly_growth) ** (day / 7.0)
        level *= math.exp(rng.normal(0.0, shape.day_sigma) - shape.day_sigma**2 / 2)
        noise = np.empty(blocks)
        acc = 0.0
        for b in range(blocks):
            acc = rho * acc + rng.normal(0.0, shape.intraday_sigma * math.sqrt(1 - rho**2))
            noise[b] = acc
        rates[day] = level * shape.profiles[dow] * np.repeat(np.exp(noise), 30)
    return rates


class _Writer:
    """Builds event lines with arrival times; sorted by arrival at the end (the shard's order)."""

    def __init__(self, rng: np.random.Generator, cfg: ScenarioConfig) -> None:
        self.rng = rng
        self.cfg = cfg
        self.rows: list[tuple[int, int, str]] = []
        self.seq = 0
        self._ts_cache: dict[int, str] = {}

    def ts(self, ts_ms: int) -> str:
        day = ts_ms - ts_ms % DAY_MS
        prefix = self._ts_cache.get(day)
        if prefix is None:
            prefix = self._ts_cache[day] = _iso(day)[:11]
        rest = ts_ms - day
        h, rest = divmod(rest, HOUR_MS)
        m, rest = divmod(rest, MINUTE_MS)
        s, ms = divmod(rest, 1000)
        return f"{prefix}{h:02d}:{m:02d}:{s:02d}.{ms:03d}Z"

    def add(self, ts_ms: int, line: str, delay_ms: int) -> None:
        self.seq += 1
        self.rows.append((ts_ms + delay_ms, self.seq, line))

    def lines(self) -> Iterator[str]:
        self.rows.sort()
        for _, _, line in self.rows:
            yield line


def generate(cfg: ScenarioConfig) -> tuple[Scenario, list[str]]:
    """The scenario (shapes, labels) and its event lines in arrival order."""
    rng = np.random.default_rng(cfg.seed)
    scn = Scenario(cfg, [make_shape(rng, f"store-{i:03d}", cfg.size_scale) for i in range(1, cfg.stores + 1)])
    out = _Writer(rng, cfg)
    for shape in scn.shapes:
        rates = _expected_rates(rng, scn, shape)
        incidents = _plan_incidents(rng, scn, shape, rates)
        scn.incidents.extend(incidents)
        scn.eval_store_days += sum(
            1 for d in range(cfg.warmup_days, cfg.days) if shape.hours[d % 7] is not None
        )
        _store_events(rng, scn, shape, rates, incidents, out)
    scn.incidents.sort(key=lambda i: (i.start_ms, i.store_id))
    lines = list(out.lines())
    scn.events = len(lines)
    return scn, lines


def day_rates(
    rng: np.random.Generator,
    base: np.ndarray,
    incidents: list[Incident],
    day_start: int,
    refund_share: float,
    prices: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, float, int]:
    """A day's per-minute rates (sales, refunds, mispriced extra sales, refund bursts) with its labelled
    incidents applied: the one place both generators change the rates, and the products they pick."""
    n_products = len(prices)
    rate = base.copy()
    refund_rate = rate * refund_share
    spike_rate = np.zeros(1440)
    burst_rate = np.zeros(1440)
    bad_product, bad_price, burst_product = -1, 0.0, -1
    for inc in incidents:
        a = (inc.start_ms - day_start) // MINUTE_MS
        b = (inc.end_ms - day_start) // MINUTE_MS
        if inc.kind == "sales_collapse":
            rate[a:b] *= inc.magnitude
        elif inc.kind == "sales_spike":
            spike_rate[a:b] = base[a:b] * (inc.magnitude - 1.0)
            bad_product = int(rng.integers(0, n_products))
            bad_price = round(float(prices[bad_product]) * float(rng.uniform(0.05, 0.3)), 2)
        else:
            burst_rate[a:b] = inc.magnitude / 60.0
            burst_product = int(rng.integers(0, n_products)) if rng.random() < 0.5 else -1
    return rate, refund_rate, spike_rate, burst_rate, bad_product, bad_price, burst_product


def _store_events(
    rng: np.random.Generator,
    scn: Scenario,
    shape: StoreShape,
    rates: dict[int, np.ndarray],
    incidents: list[Incident],
    out: _Writer,
) -> None:
    sid = shape.store_id
    n_products = len(shape.prices)
    counter = 0
    tx_counter = 0
    cfg = scn.config
    dup_rate, late_rate = cfg.duplicate_rate, cfg.late_rate

    def emit(ts_ms: int, body: str) -> None:
        nonlocal counter
        counter += 1
        eid = f"{sid}-{counter:08d}"
        line = f'{{"event_id":"{eid}","store_id":"{sid}","ts":"{out.ts(ts_ms)}",{body}}}'
        delay = int(rng.exponential(1500.0))
        if rng.random() < late_rate:
            delay += cfg.late_after_ms + int(rng.integers(0, 30 * MINUTE_MS))
        out.add(ts_ms, line, delay)
        if rng.random() < dup_rate:
            out.add(ts_ms, line, delay + int(rng.integers(1000, 120_000)))

    # Catalog and an opening stock take, before the first day opens.
    t0 = scn.start_ms + 5 * HOUR_MS
    for p in range(n_products):
        emit(
            t0,
            f'"type":"product","product_id":"p-{p:03d}","name":"Product {p}","price":{shape.prices[p]:.2f},'
            f'"restock_threshold":3,"target_stock":400',
        )
        emit(t0 + 1000, f'"type":"count","product_id":"p-{p:03d}","count":400')

    by_day: dict[int, list[Incident]] = {}
    for inc in incidents:
        by_day.setdefault((inc.start_ms - scn.start_ms) // DAY_MS, []).append(inc)
    sold: np.ndarray = np.zeros(n_products, dtype=np.int64)
    for day in range(cfg.days):
        day_start = scn.start_ms + day * DAY_MS
        hours = shape.hours[day % 7]
        if hours is None:
            continue
        # Morning delivery: yesterday's sales back on the shelf.
        for restocked in np.nonzero(sold)[0].tolist():
            emit(
                day_start + int((hours[0] - 1.0) * HOUR_MS) + restocked * 1000,
                f'"type":"restock","product_id":"p-{restocked:03d}","quantity":{int(sold[restocked])},'
                f'"delivery_id":"d-{sid}-{day}"',
            )
        sold[:] = 0
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
            sold,
        )


def trade_day(
    rng: np.random.Generator,
    emit: Callable[[int, str], None],
    sid: str,
    shape: StoreShape,
    day_start: int,
    rates: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    incident: tuple[int, float, int],
    tx_counter: int,
    sold: np.ndarray | None = None,
) -> int:
    """One store-day of transactions from its per-minute rates (ordinary sales, spike sales, ordinary
    refunds, burst refunds), one event per line through `emit`; counts units sold per product into
    `sold` when given. Returns the transaction counter after the day."""
    bad_product, bad_price, burst_product = incident
    n_products = len(shape.prices)
    minutes = np.arange(1440, dtype=np.int64)
    for kind, lam in zip(("sale", "spike", "refund", "burst"), rates, strict=True):
        per_minute = rng.poisson(lam)
        n_tx = int(per_minute.sum())
        if n_tx == 0:
            continue
        tx_ts = day_start + np.repeat(minutes, per_minute) * MINUTE_MS + rng.integers(0, MINUTE_MS, n_tx)
        sale = kind in ("sale", "spike")
        n_lines = rng.geometric(0.45, n_tx) if sale else np.where(rng.random(n_tx) < 0.8, 1, 2)
        total = int(n_lines.sum())
        products = rng.choice(n_products, size=total, p=shape.popularity)
        qtys = np.where(rng.random(total) < 0.85, 1, rng.integers(2, 5, total))
        reasons = rng.integers(0, len(_REASONS), total)
        k = 0
        for ts_ms, lines in zip(tx_ts.tolist(), n_lines.tolist(), strict=True):
            tx_counter += 1
            tid = f"{'t' if sale else 'r'}-{sid}-{tx_counter}"
            for line_no in range(lines):
                p, qty = int(products[k]), int(qtys[k])
                price = float(shape.prices[p])
                if kind == "spike" and line_no == 0:
                    p, qty, price = bad_product, qty + 2, bad_price
                elif kind == "burst" and burst_product >= 0:
                    p = burst_product
                    price = float(shape.prices[p])
                if sale:
                    if sold is not None:
                        sold[p] += qty
                    body = (
                        f'"type":"sale","product_id":"p-{p:03d}","quantity":{qty},'
                        f'"unit_price":{price:.2f},"transaction_id":"{tid}"'
                    )
                else:
                    body = (
                        f'"type":"refund","product_id":"p-{p:03d}","quantity":1,'
                        f'"unit_price":{price:.2f},"transaction_id":"{tid}",'
                        f'"reason":"{_REASONS[int(reasons[k])]}"'
                    )
                emit(ts_ms + line_no * 400, body)
                k += 1
    return tx_counter


def write(cfg: ScenarioConfig, out_dir: Path) -> Scenario:
    """Write events.jsonl (arrival order), labels.jsonl and meta.json into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    scn, lines = generate(cfg)
    with (out_dir / "events.jsonl").open("w", encoding="utf-8") as fh:
        fh.write("\n".join(lines))
        fh.write("\n")
    with (out_dir / "labels.jsonl").open("w", encoding="utf-8") as fh:
        for inc in scn.incidents:
            fh.write(json.dumps(inc.to_json()) + "\n")
    (out_dir / "meta.json").write_text(json.dumps(scn.meta(), indent=1), encoding="utf-8")
    return scn


def read_labels(path: Path) -> list[Incident]:
    incidents = []
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        incidents.append(
            Incident(
                row["store_id"],
                row["kind"],
                row["start_ms"],
                row["end_ms"],
                row["magnitude"],
                row["impact"],
                row.get("visibility", 0.0),
            )
        )
    return incidents


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--stores", type=int, default=ScenarioConfig.stores)
    parser.add_argument("--days", type=int, default=ScenarioConfig.days)
    args = parser.parse_args(argv)
    scn = write(ScenarioConfig(seed=args.seed, stores=args.stores, days=args.days), args.out)
    print(f"{scn.events} events, {len(scn.incidents)} incidents, {scn.eval_store_days} store-days evaluated")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
