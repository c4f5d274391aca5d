"""Charts drawn with text: a Likert distribution per model (bars sized by share) and a
verdict agreement matrix (cells shaded by count). Labels from data go in as Text, never markup."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from edge_guard.tui.format import clip

COLORS = ("dodger_blue2", "dark_orange", "medium_purple", "spring_green3")


def likert_bars(
    title: str, counts: Mapping[str, int], color: str, *, width: int = 20, middle: int | None = None
) -> RenderableType:
    """`title` then one bar per rating: `3 ██████████░░ 72  70.6%`."""
    total = sum(counts.values())
    lines = [Text.assemble((clip(title, 40), f"bold {color}"), (f"  n={total}", "dim"))]
    keys = sorted(counts, key=lambda k: int(k) if str(k).lstrip("-").isdigit() else 0)
    for k in keys:
        n = counts[k]
        share = n / total if total else 0.0
        filled = round(share * width)
        mark = "◆" if middle is not None and str(k) == str(middle) else " "
        lines.append(
            Text.assemble(
                (f"{clip(k, 12)}{mark}", "bold"),
                " ",
                ("█" * filled, color),
                ("░" * (width - filled), "grey30"),
                f" {n:>4} {share:6.1%}",
            )
        )
    return Group(*lines)


class LikertChart(Static):
    """The Likert distributions of several models, side by side (one column per model)."""

    def show(self, dists: Mapping[str, Mapping[str, int]], middle: int | None = None) -> None:
        if not dists:
            self.update(Text("no ratings yet", style="dim"))
            return
        grid = Table.grid(padding=(0, 3))
        for _ in dists:
            grid.add_column()
        grid.add_row(
            *[
                likert_bars(name, counts, COLORS[i % len(COLORS)], middle=middle)
                for i, (name, counts) in enumerate(dists.items())
            ]
        )
        self.update(grid)


def agreement_matrix(
    labels_a: Sequence[str], labels_b: Sequence[str], title_a: str, title_b: str
) -> RenderableType:
    """Counts of (A's label, B's label) over aligned items; the diagonal is agreement."""
    cats = [
        c for c in ("violation", "no_violation", "undetermined") if c in labels_a or c in labels_b
    ] or ["violation", "no_violation"]
    extra = sorted({*labels_a, *labels_b} - set(cats))
    cats += extra
    counts: dict[tuple[str, str], int] = {}
    for a, b in zip(labels_a, labels_b, strict=True):
        counts[(a, b)] = counts.get((a, b), 0) + 1
    peak = max(counts.values(), default=1)
    table = Table(
        title=Text(clip(f"rows: {title_a} · columns: {title_b}", 80)),
        show_lines=False,
        padding=(0, 1),
    )
    table.add_column(Text(clip(f"{title_a} \\ {title_b}", 40)), style="bold")
    for c in cats:
        table.add_column(Text(clip(c, 20)), justify="right")
    for a in cats:
        cells: list[Any] = []
        for b in cats:
            n = counts.get((a, b), 0)
            shade = "bold green" if a == b and n else "bold red" if n > peak / 2 else ""
            cells.append(Text(str(n), style=shade))
        table.add_row(Text(clip(a, 20)), *cells)
    return table
