"""The one way commands make a rich console: whole lines where no one reads them in a terminal.

rich sizes its output to the terminal, and to 80 columns when there is none, so a table printed into a
pipe or a file (`shelfstream inventory | grep milk`, `query ... > out.txt`) had its columns cut and
its cells folded. Where the stream is not a terminal, the console is as wide as the widest line needs
(`PIPE_WIDTH`, far more than any table here), so every cell is printed whole; in a terminal nothing
changes.
"""

from __future__ import annotations

import sys
from typing import IO, Any, Final

from rich.console import Console

# Columns for a console that writes to a pipe or a file: wide enough that rich never folds a cell.
PIPE_WIDTH: Final = 100_000


def is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def make_console(*, stderr: bool = False, file: IO[str] | None = None, **kwargs: Any) -> Console:
    """A rich `Console` (same arguments) for stdout, stderr or `file`, full width unless a terminal."""
    stream = file if file is not None else (sys.stderr if stderr else sys.stdout)
    if "width" not in kwargs and not is_terminal(stream):
        kwargs["width"] = PIPE_WIDTH
    return Console(file=file, stderr=stderr, **kwargs)
