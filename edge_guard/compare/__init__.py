"""Scripted comparisons: quantization vs full precision, model vs model, prompt style vs style.

Modules: `config` (the `MODEL[,key=value...]` grammar, `;`-separated), `runner`
(`run_compare`: every config as a resumable run of kind "compare"), `resources` (peak RSS
and GPU memory per config), `stats` (agreement, kappa, flips, ΔP, speed), `plots`,
`report` (summary table, `build_report`, `write_report`) and `render` (HTML, Markdown).
Names are imported lazily so `import edge_guard.compare` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CompareConfig": "config",
    "parse_config": "config",
    "build_configs": "config",
    "check_configs": "config",
    "run_compare": "runner",
    "comparison_runs": "runner",
    "compare_outcomes": "stats",
    "load_comparison": "stats",
    "build_report": "report",
    "write_report": "report",
    "format_summary": "report",
    "summary_table": "report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"edge_guard.compare.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'edge_guard.compare' has no attribute {name!r}")
