"""The truck fleet: which truck takes which restock request. Pure bookkeeping, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Truck:
    truck_id: str
    capacity: int
    busy_with: str | None = None
    deliveries: int = 0


@dataclass
class Fleet:
    trucks: list[Truck] = field(default_factory=list)

    @classmethod
    def of(cls, count: int, capacity: int) -> Fleet:
        return cls([Truck(f"truck-{i + 1:02d}", capacity) for i in range(count)])

    def free(self) -> int:
        return sum(1 for t in self.trucks if t.busy_with is None)

    def on_road(self) -> int:
        return len(self.trucks) - self.free()

    def assign(self, alert_id: str) -> Truck | None:
        for truck in self.trucks:
            if truck.busy_with is None:
                truck.busy_with = alert_id
                return truck
        return None

    def release(self, truck: Truck, delivered: bool) -> None:
        truck.busy_with = None
        truck.deliveries += delivered
