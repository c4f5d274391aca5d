"""The report's "Reasoning paths" table: one-pass / cascade runs, share escalated, vs full.

Plain cells (numbers and run names); the Markdown and HTML renderers escape them.
"""

from __future__ import annotations

from typing import Any

HEAD = [
    "#",
    "run",
    "path",
    "one-pass",
    "escalated",
    "share escalated",
    "full-reasoning run",
    "n",
    "agreement",
    "kappa",
    "F1 vs full",
    "P vs full",
    "R vs full",
]
NOTE = (
    "F1, precision and recall take the full-reasoning run's verdicts as the reference; "
    "items undetermined in either run are left out."
)


def _n(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def paths_rows(runs: list[Any]) -> list[list[str]]:
    """One row per one-pass or cascade run (none: the report has no such section)."""
    rows = []
    for k, r in enumerate(runs, 1):
        s = r.eval.get("paths")
        if not s:
            continue
        how = (
            f"cascade {':'.join(str(b) for b in s['cascade'])}"
            if s["cascade"]
            else f"reasoning {s['reasoning']}"
        )
        share = s["escalated_share"]
        v = s.get("vs_full") or {}
        rows.append(
            [
                str(k),
                str(r.name),
                how,
                str(s["one_pass"]),
                str(s["escalated"]),
                "—" if share is None else f"{100 * share:.1f}%",
                str(v.get("run") or "none"),
                str(v.get("n", "")),
                _n(v.get("agreement")),
                _n(v.get("kappa")),
                _n(v.get("f1")),
                _n(v.get("precision")),
                _n(v.get("recall")),
            ]
        )
    return rows
