"""Anomaly detectors, one per module, chosen by the `kind` setting (registry.py)."""

from processors.core.detectors.base import (
    Detector,
    DetectorConfig,
    Finding,
    PeerDayShape,
    Verdict,
)
from processors.core.detectors.hst import HSTDetector
from processors.core.detectors.naive import NaiveDetector
from processors.core.detectors.registry import DETECTOR_KINDS, DETECTORS, make_detector
from processors.core.detectors.seasonal import SeasonalDetector
from processors.core.detectors.threshold import ThresholdDetector

__all__ = [
    "DETECTORS",
    "DETECTOR_KINDS",
    "Detector",
    "DetectorConfig",
    "Finding",
    "HSTDetector",
    "NaiveDetector",
    "PeerDayShape",
    "SeasonalDetector",
    "ThresholdDetector",
    "Verdict",
    "make_detector",
]
