"""Datasets: local files (`files`: JSONL, CSV, Parquet) and named datasets pulled once (`hub`)."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Dataset": "edge_guard.datasets.files",
    "load_dataset": "edge_guard.datasets.files",
    "usable_dataset": "edge_guard.datasets.files",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
