"""The Textual TUI (`edge-guard` with no arguments): workbench, results, runs, study, compare,
models and policy tests. Imports the headless core; nothing in the core imports this package."""

from __future__ import annotations

from typing import Any


def run_tui(**kwargs: Any) -> None:
    """Open the TUI (keyword arguments go to `EdgeGuardApp`)."""
    from edge_guard.tui.app import EdgeGuardApp

    EdgeGuardApp(**kwargs).run()
