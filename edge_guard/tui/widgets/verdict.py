"""`VerdictPanel`: the verdict badge, its score, the final answer and (optionally) timings.

Answers, errors and hints are data: they go in as Text (`format.plain`), never as markup."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.text import Text
from textual.widgets import Static

from edge_guard.tui.format import meta_of, plain, score_text, timing_text, verdict_badge


class VerdictPanel(Static):
    """Shows idle help, a running state, a result (live or stored), or an error."""

    def __init__(self, *, show_timings: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.show_timings = show_timings
        self.answer_live = ""
        self.plain = ""  # what is shown, as plain text (for tests and copying)

    def _put(self, *parts: Any) -> None:
        self.plain = "\n".join(p.plain if isinstance(p, Text) else str(p) for p in parts)
        self.update(Group(*parts))

    def on_mount(self) -> None:
        self.show_idle()

    def show_idle(self, hint: str | None = None) -> None:
        self.set_classes("")
        parts = [Text("Type a text and press Ctrl+R to classify it.", style="dim")]
        if hint:
            parts.append(plain(hint, style="yellow"))
        self._put(*parts)

    def show_running(self, note: str = "running") -> None:
        self.answer_live = ""
        self.set_classes("-running")
        self._put(Text(f"⏳ {note} — Esc cancels", style="bold"))

    def add_answer(self, text: str) -> None:
        self.answer_live += text
        self._put(
            Text("⏳ writing the answer — Esc cancels", style="bold"),
            plain(f"answer: {self.answer_live}"),
        )

    def show_error(self, message: str) -> None:
        self.set_classes("-error")
        self._put(plain(f"✗ {message}", style="bold red"))

    def show_cancelled(self) -> None:
        self.set_classes("")
        self._put(Text("cancelled — nothing was stored", style="yellow"))

    def show_result(self, result: Any) -> None:
        resp = result.model_response
        self._show(
            verdict=str(result.verdict),
            score=score_text(result.metadata or {}, result.float_label),
            final=resp.response if resp else None,
            finish=resp.finish_reason if resp else None,
            error=result.error,
            cached=result.cached,
            timings=timing_text(resp.timings) if (resp and not result.cached) else "",
        )

    def show_row(self, row: dict[str, Any]) -> None:
        """A stored result (history / results browser)."""
        self._show(
            verdict=row.get("verdict"),
            score=score_text(meta_of(row), row.get("float_label")),
            final=row.get("final"),
            finish=row.get("finish_reason"),
            error=row.get("error"),
            cached=True,
            timings="",
        )

    def _show(
        self,
        *,
        verdict: str | None,
        score: str,
        final: str | None,
        finish: str | None,
        error: str | None,
        cached: bool,
        timings: str,
    ) -> None:
        self.set_classes(f"-{verdict}" if verdict else "")
        head = Text.assemble(verdict_badge(verdict), "  ", (score, "bold"))
        if cached:
            head.append("  [stored]", style="cyan")
        parts: list[Any] = [head]
        if final is not None:
            parts.append(Text.assemble(("answer: ", "dim"), plain(final.strip() or "(empty)")))
        else:
            parts.append(Text("answer: (none — no complete final message)", style="yellow"))
        if finish and finish != "return":
            hint = " (out of tokens: raise max tokens)" if finish == "length" else ""
            parts.append(Text(f"finish: {finish}{hint}", style="yellow"))
        if error:
            parts.append(plain(f"error: {error}", style="red"))
        if timings and self.show_timings:
            parts.append(Text(timings, style="dim"))
        self._put(*parts)
