"""The controversial-opinion study: how the safeguard model and its base model rate opinions.

Modules: `dataset` (items), `runner` (`run_study`: every item × model × repeat through the
store as one named run), `data` (`load_study`: ratings from a run or a results file),
`stats` + `analysis` (`analyze(data) -> dict`), `plots` (`likert_chart_text`, `likert_svg`),
`summary` (terminal text), `report` (HTML/Markdown), `reference` (the seed's figures).
Names are imported lazily so `import edge_guard.study` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "StudyItem": "dataset",
    "load_dataset": "dataset",
    "default_dataset_path": "dataset",
    "StudyConfig": "runner",
    "StudyRun": "runner",
    "run_study": "runner",
    "DEFAULT_MODELS": "runner",
    "StudyData": "data",
    "load_study": "data",
    "from_run": "data",
    "from_results_file": "data",
    "analyze": "analysis",
    "likert_chart_text": "plots",
    "likert_svg": "plots",
    "write_likert_plot": "plots",
    "format_analysis": "summary",
    "render_html": "report",
    "render_markdown": "report",
    "write_report": "report",
    "seed_reference": "reference",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"edge_guard.study.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'edge_guard.study' has no attribute {name!r}")
