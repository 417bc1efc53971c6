"""The truck fleet: which truck is on which trip, and when each is back. Pure bookkeeping, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field

from consumers.trips import Trip


@dataclass
class Truck:
    truck_id: str
    capacity: int
    busy_with: str | None = None  # the trip id while on the road
    deliveries: int = 0  # products delivered
    trips: int = 0
    trip: Trip | None = None
    left_ms: float = 0.0  # when it left on its trip (the dispatcher's clock)
    back_ms: float = 0.0  # when it is expected back at the depot


@dataclass
class TruckFleet:
    """The dispatcher's trucks (not the fleet of stores whose shape of a day the detectors share)."""

    trucks: list[Truck] = field(default_factory=list)

    @classmethod
    def of(cls, count: int, capacity: int) -> TruckFleet:
        return cls([Truck(f"truck-{i + 1:02d}", capacity) for i in range(count)])

    def free(self) -> int:
        return sum(1 for t in self.trucks if t.busy_with is None)

    def on_road(self) -> int:
        return len(self.trucks) - self.free()

    def next_truck_in_s(self, now_ms: float) -> float:
        """When a truck other than the one about to leave could leave: 0 if two are free, else the
        soonest return among those on the road (counting the one about to leave as gone)."""
        if self.free() > 1:
            return 0.0
        backs = [t.back_ms for t in self.trucks if t.busy_with is not None]
        return max(0.0, (min(backs) - now_ms) / 1000) if backs else float("inf")

    def assign(self, trip: Trip | str, now_ms: float = 0.0) -> Truck | None:
        for truck in self.trucks:
            if truck.busy_with is None:
                if isinstance(trip, Trip):
                    truck.busy_with, truck.trip = trip.trip_id, trip
                    truck.left_ms, truck.back_ms = now_ms, now_ms + trip.back_s * 1000
                else:
                    truck.busy_with = trip
                return truck
        return None

    def release(self, truck: Truck, delivered: int | bool) -> None:
        truck.busy_with = None
        truck.trip = None
        truck.deliveries += int(delivered)
        truck.trips += 1 if delivered else 0
