"""The dashboard's vendored chart library (uPlot): the files are the recorded ones, they ship in the
package (a non-editable install has them), the app serves them from its own origin, and the page loads
them from there and nothing from anywhere else."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from tests.unit.api_helpers import make_api

ROOT = Path(__file__).resolve().parents[2]
VENDORED = ROOT / "shelfstream" / "api" / "static" / "vendor" / "uplot"
SUMS = ROOT / "deploy" / "vendor" / "uplot.sha256"
SCRIPT = ROOT / "deploy" / "vendor" / "uplot.sh"
PACKAGES = ["config", "foundation", "producers", "processors", "consumers", "history", "shelfstream"]


def _recorded() -> dict[str, str]:
    sums: dict[str, str] = {}
    for line in SUMS.read_text().splitlines():
        digest, name = line.split("  ", 1)
        assert re.fullmatch(r"[0-9a-f]{64}", digest), line
        sums[name] = digest
    return sums


def _version() -> str:
    found = re.search(r"^VERSION=(\S+)$", SCRIPT.read_text(), re.MULTILINE)
    assert found, "deploy/vendor/uplot.sh names no VERSION"
    return found.group(1)


def test_the_vendored_files_are_exactly_the_recorded_ones() -> None:
    sums = _recorded()
    assert set(sums) == {"uPlot.iife.min.js", "uPlot.min.css", "LICENSE"}
    assert {p.name for p in VENDORED.iterdir()} == set(sums), "a file in vendor/uplot is not recorded"
    for name, digest in sums.items():
        assert hashlib.sha256((VENDORED / name).read_bytes()).hexdigest() == digest, f"{name} was changed"


def test_the_vendored_release_is_the_pinned_one_and_mit() -> None:
    version = _version()
    assert version == "1.6.32"
    head = (VENDORED / "uPlot.iife.min.js").read_text()[:200]
    assert f"uPlot (v{version})" in head
    assert (VENDORED / "LICENSE").read_text().startswith("The MIT License (MIT)")


def test_the_recorded_sums_catch_a_changed_file(tmp_path: Path) -> None:
    # The check the fetch script runs (sha256sum --check) against a copy with one byte changed.
    if shutil.which("sha256sum") is None:
        pytest.fail("sha256sum (coreutils) is needed by deploy/vendor/uplot.sh")
    copy = tmp_path / "uplot"
    shutil.copytree(VENDORED, copy)
    check = ["sha256sum", "--check", "--strict", "--quiet", str(SUMS)]
    assert subprocess.run(check, cwd=copy, capture_output=True).returncode == 0
    css = copy / "uPlot.min.css"
    css.write_bytes(css.read_bytes() + b" ")
    assert subprocess.run(check, cwd=copy, capture_output=True).returncode != 0


def test_a_built_package_ships_the_dashboard_and_its_chart_library(tmp_path: Path) -> None:
    """setuptools' own build of the package (what a wheel holds): the page, our files, uPlot's."""
    source = tmp_path / "source"
    source.mkdir()
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copy(ROOT / "README.md", source)
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    built = tmp_path / "built"
    run = subprocess.run(
        [sys.executable, "-c", "from setuptools import setup; setup()", "-q", "build_py", "-d", built],
        cwd=source,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    static = built / "shelfstream" / "api" / "static"
    for name in ["index.html", "app.js", "app.css"]:
        assert (static / name).is_file(), f"{name} is not in the package"
    for name, digest in _recorded().items():
        shipped = static / "vendor" / "uplot" / name
        assert shipped.is_file(), f"vendor/uplot/{name} is not in the package"
        assert hashlib.sha256(shipped.read_bytes()).hexdigest() == digest


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts = 0
        self.styled = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "script":
            if found.get("src"):
                self.urls.append(str(found["src"]))
            else:
                self.inline_scripts += 1
        if tag == "link" and found.get("href"):
            self.urls.append(str(found["href"]))
        if "style" in found:
            self.styled += 1


async def test_the_page_loads_the_library_from_its_own_origin_before_the_app() -> None:
    app, *_ = make_api()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        page = await client.get("/")
        assets = _Assets()
        assets.feed(page.text)
        assert assets.urls == [
            "/static/vendor/uplot/uPlot.min.css",
            "/static/app.css",
            "/static/vendor/uplot/uPlot.iife.min.js",
            "/static/app.js",
        ]
        assert assets.inline_scripts == 0
        assert assets.styled == 0  # the policy refuses inline style attributes
        csp = page.headers["content-security-policy"]
        assert "script-src 'self';" in csp
        assert "style-src 'self';" in csp
        assert "unsafe" not in csp
        for url, kind in [
            ("/static/vendor/uplot/uPlot.iife.min.js", "text/javascript"),
            ("/static/vendor/uplot/uPlot.min.css", "text/css"),
            ("/static/vendor/uplot/LICENSE", "text/plain"),
        ]:
            served = await client.get(url)
            assert served.status_code == 200, url
            assert served.headers["content-type"].startswith(kind)
            assert served.content == (VENDORED / url.rsplit("/", 1)[1]).read_bytes()
            assert served.headers["x-content-type-options"] == "nosniff"
        for probe in [
            "/static/vendor/uplot/uPlot.iife.js",
            "/static/vendor/uplot/%2e%2e/%2e%2e/app.py",
            "/static/%2e%2e/app.py",
            "/static/vendor/uplot/uPlot.min.css/",
            "/static/vendor/uplot",
        ]:
            assert (await client.get(probe)).status_code == 404, probe
