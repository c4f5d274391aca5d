"""Placeholder."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Static

from edge_guard.tui.screens.base import EdgeScreen


class ModelsScreen(EdgeScreen):
    MODE = "models"

    def compose_body(self) -> ComposeResult:
        yield Static("todo")
