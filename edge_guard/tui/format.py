"""Small formatting helpers shared by the TUI screens (verdicts, scores, times, truncation).

Data never goes into the TUI as a markup string: `plain()` and `cell()` make `rich.text.Text`
(shown literally, so `[/]` or `[bold]` in a text cannot crash or restyle a screen), and
`clip()` / `plain()` pass data through `edge_guard.sanitize` (escape sequences shown, never
obeyed)."""

from __future__ import annotations

import json
from typing import Any

from rich.text import Text

from edge_guard.result import headline_score
from edge_guard.sanitize import term, term_line

VERDICTS = {
    "violation": ("VIOLATION", "bold white on dark_red", "red"),
    "no_violation": ("NO VIOLATION", "bold white on dark_green", "green"),
    "undetermined": ("UNDETERMINED", "bold black on yellow", "yellow"),
}


def verdict_badge(verdict: str | None) -> Text:
    """A coloured block label for a verdict (used in the verdict panel)."""
    label, style, _ = VERDICTS.get(str(verdict), (str(verdict or "—"), "bold", ""))
    return Text(f" {label} ", style=style)


def verdict_cell(verdict: str | None) -> Text:
    """A coloured verdict for table cells."""
    label, _, color = VERDICTS.get(str(verdict), (str(verdict or "—"), "", ""))
    return Text(label.lower(), style=color)


def meta_of(row: dict[str, Any]) -> dict[str, Any]:
    raw = row.get("metadata")
    if isinstance(raw, dict):
        return raw
    try:
        return json.loads(raw or "{}") or {}
    except (TypeError, ValueError):
        return {}


_SCORE_LABELS = {"expected_rating": "E[rating] ", "p_violation": "P(violation) ", "score": "score "}
_SCORE_VALUES = {"expected_rating": "{:.2f}", "p_violation": "{:.3f}", "score": "{:g}"}


def score_text(meta: dict[str, Any], float_label: float | None = None) -> str:
    """`P(violation) 0.982`, `E[rating] 3.41`, `score 0.7` or `—`."""
    score = headline_score(meta, float_label)
    if score is None:
        return "—"
    return _SCORE_LABELS[score[0]] + _SCORE_VALUES[score[0]].format(score[1])


def score_short(meta: dict[str, Any], float_label: float | None = None) -> str:
    score = headline_score(meta, float_label)
    return "" if score is None else _SCORE_VALUES[score[0]].format(score[1])


def when(iso: str | None) -> str:
    """`2026-01-31 14:05` from a stored ISO timestamp (UTC)."""
    if not iso:
        return ""
    return iso[:16].replace("T", " ")


def clip(text: Any, width: int = 60) -> str:
    """One line, at most `width` characters, terminal controls escaped."""
    flat = term_line(" ".join(("" if text is None else str(text)).split()))
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def cell(text: Any, width: int = 60, style: str = "") -> Text:
    """`clip(text, width)` as a Text (a DataTable cell, an option label, a title)."""
    return Text(clip(text, width), style=style)


def options(pairs: Any, width: int = 60) -> list[tuple[Text, Any]]:
    """Select options [(label, value)] with the labels as Texts (shown literally)."""
    return [(cell(label, width), value) for label, value in pairs]


def plain(text: Any, style: str = "") -> Text:
    """Data as a Text shown literally (never parsed as markup), newlines kept."""
    return Text(term("" if text is None else text), style=style)


def line(text: Any, style: str = "") -> Text:
    """Data on one line as a Text shown literally (a name in a title or notification)."""
    return Text(term_line("" if text is None else text), style=style)


def timing_text(timings: Any) -> str:
    if timings is None:
        return ""
    t = timings
    rate = t.output_tokens / (t.output_ms / 1000) if t.output_ms > 0 else 0.0
    return (
        f"prompt {t.prompt_tokens} tok ({t.cached_tokens} reused) {t.prompt_ms / 1000:.2f} s · "
        f"output {t.output_tokens} tok {t.output_ms / 1000:.2f} s ({rate:.1f} tok/s)"
    )


def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def num(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"
