"""The detector a setting names: one class per kind, each in its own module."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from processors.core.detectors.base import Detector, DetectorConfig
from processors.core.detectors.hst import HSTDetector
from processors.core.detectors.naive import NaiveDetector
from processors.core.detectors.seasonal import SeasonalDetector
from processors.core.detectors.threshold import ThresholdDetector

# kind -> a factory taking (config, slot length in ms, slots per long window)
Factory = Callable[[DetectorConfig, int, int], Detector]

DETECTORS: Final[dict[str, Factory]] = {
    "seasonal": SeasonalDetector,
    "naive": lambda config, slot_ms, _long: NaiveDetector(config, slot_ms),
    "threshold": lambda config, slot_ms, _long: ThresholdDetector(config, slot_ms),
    "hst": lambda config, slot_ms, _long: HSTDetector(config, slot_ms),
}
DETECTOR_KINDS: Final = (*DETECTORS, "off")  # "off": windows only, nothing judged


def make_detector(config: DetectorConfig, slot_ms: int, long_slots: int) -> Detector:
    """A new store's detector of the configured kind."""
    factory = DETECTORS.get(config.kind)
    if factory is None:
        raise ValueError(f"detector kind {config.kind!r} has no detector (one of {', '.join(DETECTORS)})")
    return factory(config, slot_ms, long_slots)
