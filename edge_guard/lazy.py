"""Lazy package exports: `from edge_guard.X import Name` imports Name's module on first use.

Keeps `import edge_guard` (and the CLI's start) cheap: llama.cpp, numpy-heavy and HTTP
modules load only when one of their names is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], list[str]]:
    """A module `__getattr__` resolving `exports` (name -> module) and the sorted `__all__`."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    return __getattr__, sorted(exports)
