"""The top bar: app name, one clickable tab per screen (with its F-key), and the model in use."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Label

# (mode, title, key) in display order; F1 is help.
SCREENS: list[tuple[str, str, str]] = [
    ("workbench", "Workbench", "f2"),
    ("results", "Results", "f3"),
    ("runs", "Runs", "f4"),
    ("study", "Study", "f5"),
    ("compare", "Compare", "f6"),
    ("models", "Models", "f7"),
    ("tests", "Tests", "f8"),
]


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
