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

from producers.simulator import HOUR_MS, SimEvent, StoreSimulator, _Store

# Zones where a late-morning UTC start finds most stores open (the demo starts at 10:00 UTC).
DEMO_ZONES: Final = (
    "Europe/London",
    "Europe/Berlin",
    "Europe/Helsinki",
    "Asia/Dubai",
    "Europe/Lisbon",
    "Africa/Johannesburg",
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
