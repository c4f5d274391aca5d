"""Placeholder."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Static

from edge_guard.tui.screens.base import EdgeScreen


class StudyScreen(EdgeScreen):
    MODE = "study"

    def compose_body(self) -> ComposeResult:
        yield Static("todo")
