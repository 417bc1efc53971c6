"""Simulated stores in several time zones, and incidents a detector should catch.

`ZonedSimulator` is the store simulator (producers/simulator.py) with each store in its own IANA time
zone: it announces the zone with a `store` event when it comes online, and trades on the simulator's
daily rhythm in its own local time (opening at 07:00 in Berlin is 06:00 UTC in winter, 05:00 in
summer). `outages` stop a store's tills for a while (no baskets), the incident a demo shows being
caught.

Pure, like the simulator: no clock, no I/O.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Mapping, Sequence
from typing import Any, Final

from foundation.timeunits import DAY_MS, HOUR_MS
from producers.simulator import CLOSE_HOUR, OPEN_HOUR, SimEvent, StoreSimulator, _Store

# Zones where a late-morning UTC start finds most stores open (the demo starts at 10:00 UTC).
DEMO_ZONES: Final = (
    "Europe/London",
    "Europe/Berlin",
    "Europe/Helsinki",
    "Asia/Dubai",
    "Europe/Lisbon",
    "Africa/Johannesburg",
)


# Zones around the world, a few hours apart, for `simulate` run live: whatever the hour, some of them
# are trading (see `zones_trading_at`).
WORLD_ZONES: Final = (
    "Pacific/Auckland",
    "Australia/Sydney",
    "Asia/Tokyo",
    "Asia/Shanghai",
    "Asia/Kolkata",
    "Asia/Dubai",
    "Europe/Helsinki",
    "Europe/Berlin",
    "Europe/London",
    "America/Sao_Paulo",
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Los_Angeles",
    "Pacific/Honolulu",
)
# The middle of a simulated store's trading day (07:00-22:00 local).
_MIDDAY: Final = (OPEN_HOUR + CLOSE_HOUR) / 2


def zones_trading_at(ts_ms: float, count: int, zones: Sequence[str] = WORLD_ZONES) -> tuple[str, ...]:
    """`count` zones for `count` stores, of those whose local time at `ts_ms` is within the simulated
    stores' opening hours with at least two hours of trade left, nearest the middle of the day first;
    dealt out in turn when there are more stores than such zones.

    `simulate` runs in real time by default: a store whose zone is in its night sends its catalog and
    stock take and then nothing, so a short first run would show no sale at all. Only when no zone is
    trading (never with `WORLD_ZONES`, a few hours apart around the world) are all of them used."""
    if count < 1:
        raise ValueError("at least one zone is needed")

    def local_hour(zone: str) -> float:
        return ((ts_ms + zone_offset_ms(zone, ts_ms)) % DAY_MS) / HOUR_MS

    trading = [z for z in zones if OPEN_HOUR + 1 <= local_hour(z) <= CLOSE_HOUR - 2]
    trading.sort(key=lambda z: abs(local_hour(z) - _MIDDAY))
    ordered = trading or list(zones)
    return tuple(ordered[i % len(ordered)] for i in range(count))


# A live simulated store's baskets an hour (`simulate`): a supermarket's tills, so that a short first run
# shows trade (at the catalog's ~90 an hour, 3 stores sell about once in 20 s).
LIVE_BASKETS_PER_HOUR: Final = 600.0


def live_simulator(
    seed: int,
    stores: int,
    products: int,
    start_ms: int,
    *,
    baskets_per_hour: float = LIVE_BASKETS_PER_HOUR,
    zones: Sequence[str] | None = None,
) -> ZonedSimulator:
    """The stores `simulate` runs in real time from `start_ms`: in `zones`, by default in zones where it is
    trading time at the start (`zones_trading_at`), with shelves sized for their rate."""
    return ZonedSimulator(
        seed,
        stores,
        products,
        start_ms,
        zones=zones or zones_trading_at(start_ms, stores),
        baskets_per_hour=baskets_per_hour,
        shelf_scale=max(1.0, baskets_per_hour / 90.0),  # the catalog's shelves suit ~90 baskets an hour
    )


def zone_offset_ms(zone: str, ts_ms: float) -> int:
    """A zone's UTC offset at an instant, in milliseconds."""
    when = dt.datetime.fromtimestamp(ts_ms / 1000, zoneinfo.ZoneInfo(zone))
    delta = when.utcoffset()
    return int(delta.total_seconds() * 1000) if delta is not None else 0


class ZonedSimulator(StoreSimulator):
    """Stores in several time zones (round robin over `zones`), with optional till outages."""

    def __init__(
        self,
        *args: Any,
        zones: Sequence[str] = DEMO_ZONES,
        outages: Mapping[str, tuple[int, int]] | None = None,
        **kwargs: Any,
    ) -> None:
        if not zones:
            raise ValueError("at least one time zone is needed")
        for zone in zones:
            zoneinfo.ZoneInfo(zone)  # an unknown zone fails here, not in the stream
        self.zones = tuple(zones)
        self.outages = dict(outages or {})
        self._offsets: dict[tuple[str, int], int] = {}
        super().__init__(*args, **kwargs)

    def zone_of(self, store_id: str) -> str:
        index = int(store_id.rsplit("-", 1)[-1]) - 1
        return self.zones[index % len(self.zones)]

    def _offset(self, store_id: str, ts_ms: float) -> int:
        zone = self.zone_of(store_id)
        key = (zone, int(ts_ms // HOUR_MS))
        offset = self._offsets.get(key)
        if offset is None:
            offset = self._offsets[key] = zone_offset_ms(zone, ts_ms)
        return offset

    def _opening_events(self, store: _Store, ts_ms: int) -> list[SimEvent]:
        out: list[SimEvent] = []
        zone = self.zone_of(store.store_id)
        self._emit(store, ts_ms, "store", {"timezone": zone, "name": f"Store {store.store_id}"}, out)
        return out + super()._opening_events(store, ts_ms)

    def _next_basket(self, store: _Store, after_ms: float) -> float:
        # The rhythm is defined on a UTC clock: run it on the store's local clock instead.
        offset = self._offset(store.store_id, after_ms)
        return super()._next_basket(store, after_ms + offset) - offset

    def _basket(self, store: _Store, ts_ms: int, out: list[SimEvent]) -> None:
        outage = self.outages.get(store.store_id)
        if outage is not None and outage[0] <= ts_ms < outage[1]:
            return  # the tills are down: nobody can pay
        super()._basket(store, ts_ms, out)


def renamed(events: list[SimEvent], prefix: str) -> list[SimEvent]:
    """The same events with `prefix` before every event id (history and live trade of one store
    must not share ids, or the later would be dropped as redeliveries)."""
    old = b'"event_id":"'
    return [
        SimEvent(e.ts_ms, e.store_id, e.data.replace(old, old + prefix.encode(), 1), e.kind) for e in events
    ]
