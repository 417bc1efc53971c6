"""The coverage-guided fuzz target, run for a few seconds (``make fuzz`` runs it for longer)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import atheris  # noqa: F401  installed by `make test` (dev extra): missing, this fails, not skips
import pytest

FUZZ = Path(__file__).resolve().parents[1] / "fuzz"


@pytest.mark.slow
def test_the_fuzz_target_finds_no_crash_in_a_short_run(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(FUZZ / "corpus", corpus)
    done = subprocess.run(
        [sys.executable, str(FUZZ / "fuzz_records.py"), str(corpus), "-max_total_time=5", "-timeout=20"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Done" in done.stderr
    assert not list(tmp_path.glob("crash-*"))
