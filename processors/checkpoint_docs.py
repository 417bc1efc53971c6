"""Writes the checkpoint format's reference (docs/checkpoints.md) from its definition.

    python -m processors.checkpoint_docs [--docs docs/checkpoints.md]

The section between the `parts` markers is generated from processors/core/state_schema.py; a test
fails when the page and the definition disagree.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from processors.core.state_schema import reference

BEGIN = "<!-- parts:begin -->\n"
END = "<!-- parts:end -->"


def write(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    start, stop = text.index(BEGIN) + len(BEGIN), text.index(END)
    path.write_text(text[:start] + reference() + text[stop:], encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=Path, default=Path("docs/checkpoints.md"))
    write(parser.parse_args(argv).docs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
