"""The reference of every setting, written from the models: ``python -m config.reference`` writes
docs/settings.md, ``--check`` says whether it is current (a unit test does the same).

The models are the one place a setting is described, so the reference cannot drift from the code.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from pydantic.fields import FieldInfo

from config.legacy import FLAT_NAMES
from config.settings import PREFIX, Settings, env_name, members

DOC: Final = Path(__file__).resolve().parents[1] / "docs" / "settings.md"

_HEAD: Final = """# Settings

<!-- Written by `python -m config.reference` from config/settings.py: edit the models, not this file. -->

Every setting is an environment variable `SHELFSTREAM_<GROUP>__<NAME>` (two underscores between the
group and the name), e.g. `SHELFSTREAM_DETECTOR__THRESHOLD=5`. A group is set member by member. Names
carry their unit (`_s` seconds, `_bytes`, `_days`, `_units` of stock); durations are seconds, whatever
unit the code uses inside. Values are checked when a command starts: a wrong type, a value out of range or
a name no group has stops the command with one line naming the variable (exit status 2).

AWS endpoints, region and credentials are not settings: they follow the AWS SDK's own variables
(`AWS_ENDPOINT_URL`, `AWS_REGION`, profiles). Command-line flags, where a command has one, win over
these variables.

The settings of the processor core (restock, dedup, windows, detector, and the processor's
`store_retention_s`) take their defaults from the core's own configs and become them in one function,
`config.core_config`.

"""

_RENAMED: Final = """## Names of earlier releases

The flat names below still work: each is read into its group, and a process that finds one says so once
in its log (`deprecated setting names`). Where both are set, the grouped name wins.

| earlier name | now |
| --- | --- |
"""


def _type(info: FieldInfo) -> str:
    annotation = info.annotation
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin is dict:
        return f"JSON object of {args[1].__name__}"
    if origin is tuple:
        return f"JSON [{', '.join(a.__name__ for a in args)}]"
    if isinstance(annotation, type | types.GenericAlias):
        return getattr(annotation, "__name__", str(annotation))
    return str(annotation)


def _default(info: FieldInfo) -> str:
    value: Any = info.get_default(call_default_factory=True)
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = f'"{value}"'
    elif isinstance(value, tuple):
        text = f"[{', '.join(str(v) for v in value)}]"
    elif isinstance(value, dict):
        text = "{}" if not value else str(value)
    else:
        text = str(value)
    return f"`{text}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render() -> str:
    """docs/settings.md as it should be."""
    out = [_HEAD]
    groups = members()
    out.append("| group | what it configures |\n| --- | --- |\n")
    for group, info in Settings.model_fields.items():
        out.append(f"| [`{group}`](#{group}) | {_cell(info.description or '')} |\n")
    for group, fields in groups.items():
        out.append(f"\n## {group}\n\n{_cell(Settings.model_fields[group].description or '')}\n\n")
        out.append("| env variable | type | default | description |\n| --- | --- | --- | --- |\n")
        for member, info in fields.items():
            cells = (
                f"`{env_name(group, member)}`",
                _type(info),
                _default(info),
                _cell(info.description or ""),
            )
            out.append(f"| {' | '.join(cells)} |\n")
    out.append("\n" + _RENAMED)
    for flat, (group, member) in FLAT_NAMES.items():
        out.append(f"| `{PREFIX}{flat.upper()}` | `{env_name(group, member)}` |\n")
    return "".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m config.reference", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/settings.md is not current")
    parser.add_argument("--out", type=Path, default=DOC, help=f"where to write (default {DOC})")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.out.is_file() and args.out.read_text(encoding="utf-8") == text
        if not current:
            print(f"{args.out} is stale: run python -m config.reference", file=sys.stderr)
        return 0 if current else 1
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
