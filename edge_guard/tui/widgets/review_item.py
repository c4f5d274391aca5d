"""One review item as data for the Review screen: its verdict, P(violation), answer, gold,
the verdicts of the same item in partner runs, the decision recorded and what is held for
the next label — all `rich.text.Text` built from plain strings, never markup.
"""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.text import Text

from edge_guard.tui.format import clip, line, num, plain, verdict_badge, verdict_cell


def side(v: bool | None) -> str:
    """A gold label in words ("—" when the item has none)."""
    return "—" if v is None else "violation" if v else "no violation"


def review_item(item: Any, why: list[str], pending: dict[str, Any]) -> Group:
    """The verdict, score, answer, gold, partners and decision of an item, as Text."""
    head = Text.assemble(
        verdict_badge(item.verdict), "  ", (f"P(violation) {num(item.score)}", "bold")
    )
    head.append(f"   gold: {side(item.gold)}", style="cyan")
    parts: list[Any] = [head]
    if why:
        parts.append(Text(f"why: {', '.join(why)}", style="yellow"))
    if item.final is not None:
        parts.append(Text.assemble(("answer: ", "dim"), plain(item.final.strip() or "(empty)")))
    else:
        parts.append(plain(f"answer: (none — finish {item.finish_reason})", style="yellow"))
    if item.error:
        parts.append(plain(f"error: {item.error}", style="red"))
    for p in item.partners:
        parts.append(
            Text.assemble(
                ("vs ", "dim"),
                line(clip(p.run, 50)),
                ": ",
                verdict_cell(p.verdict),
                f" (P {num(p.score)})",
            )
        )
    d = item.decision
    if d is None:
        parts.append(
            Text("decision: none yet — 1 violation · 0 no violation · s skip", style="dim")
        )
    else:
        dec = Text.assemble(
            ("decision: ", "bold"),
            (d.label, "bold magenta"),
            " by ",
            line(d.reviewer),
            f" at {d.created_at[:16].replace('T', ' ')}",
        )
        if d.tags:
            dec.append(" [")
            dec.append(line(", ".join(d.tags)))
            dec.append("]")
        parts.append(dec)
        if d.note:
            parts.append(Text.assemble(("note: ", "dim"), plain(d.note)))
    if pending.get("note") or pending.get("tags"):
        held = Text("held for the next label: ", style="dim")
        held.append(line(pending.get("note") or ""))
        if pending.get("tags"):
            held.append(" [")
            held.append(line(", ".join(pending["tags"])))
            held.append("]")
        parts.append(held)
    return Group(*parts)
