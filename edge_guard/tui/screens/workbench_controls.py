"""The Workbench's run controls: the rows of model, prompt style, effort, reasoning path,
most tokens and policy-or-set choosers (`compose_controls`), the `RunOptions` they hold
(`read_options`), and the text Copy puts on the clipboard (`copy_text`).
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.dom import DOMNode
from textual.suggester import SuggestFromList
from textual.widgets import Input, Select

from edge_guard.harmony.render import EFFORTS, STYLES
from edge_guard.tui.jobs import RunOptions
from edge_guard.tui.widgets.set_results import set_choices

REASONING_CHOICES = [
    ("reason", "full"),
    ("1 pass", "none"),
    ("1 pass, empty analysis", "none-empty-analysis"),
]
MODEL_SUGGESTIONS = ["synth:tiny-o200k", "gpt-oss-safeguard-20b:mxfp4", "gpt-oss-20b:mxfp4"]


def compose_controls(spec: Any, model_ref: str) -> ComposeResult:
    """The two rows of controls, starting from the settings `spec` and the model in use."""
    with Horizontal(id="wb-options"):
        yield Input(
            model_ref,
            id="wb-model",
            placeholder="model",
            suggester=SuggestFromList(MODEL_SUGGESTIONS),
            tooltip="model id, .gguf path, hf:… or synth:tiny-o200k",
            compact=True,
        )
        yield Select(
            [(s, s) for s in STYLES],
            value=spec.style,
            allow_blank=False,
            id="wb-style",
            tooltip="prompt style",
            compact=True,
        )
        yield Select(
            [(f"effort {e}", e) for e in EFFORTS],
            value=spec.effort,
            allow_blank=False,
            id="wb-effort",
            compact=True,
        )
    with Horizontal(id="wb-options-2"):
        yield Select(
            REASONING_CHOICES,
            value=spec.reasoning,
            allow_blank=False,
            id="wb-path",
            tooltip="reason, then answer; or score the labels in one pass (no reasoning)",
            compact=True,
        )
        yield Input(
            str(spec.max_tokens),
            id="wb-max-tokens",
            type="integer",
            tooltip="most tokens to generate",
            compact=True,
        )
        yield Select(
            set_choices(),
            value="",
            allow_blank=False,
            id="wb-set",
            tooltip="the edited policy, or a policy set",
            compact=True,
        )


def read_options(screen: DOMNode) -> RunOptions:
    """What the controls under `screen` hold now (`model` as typed: empty = the one in use)."""
    return RunOptions(
        model=screen.query_one("#wb-model", Input).value.strip(),
        style=str(screen.query_one("#wb-style", Select).value),
        effort=str(screen.query_one("#wb-effort", Select).value),
        reasoning=str(screen.query_one("#wb-path", Select).value),
        max_tokens=screen.query_one("#wb-max-tokens", Input).value.strip(),
    )


def copy_text(last: dict[str, Any]) -> str:
    """The result on display, as Copy puts it on the clipboard."""
    d = last
    return (
        f"verdict: {d['verdict']}  {d['score']}\npolicy: {d['policy']}  model: {d['model']}\n"
        f"text: {d['text']}\nanswer: {d['answer']}\nreasoning:\n{d['reasoning']}\n"
    )
