"""Docs that stay true: links and anchors resolve, the README's command lines are commands the CLI takes
and do what their comments say, the benchmark writers find their markers, every decision record has its
parts, and nothing names a file that is not there."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from shelfstream.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted(
    [ROOT / "README.md", ROOT / "CHANGELOG.md", *ROOT.glob("docs/*.md"), *ROOT.glob("benchmarks/*.md")]
)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(m.group(1)) for m in re.finditer(r"(?m)^#{1,6} (.+)$", path.read_text(encoding="utf-8"))}


def test_the_docs_are_where_the_readme_says() -> None:
    for name in ("CHANGELOG.md", "docs/decisions.md", "docs/contract.md"):
        assert (ROOT / name).is_file(), name
    assert len(DOCS) > 10


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_their_anchors_resolve(doc: Path) -> None:
    for target in LINK.findall(doc.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        assert path.exists(), f"{doc.relative_to(ROOT)} links to {target}: no such file"
        if anchor and path.suffix == ".md":
            assert anchor in anchors(path), f"{doc.relative_to(ROOT)} links to {target}: no such heading"


def test_nothing_names_a_contract_file_that_is_not_there() -> None:
    """The contract is docs/contract.md; ~21 places named an upper-case file this repo does not have."""
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    needle = "CONTRACT" + ".md"
    for name in tracked:
        path = ROOT / name
        if (
            path.suffix in {".py", ".md", ".yaml", ".toml", ".sh", ".properties", ".xml", ".txt"}
            or name == "Makefile"
        ):
            text = path.read_text(encoding="utf-8", errors="replace")
            assert needle not in text, f"{name} names {needle}: the contract is docs/contract.md"


def test_no_link_points_into_a_section_of_decisions_that_moved() -> None:
    records = anchors(ROOT / "docs" / "decisions.md")
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in tracked:
        if name.endswith((".md", ".py")):
            for anchor in re.findall(r"decisions\.md#([\w-]+)", (ROOT / name).read_text(encoding="utf-8")):
                assert anchor in records, f"{name} links to decisions.md#{anchor}"


# --- docs/decisions.md: short records ---------------------------------------------------------------


def records() -> list[tuple[int, str, str]]:
    text = (ROOT / "docs" / "decisions.md").read_text(encoding="utf-8")
    found = re.findall(r"(?ms)^## (\d+)\. (.+?)\n(.*?)(?=^## |\Z)", text)
    return [(int(n), title, body) for n, title, body in found]


def test_every_decision_is_a_short_record_with_status_context_decision_and_consequences() -> None:
    found = records()
    assert [n for n, _, _ in found] == list(range(1, len(found) + 1))
    numbers = {n for n, _, _ in found}
    for n, title, body in found:
        status = re.match(r"Status: (accepted|superseded by (\d+))", body)
        assert status, f"record {n} ({title}) has no status"
        if status.group(2):
            assert int(status.group(2)) in numbers, f"record {n}"
            assert int(status.group(2)) > n, f"record {n} is superseded by an earlier one"
        for part in ("**Context.**", "**Decision.**", "**Consequences.**"):
            assert part in body, f"record {n} ({title}) has no {part}"
        assert len(body.splitlines()) <= 20, (
            f"record {n} ({title}) is long: its figures belong in benchmarks/"
        )


def test_the_index_of_decisions_lists_every_record_with_its_status() -> None:
    text = (ROOT / "docs" / "decisions.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"(?m)^\| (\d+) \| .+? \| (.+?) \|$", text))
    for n, title, body in records():
        status = body.splitlines()[0].removeprefix("Status: ").rstrip(".")
        assert str(n) in rows, f"record {n} ({title}) is not in the index"
        assert rows[str(n)].split(" (")[0] == status.split(";")[0], f"record {n}: index and status differ"


# --- benchmark writers find their markers -------------------------------------------------------------

MARKERS = {
    "benchmarks.checkpoint_state": "checkpoint-state",
    "benchmarks.detect": "bench-detect",
    "benchmarks.detect_fleet": "bench-fleet",
    "benchmarks.detect_scale": "bench-scale",
    "benchmarks.history_tables": "history-tables",
    "benchmarks.profile_core": "profile-core",
    "benchmarks.restock": "bench-restock",
    "benchmarks.soak": "bench-soak",
    "benchmarks.warm_start": "bench-warm",
}


def docs_writers() -> list[tuple[str, str]]:
    """(module, file) for every `--docs FILE` the Makefile and `benchmarks/run_all.py` pass."""
    found = re.findall(r"-m (benchmarks\.\w+) --docs (\S+)", (ROOT / "Makefile").read_text(encoding="utf-8"))
    run_all = (ROOT / "benchmarks" / "run_all.py").read_text(encoding="utf-8")
    found += re.findall(r'"(benchmarks\.\w+)",\s*\[[^\]]*"--docs", "([^"]+)"', run_all)
    return found


def test_every_benchmark_that_writes_into_a_doc_finds_its_markers() -> None:
    writers = docs_writers()
    assert ("benchmarks.profile_core", "benchmarks/core-speed-experiments.md") in writers
    for module, file in writers:
        text = (ROOT / file).read_text(encoding="utf-8")
        marker = MARKERS[module]
        assert f"<!-- {marker}:begin -->" in text, (module, file)
        assert f"<!-- {marker}:end -->" in text, (module, file)


# --- the README's commands ----------------------------------------------------------------------------


def readme_commands() -> list[tuple[list[str], str]]:
    """(arguments, comment) of every `shelfstream` line in the README's shell blocks."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    out = []
    for block in re.findall(r"(?ms)^```sh\n(.*?)^```", text):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            comment = line.partition(" # ")[2]
            if words and words[0].endswith("/shelfstream"):
                out.append((words[1:], comment.strip()))
    return out


def test_every_readme_command_line_is_one_the_cli_takes() -> None:
    lines = readme_commands()
    assert len(lines) >= 15
    parser = build_parser()
    for args, _ in lines:
        parser.parse_args([a for a in args if a != "&"])


def test_the_readmes_report_line_writes_where_its_comment_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The line promised HTML + CSV in `reports/`, which only `--out` makes (reading S3 it writes to S3)."""
    from tests.unit.test_report import EVENTS, write_jsonl

    ((args, comment),) = [(a, c) for a, c in readme_commands() if a[0] == "report"]
    folder = re.search(r"in (\S+)/<week>/", comment)
    assert folder, comment
    archive = tmp_path / "archive"
    write_jsonl(archive / "events/2026/08/10/09/archive-1", EVENTS)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    week = ["--week", "2026-W32"]
    assert main([*(a for a in args if a not in {"--week", "current"}), *week, "--archive", str(archive)]) == 0
    written = sorted(p.name for p in (work / folder.group(1) / "2026-W32").iterdir())
    assert any(n.endswith(".html") for n in written), written
    assert any(n.endswith(".csv") for n in written), written
    assert "2026-W32" in capsys.readouterr().out
