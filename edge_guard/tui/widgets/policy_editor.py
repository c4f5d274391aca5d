"""`PolicyEditor`: pick a policy, edit its text, and see its token count and format check live."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Select, Static, TextArea

from edge_guard.policy.core import Policy, load_policy
from edge_guard.tui.format import line as one_line
from edge_guard.tui.format import options
from edge_guard.tui.jobs import error_text
from edge_guard.tui.policy_io import check_format, policy_choices


class PolicyEditor(Vertical):
    """Select + TextArea + a status line (tokens, output kind, parser, warnings)."""

    class Loaded(Message):
        """A policy was (re)loaded from disk."""

        def __init__(self, policy: Policy) -> None:
            super().__init__()
            self.policy = policy

    class Counted(Message):
        def __init__(self, text: str, policy_tokens: int, prefix_tokens: int) -> None:
            super().__init__()
            self.text, self.policy_tokens, self.prefix_tokens = text, policy_tokens, prefix_tokens

    def __init__(self, initial: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.initial = initial
        self.policy: Policy | None = None
        self._timer: Timer | None = None
        self._tokens = ""
        self.prompt_style = "harmony"

    def compose(self) -> ComposeResult:
        yield Select[str](
            [], prompt="choose a policy", id="policy-select", allow_blank=True, compact=True
        )
        yield TextArea(
            "",
            id="policy-text",
            soft_wrap=True,
            show_line_numbers=False,
            placeholder="Write a policy, or choose one above.",
        )
        yield Static("", id="policy-status")

    def on_mount(self) -> None:
        self.border_title = "Policy"
        self.reload_choices(select=self.initial)

    # -- choices / loading ------------------------------------------------------------------
    def reload_choices(self, select: str | None = None) -> None:
        choices = policy_choices()
        values = {v for _, v in choices}
        target: str | None = None
        if select:
            path = Path(select)
            if path.exists():
                target = str(path)
                if target not in values:
                    choices.append((path.stem if path.is_file() else path.name, target))
            else:
                target = next((v for n, v in choices if n == select), None)
                if target is None:
                    self.notify(f"policy {select!r} not found", severity="error")
        elif self.policy is not None and self.policy.path is not None:
            target = str(self.policy.path) if str(self.policy.path) in values else None
        if target is None and choices:
            target = choices[0][1]
        sel = self.query_one("#policy-select", Select)
        sel.set_options(options(choices))
        if target is not None:
            sel.value = target
            self.load(target)

    def on_select_changed(self, event: Select.Changed) -> None:
        if (
            event.select.id == "policy-select"
            and isinstance(event.value, str)
            and (self.policy is None or str(self.policy.path) != event.value)
        ):
            self.load(event.value)

    def load(self, ref: str) -> None:
        try:
            policy = load_policy(ref)
        except Exception as exc:
            self.notify(error_text(exc), severity="error", title="policy")
            return
        self.policy = policy
        self.query_one("#policy-text", TextArea).load_text(policy.text)
        self.border_title = one_line(f"Policy · {policy.name}")
        self._update_status()
        self._schedule_count()
        self.post_message(self.Loaded(policy))

    def revert(self) -> None:
        if self.policy is not None and self.policy.path is not None:
            self.load(str(self.policy.path))

    # -- the policy as edited -----------------------------------------------------------------
    @property
    def text(self) -> str:
        return self.query_one("#policy-text", TextArea).text

    @property
    def dirty(self) -> bool:
        return self.policy is None or self.text != self.policy.text

    def current(self) -> Policy:
        """The policy to classify with: the loaded one, with the edited text if changed."""
        text = self.text
        if self.policy is None:
            return Policy("untitled", text)
        if text == self.policy.text:
            return self.policy
        return dataclasses.replace(self.policy, text=text)

    # -- status line --------------------------------------------------------------------------
    def on_text_area_changed(self, event: TextArea.Changed) -> None:
        if event.text_area.id == "policy-text":
            self._update_status()
            self._schedule_count()

    def set_style(self, style: str) -> None:
        self.prompt_style = style
        self._schedule_count()

    def _schedule_count(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(0.25, lambda: self._count(self.text, self.prompt_style))

    @work(thread=True, exclusive=True, group="policy-tokens", exit_on_error=False)
    def _count(self, text: str, style: str) -> None:
        from edge_guard.harmony.render import PromptConfig, PromptRenderer
        from edge_guard.harmony.vocab import o200k_harmony_vocab

        vocab = o200k_harmony_vocab()
        n_policy = len(vocab.encoder.encode(text))
        prefix = PromptRenderer(vocab).prefix(text, PromptConfig(style=style).resolved())
        self.post_message(self.Counted(text, n_policy, len(prefix)))

    def on_policy_editor_counted(self, event: Counted) -> None:
        if event.text == self.text:
            self._tokens = f"{event.policy_tokens} tokens (prompt prefix {event.prefix_tokens})"
            self._update_status()

    def _update_status(self) -> None:
        policy = self.current()
        check = check_format(policy, self.text)
        line = Text()
        line.append(self._tokens or "… tokens", style="bold")
        line.append(f" · {check.summary}")
        if self.dirty:
            line.append(" · edited (Ctrl+S saves as new)", style="yellow")
        for w in check.warnings:
            line.append(f"\n⚠ {w}", style="yellow")
        self.query_one("#policy-status", Static).update(line)
