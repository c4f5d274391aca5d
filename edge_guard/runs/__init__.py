"""Batch runs (`batch`: plan, execute, resume; `outcomes`: read back) and their metrics (`metrics`)."""

from __future__ import annotations

from edge_guard.lazy import lazy_exports

_EXPORTS = {
    "plan_run": "edge_guard.runs.batch",
    "execute_run": "edge_guard.runs.batch",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
