"""Pure processing core: events in, effects out. No boto, no asyncio, no clock."""

from processors.core.effects import Effects, RejectedRecord
from processors.core.processor import CoreConfig, CoreStats, ShardCore

__all__ = ["CoreConfig", "CoreStats", "Effects", "RejectedRecord", "ShardCore"]
