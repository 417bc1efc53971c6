"""The detectors' names where they were first imported from; they live in processors/core/detectors/."""

from processors.core.detectors import (
    DAY_MS,
    DETECTOR_KINDS,
    HOUR_MS,
    MINUTE_MS,
    WEEK_MS,
    Detector,
    DetectorConfig,
    Finding,
    Fleet,
    HSTDetector,
    NaiveDetector,
    SeasonalDetector,
    ThresholdDetector,
    Verdict,
    make_detector,
)

__all__ = [
    "DAY_MS",
    "DETECTOR_KINDS",
    "HOUR_MS",
    "MINUTE_MS",
    "WEEK_MS",
    "Detector",
    "DetectorConfig",
    "Finding",
    "Fleet",
    "HSTDetector",
    "NaiveDetector",
    "SeasonalDetector",
    "ThresholdDetector",
    "Verdict",
    "make_detector",
]
