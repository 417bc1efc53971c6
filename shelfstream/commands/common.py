"""What the command handlers share: the console they print to and the checks before any work starts."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from foundation.console import make_console
from foundation.errors import UsageError


def out() -> Console:
    return make_console(highlight=False, soft_wrap=True)


def require_input(path: str) -> None:
    """Refuse a missing input before any progress bar is drawn, so the error stays one line."""
    if path == "-":
        return
    file = Path(path)
    if not file.exists():
        raise UsageError(f"input file {path} does not exist")
    if file.is_dir():
        raise UsageError(f"input {path} is a directory, not a JSON-lines file")


def dead_letter_path() -> str:
    """Where producers keep records Kinesis would not take (never silently dropped)."""
    folder = Path(".shelfstream")
    folder.mkdir(exist_ok=True)
    return str(folder / "producer-dead-letter.jsonl")
