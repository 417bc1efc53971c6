"""Clocks for the shell (the core never reads one). The demo runs store time faster than wall time,
so a minute of demo shows an hour of trading; the simulator and the trucks share one clock."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class ScaledClock:
    """Event time that starts at `start_ms` and runs `speed` times faster than the wall clock."""

    start_ms: int
    speed: float = 1.0
    _t0: float = field(default_factory=time.monotonic)

    def now_ms(self) -> int:
        return self.start_ms + int((time.monotonic() - self._t0) * self.speed * 1000)

    @classmethod
    def wall(cls) -> ScaledClock:
        return cls(start_ms=int(time.time() * 1000), speed=1.0)
