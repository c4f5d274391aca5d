"""Command palette providers: go to any screen, and the active screen's own actions."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from edge_guard.tui.screen_list import SCREENS

HELP_ENTRY = ("help", "Help", "f1")


class ScreensProvider(Provider):
    """`Go to Workbench`, `Go to Runs`, … `Go to Review` (every screen), and `Help`."""

    def _entries(self) -> list[tuple[str, str, str]]:
        out = []
        for mode, title, key in SCREENS:
            out.append(
                (
                    f"Go to {title}",
                    f"switch to the {title} screen ({key.upper()})",
                    f"goto('{mode}')",
                )
            )
        out.append(("Help", "key bindings and a tour of the screens (F1)", "help"))
        return out

    async def discover(self) -> Hits:
        for name, help_text, action in self._entries():
            yield DiscoveryHit(name, partial(self.app.run_action, action), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, action in self._entries():
            score = matcher.match(name)
            if score > 0:
                yield Hit(
                    score,
                    matcher.highlight(name),
                    partial(self.app.run_action, action),
                    text=name,
                    help=help_text,
                )


class ScreenActionsProvider(Provider):
    """The actions of the screen the palette was opened from (Run, Cancel, Copy, …)."""

    def _entries(self) -> list[tuple[str, str, str]]:
        return list(getattr(self.screen, "PALETTE", []))

    async def discover(self) -> Hits:
        for name, help_text, action in self._entries():
            yield DiscoveryHit(name, partial(self.screen.run_action, action), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, action in self._entries():
            score = matcher.match(name)
            if score > 0:
                yield Hit(
                    score,
                    matcher.highlight(name),
                    partial(self.screen.run_action, action),
                    text=name,
                    help=help_text,
                )
