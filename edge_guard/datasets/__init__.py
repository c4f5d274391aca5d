"""Datasets: local files (`files`: JSONL, CSV, Parquet) and named datasets pulled once (`hub`)."""

from __future__ import annotations

from edge_guard.lazy import lazy_exports

_EXPORTS = {
    "Dataset": "edge_guard.datasets.files",
    "load_dataset": "edge_guard.datasets.files",
    "usable_dataset": "edge_guard.datasets.files",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
