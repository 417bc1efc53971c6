"""A `backtest` process starts without the heavy libraries it does not use.

river's anomaly models, scipy's statistics and the AWS SDKs cost seconds of start-up; a whole-process
speed figure (and every CLI call) pays for them if any module imports them eagerly again."""

from __future__ import annotations

import subprocess
import sys


def _loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(sorted(m for m in sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(done.stdout.split())


def test_backtest_with_detection_off_loads_no_heavy_library(tmp_path) -> None:  # type: ignore[no-untyped-def]
    events = tmp_path / "events.jsonl"
    events.write_text(
        '{"event_id":"e1","type":"sale","store_id":"s1","ts":"2026-03-02T10:00:00.000Z",'
        '"product_id":"p1","quantity":1,"unit_price":2.0}\n'
    )
    loaded = _loaded_after(
        "from processors.backtest import run_backtest\n"
        "from processors.core import CoreConfig\n"
        "from processors.core.detectors import DetectorConfig\n"
        f"run_backtest({str(events)!r}, {str(tmp_path / 'out')!r}, "
        "CoreConfig(archive=False, detection=DetectorConfig(kind='off')))"
    )
    assert "processors.core.processor" in loaded  # the probe did run the core
    heavy = ("river.anomaly", "river.compose", "scipy.stats", "scipy.special", "boto3", "aiobotocore")
    assert not {m for m in loaded if m.startswith(heavy)}


def test_the_hst_baseline_still_loads_its_models_when_used() -> None:
    loaded = _loaded_after(
        "from processors.core.detectors import DetectorConfig, make_detector\n"
        "make_detector(DetectorConfig(kind='hst'), 900_000, 4)"
    )
    assert "river.anomaly" in loaded
