"""A module imported on first use, for the core's heavy numeric dependencies.

river and scipy cost most of a second to import; a core with detection off (or a process that only
checks its arguments) never touches them, so they are imported when a detector first needs them.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    __slots__ = ("_module", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        module = self._module
        if module is None:
            module = self._module = importlib.import_module(self._name)
        return getattr(module, attr)
