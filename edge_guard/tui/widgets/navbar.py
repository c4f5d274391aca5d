"""The top bar: app name, one clickable tab per screen (with its F-key), and the model in use."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Label

from edge_guard.tui.screen_list import SCREENS as SCREENS  # (mode, title, key); F1 is help


class NavTab(Label):
    """One screen tab; clicking it switches to that screen."""

    def __init__(self, mode: str, title: str, key: str, active: bool) -> None:
        super().__init__(f"{key.upper()} {title}", id=f"nav-{mode}", classes="nav-tab")
        self.mode = mode
        self.set_class(active, "-active")

    async def on_click(self) -> None:
        await self.app.run_action(f"goto('{self.mode}')")


class NavBar(Horizontal):
    """App title, the screen tabs, and the F1 help hint."""

    def __init__(self, current: str) -> None:
        super().__init__(id="navbar")
        self.current = current

    def compose(self) -> ComposeResult:
        yield Label("edge-guard", id="nav-title")
        for mode, title, key in SCREENS:
            yield NavTab(mode, title, key, mode == self.current)
        yield Label("F1 help · ^p commands", id="nav-hint")
