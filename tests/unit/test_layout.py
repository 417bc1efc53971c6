"""The floors of the house: imports only go down, the parts of the loop never import each other, and no
two files import each other in a circle. Read with `ast`, so every import counts (inside functions and
under TYPE_CHECKING too)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Package -> floor. Higher floors may import lower ones; the loop's three parts share floor 2.
FLOORS: dict[str, int] = {
    "config": 0,
    "foundation": 1,
    "producers": 2,
    "processors": 2,
    "consumers": 2,
    "history": 3,
    "shelfstream": 4,
}
LOOP = {"producers", "processors", "consumers"}
# What the pure core may import besides the standard library's pure parts and itself.
CORE_ALLOWED = {
    "msgspec",
    "river",
    "numpy",
    "scipy",
    "foundation.contract",
    "foundation.errors",  # the one error root: exceptions only, no I/O
    "foundation.timeunits",  # constants only
    "processors.core",
}
CORE_FORBIDDEN_STDLIB = {"asyncio", "socket", "threading", "subprocess", "time", "os"}
# The pure core and the project modules it may import import nothing else of the project: they are the
# ground floor, which every floor may import (config takes the core's defaults for its settings).
GROUND = tuple(a for a in CORE_ALLOWED if a.split(".")[0] in FLOORS)


def modules(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in FLOORS:
        base = root / package
        for path in sorted(base.rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def imports_of(path: Path, name: str, known: set[str]) -> Iterator[tuple[int, str]]:
    """(line, module) for every import of a module of the project or any other."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            # `from foundation.aws import moto_kinesis` imports that module; other names come from `target`
            submodules = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known]
            if len(submodules) < len(node.names):
                yield node.lineno, target
            for module in submodules:
                yield node.lineno, module


def owner(module: str, known: set[str]) -> str | None:
    """The project module a dotted import name refers to (itself or its nearest known parent)."""
    parts = module.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in known:
            return candidate
        parts.pop()
    return None


def check(root: Path) -> tuple[list[str], list[list[str]]]:
    """Every import against the floors, and the import cycles between files."""
    found = modules(root)
    known = set(found)
    problems: list[str] = []
    graph: dict[str, set[str]] = {name: set() for name in found}
    for name, path in found.items():
        top = name.split(".")[0]
        for line, target in imports_of(path, name, known):
            target_top = target.split(".")[0]
            where = f"{path.relative_to(root)}:{line} imports {target}"
            impure = target_top in CORE_FORBIDDEN_STDLIB or (
                target_top in FLOORS and not any(target.startswith(a) for a in CORE_ALLOWED)
            )
            if name.startswith("processors.core") and impure:
                problems.append(f"{where}: the core stays pure (no I/O, no clock, no shell)")
            if target_top not in FLOORS:
                continue
            ground = any(target == g or target.startswith(f"{g}.") for g in GROUND)
            if FLOORS[target_top] > FLOORS[top] and not ground:
                problems.append(
                    f"{where}: floor {FLOORS[top]} ({top}) may not import floor {FLOORS[target_top]}"
                )
            elif top in LOOP and target_top in LOOP and top != target_top:
                problems.append(f"{where}: the loop's parts ({top}, {target_top}) do not import each other")
            dest = owner(target, known)
            if dest is not None and dest != name:
                graph[name].add(dest)
    return problems, cycles(graph)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one file (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_imports_go_only_down_and_the_loop_parts_stay_apart() -> None:
    problems, _ = check(ROOT)
    assert problems == []


def test_no_import_cycles_between_files() -> None:
    _, found = check(ROOT)
    assert found == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for package in FLOORS:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"foundation/contract.py": "from shelfstream.cli import main\n"}, "may not import floor 4"),
        ({"processors/shell.py": "def f():\n    from history.query import run\n"}, "may not import floor 3"),
        ({"producers/sim.py": "from consumers import fleet\n"}, "do not import each other"),
        ({"config/x.py": "from processors.stream_processor import core\n"}, "may not import floor 2"),
        ({"processors/core/x.py": "import asyncio\n"}, "the core stays pure"),
        ({"processors/core/x.py": "from processors.sinks import Sinks\n"}, "the core stays pure"),
    ],
)
def test_the_check_catches_a_wrong_import(tmp_path: Path, files: dict[str, str], expected: str) -> None:
    problems, _ = check(_tree(tmp_path, files))
    assert any(expected in p for p in problems), problems


def test_the_check_catches_a_cycle(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "producers/a.py": "from producers import b\n",
            "producers/b.py": "def f():\n    from producers.a import x\n",
        },
    )
    _, found = check(root)
    assert found == [["producers.a", "producers.b"]]
