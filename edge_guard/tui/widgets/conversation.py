"""The Workbench's conversation mode: a list of turns with roles and the message to judge.

Hidden until toggled (Ctrl+K in the Workbench). The Workbench's text box is the turn being
written: Ctrl+N (or "Add turn") appends it with the chosen role; on Run, a non-empty text
box becomes the last turn. Turns are shown in a read-only TextArea (plain text: no markup,
so a hostile message cannot style or break the screen).
"""

from __future__ import annotations

from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Select, TextArea

from edge_guard.conversation import ROLES, TARGETS, Conversation, ConversationError

EMPTY = "No turns yet: type a message in the text box, pick its role, press Ctrl+N."


def turns_text(turns: list[dict[str, str]]) -> str:
    """The turns as plain text, one block per turn (`[n] role` then the indented content)."""
    if not turns:
        return EMPTY
    return "\n".join(
        f"[{n}] {t['role']}\n" + "\n".join("    " + ln for ln in t["content"].split("\n"))
        for n, t in enumerate(turns, 1)
    )


class ConversationInput(Vertical):
    """Turns (role + content) and a target; `item(pending)` builds the `Conversation`."""

    DEFAULT_CSS: ClassVar[str] = """
    ConversationInput { height: auto; display: none; }
    ConversationInput.-on { display: block; }
    ConversationInput #conv-turns { height: 8; }
    ConversationInput #conv-bar { height: auto; }
    """

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.turns: list[dict[str, str]] = []

    def compose(self) -> ComposeResult:
        yield TextArea(EMPTY, id="conv-turns", read_only=True, soft_wrap=True)
        with Horizontal(id="conv-bar"):
            yield Select(
                [(f"role {r}", r) for r in ROLES],
                value="user",
                allow_blank=False,
                id="conv-role",
                tooltip="role of the turn to add",
                compact=True,
            )
            yield Button("Add turn ^N", id="conv-add", compact=True)
            yield Button("Remove last", id="conv-pop", compact=True)
            yield Select(
                [(f"judge {t}", t) for t in TARGETS],
                value="last",
                allow_blank=False,
                id="conv-target",
                tooltip="which message to classify",
                compact=True,
            )

    def on_mount(self) -> None:
        self.query_one("#conv-turns").border_title = "Conversation (Ctrl+K: back to plain text)"

    @property
    def active(self) -> bool:
        return self.has_class("-on")

    def toggle(self) -> bool:
        """Show or hide conversation mode; True when it is now on."""
        self.toggle_class("-on")
        return self.active

    @property
    def role(self) -> str:
        return str(self.query_one("#conv-role", Select).value)

    @property
    def target(self) -> str:
        return str(self.query_one("#conv-target", Select).value)

    def add_turn(self, content: str) -> str | None:
        """Append a turn with the chosen role; an error line when the content is unusable."""
        turn = {"role": self.role, "content": content}
        try:
            Conversation([turn])
        except ConversationError as exc:
            return str(exc)
        self.turns.append(turn)
        self._refresh()
        return None

    def pop_turn(self) -> None:
        if self.turns:
            self.turns.pop()
            self._refresh()

    def set_turns(self, turns: list[dict[str, str]]) -> None:
        self.turns = [dict(t) for t in turns]
        self._refresh()

    def item(self, pending: str) -> Conversation:
        """The conversation to classify: the turns, plus `pending` (if any) as the last turn."""
        turns = list(self.turns)
        if pending.strip():
            turns.append({"role": self.role, "content": pending})
        return Conversation(turns, self.target)

    def _refresh(self) -> None:
        area = self.query_one("#conv-turns", TextArea)
        area.load_text(turns_text(self.turns))
        area.scroll_end(animate=False)

    async def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "conv-pop":
            event.stop()
            self.pop_turn()
        elif event.button.id == "conv-add":
            event.stop()
            await self.screen.run_action("add_turn")
