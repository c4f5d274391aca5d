"""The help screen: a tour of the screens, first steps, and every key binding."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# edge-guard

Classify text against **your** policies with gpt-oss-safeguard, offline.

## First steps
1. **Workbench (F2)** — pick a policy, type a text, press **Ctrl+R**. The model's
   reasoning streams in, then the verdict, its score and the final answer.
   Edit the policy text on the left and run again; **Ctrl+S** saves the edit as a new policy.
2. **Runs (F4)** — give a dataset file (`.jsonl` / `.csv` with a `text` column, optional
   `label`), press **Ctrl+R**: a progress bar, labels/s and live metrics.
3. **Study (F5)** — two models' Likert ratings side by side, their agreement, and the
   items where they differ most (select one to read both reasonings).

No model downloaded yet? Open **Models (F7)** to pull one, or type `synth:tiny-o200k` as the
model — a tiny random model that runs anywhere (its answers are noise).

## Screens
| Key | Screen | What it does |
|-----|--------|--------------|
| F2 | Workbench | edit a policy, classify one text, see reasoning + verdict + this policy's history |
| F3 | Results | search every stored result by policy, model, verdict and text |
| F4 | Runs | batch-classify a dataset; past runs and their metrics |
| F5 | Study | Likert distributions of two models, agreement, most divergent items |
| F6 | Compare | agreement matrix and label flips between two runs |
| F7 | Models | installed and available builds; pull, info, fit |
| F8 | Tests | run a policy's test cases and see which fail |
| F9 | Review | go through a run by queue, record decisions, promote them to test cases |

## Keys everywhere
| Key | Action |
|-----|--------|
| F1 | this help (Esc closes it) |
| F2 … F9 | switch screen |
| Ctrl+P | command palette: every screen and action by name |
| Tab / Shift+Tab | move between fields |
| Ctrl+Q | quit |

## Workbench (F2)
| Key | Action |
|-----|--------|
| Ctrl+R | run (uses the cache: a text seen before answers instantly) |
| Ctrl+F | fresh re-run, bypassing the cache |
| Esc | cancel the running generation (nothing is stored) |
| Ctrl+O | copy the result (verdict, answer, reasoning) to the clipboard |
| Ctrl+S | save the edited policy as a new policy (never overwrites) |
| Ctrl+T | run this policy's golden test cases, with your edits |
| Enter on a history row | show that stored result |

## Other screens
| Screen | Keys |
|--------|------|
| Results (F3) | `/` search · Enter/arrows show a result · Ctrl+O copy · Ctrl+W open in the Workbench |
| Runs (F4) | Ctrl+R start (or resume) · Esc cancel · Enter on a past run shows its metrics |
| Study (F5) | Ctrl+R start (or resume) · Esc cancel · arrows over divergent items show both reasonings |
| Compare (F6) | pick runs A and B · Ctrl+X swap · arrows over flips show both answers |
| Models (F7) | Ctrl+R pull · Ctrl+U use this model everywhere · arrows show info and memory fit |
| Tests (F8) | Ctrl+R run the cases · Esc cancel · failures are listed first |
| Review (F9) | pick a run and a queue · ↑/↓ move · `1` violation · `0` no violation · `s` skip · `n` note · `t` tags · `p` promote to cases · Ctrl+T test the policy |
"""


class HelpScreen(ModalScreen[None]):
    """Modal help; Esc, F1 or q closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "dismiss", "Close", priority=True),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Markdown(HELP, id="help-text")

    def on_mount(self) -> None:
        self.query_one("#help-box").focus()

    def action_dismiss(self, result: None = None) -> None:  # type: ignore[override]
        self.dismiss(None)
