"""The policy loop's middle: review a run's results, record decisions, grow golden cases.

`items` reads a run (or a comparison, or a policy's latest test run) back as review items;
`queues` orders them by what most needs a human; `decisions` stores reviewers' labels (never
overwritten: history kept, latest wins); `export` writes decisions as JSONL/CSV; `promote`
appends decided items to a policy's cases.jsonl; `gold` scores a run against decisions and
reports model–reviewer agreement. Headless: no click, no Textual.
"""

from __future__ import annotations

from edge_guard.lazy import lazy_exports

_EXPORTS = {
    "record": "edge_guard.review.decisions",
    "Decision": "edge_guard.review.decisions",
    "Target": "edge_guard.review.decisions",
    "load_source": "edge_guard.review.items",
    "build_queue": "edge_guard.review.queues",
    "QUEUES": "edge_guard.review.queues",
    "cases_from_review": "edge_guard.review.promote",
    "evaluate_with_gold": "edge_guard.review.gold",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
