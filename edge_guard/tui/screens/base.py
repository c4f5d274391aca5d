"""`EdgeScreen`: the frame every main screen shares (nav bar, body, footer, palette actions)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer

from edge_guard.tui.widgets.navbar import NavBar

if TYPE_CHECKING:
    from edge_guard.tui.app import EdgeGuardApp


class EdgeScreen(Screen[None]):
    """A main screen: subclasses set MODE and implement `compose_body`."""

    MODE: ClassVar[str] = ""
    # (title, help, action) offered in the command palette while this screen is active.
    PALETTE: ClassVar[list[tuple[str, str, str]]] = []

    @property
    def eg(self) -> EdgeGuardApp:
        return cast("EdgeGuardApp", self.app)

    def compose(self) -> ComposeResult:
        yield NavBar(self.MODE)
        yield from self.compose_body()
        yield Footer()

    def compose_body(self) -> ComposeResult:
        yield from ()

    def on_screen_resume(self) -> None:
        self.refresh_data()

    def sync_model_input(self, selector: str) -> None:
        """Show the app's model in `selector` when it changed elsewhere (e.g. Models → Use)."""
        from textual.widgets import Input

        seen = getattr(self, "_model_seen", None)
        if seen != self.eg.model_ref:
            if seen is not None:
                self.query_one(selector, Input).value = self.eg.model_ref
            self._model_seen = self.eg.model_ref

    def refresh_data(self) -> None:
        """Reload what the screen shows from the store (called when it becomes active)."""

    def action_refresh(self) -> None:
        self.refresh_data()
        self.notify("refreshed", timeout=1.5)
