"""Batch runs (`batch`: plan, execute, resume, read back) and their metrics (`metrics`)."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "plan_run": "edge_guard.runs.batch",
    "execute_run": "edge_guard.runs.batch",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
