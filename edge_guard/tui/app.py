"""`EdgeGuardApp`: the Textual app — screens as modes, global keys, palette, shared state.

Shared state lives here: the result store, the model reference in use, and `ModelAccess`
(classifier factory, steering hook for tests, one-job-at-a-time lock). Screens import the
headless core; the core never imports this package.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path, PurePath
from typing import Any, ClassVar

from textual.app import App
from textual.binding import Binding, BindingType
from textual.screen import Screen

from edge_guard.tui.commands import ScreenActionsProvider, ScreensProvider
from edge_guard.tui.jobs import ClassifierFactory, ModelAccess, RunOptions, Steering
from edge_guard.tui.screens.base import EdgeScreen
from edge_guard.tui.widgets.navbar import SCREENS

STYLES = Path(__file__).parent / "styles"


def _screen(mode: str) -> Screen[Any]:
    from edge_guard.tui.screens import (
        compare,
        models,
        results,
        review,
        runs,
        study,
        tests,
        workbench,
    )

    classes = {
        "workbench": workbench.WorkbenchScreen,
        "results": results.ResultsScreen,
        "runs": runs.RunsScreen,
        "study": study.StudyScreen,
        "compare": compare.CompareScreen,
        "models": models.ModelsScreen,
        "tests": tests.TestsScreen,
        "review": review.ReviewScreen,
    }
    return classes[mode]()


class EdgeGuardApp(App[None]):
    """edge-guard's terminal UI."""

    TITLE = "edge-guard"
    CSS_PATH: ClassVar[list[str | PurePath]] = sorted(STYLES.glob("*.tcss"))
    COMMANDS = App.COMMANDS | {ScreensProvider, ScreenActionsProvider}
    MODES: ClassVar[dict[str, Any]] = {
        mode: (lambda m=mode: _screen(m)) for mode, _title, _key in SCREENS
    }
    DEFAULT_MODE = "workbench"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f1", "help", "Help", priority=True),
        *[
            Binding(key, f"goto('{mode}')", title, show=False, priority=True)
            for mode, title, key in SCREENS
        ],
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(
        self,
        *,
        db: str | os.PathLike[str] | None = None,
        model: str | None = None,
        policy: str | None = None,
        classifier_factory: ClassifierFactory | None = None,
        steer: Steering | None = None,
        start: str | None = None,
        settings: Any = None,
    ) -> None:
        if start is not None:
            if start not in self.MODES:
                from edge_guard.errors import EdgeGuardError

                names = ", ".join(self.MODES)
                raise EdgeGuardError(f"unknown TUI screen {start!r} (choose {names})")
            self.DEFAULT_MODE = start  # type: ignore[misc]
        super().__init__()
        from edge_guard.settings.resolve import resolve_settings
        from edge_guard.store import Store

        # The TUI's spec (its flags, env, config.toml): the controls start from it and every
        # classification resolves the controls over it (`jobs.tui_settings`).
        self.settings = settings if settings is not None else resolve_settings(door="tui")
        self.store = Store(db if db is not None else self.settings.db)
        self.models = ModelAccess(classifier_factory, steer, self.settings)
        self.model_ref = model or self.settings.model or _default_model()
        self.initial_policy = policy
        self.run_options = RunOptions(model=self.model_ref)
        self.pending_workbench: tuple[str | None, str] | None = None
        self.pending_tests: Any = None
        self.pending_review: str | None = None

    # -- actions ----------------------------------------------------------------------------
    def action_goto(self, mode: str) -> None:
        if isinstance(self.screen, _modal_types()):
            self.pop_screen()
        if self.current_mode != mode:
            self.switch_mode(mode)

    def action_help(self) -> None:
        from edge_guard.tui.screens.help import HelpScreen

        if isinstance(self.screen, HelpScreen):
            self.pop_screen()
        else:
            self.push_screen(HelpScreen())

    def open_in_workbench(self, policy: str | None, text: str) -> None:
        """Switch to the Workbench with `policy` selected and `text` in the text box."""
        self.pending_workbench = (policy, text)
        if self.current_mode != "workbench":
            self.switch_mode("workbench")

    def open_tests(self, policy: Any) -> None:
        """Switch to the Tests screen and run `policy`'s golden cases (an edited policy too)."""
        self.pending_tests = policy
        self.switch_mode("tests")

    def open_review(self, run: str) -> None:
        """Switch to the Review screen (F9) on run `run`."""
        self.pending_review = run
        if self.current_mode == "review":
            screen = self.screen
            if isinstance(screen, EdgeScreen):
                screen.refresh_data()
        else:
            self.switch_mode("review")

    def set_model(self, ref: str) -> None:
        """Remember the model the user chose (other screens default to it)."""
        ref = ref.strip()
        if ref:
            self.model_ref = ref

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: Any = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        """Every notification is shown literally: messages carry data (names, errors), so
        they are never parsed as markup and their terminal controls are escaped."""
        from edge_guard.sanitize import term, term_line

        super().notify(
            term(message), title=term_line(title), severity=severity, timeout=timeout, markup=False
        )

    async def action_quit(self) -> None:
        """Quit; running generations stop at their next token (finished results are kept)."""
        self.models.cancel_all()
        self.exit()

    def on_unmount(self) -> None:
        self.models.cancel_all()
        with contextlib.suppress(Exception):
            self.store.close()


def _modal_types() -> tuple[type, ...]:
    from textual.screen import ModalScreen

    return (ModalScreen,)


def _default_model() -> str:
    try:
        from edge_guard.registry import default_model_ref

        return default_model_ref()
    except Exception:
        from edge_guard.defaults import DEFAULT_MODEL, env

        return env("EDGE_GUARD_MODEL") or DEFAULT_MODEL
