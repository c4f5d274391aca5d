"""Modal dialogs: save a policy edit under a new name, ask for one line of text."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from edge_guard.tui.format import line, plain


class SavePolicyScreen(ModalScreen[tuple[str, str] | None]):
    """Ask for the new policy's name and description; returns (name, description)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, suggested: str, source: str) -> None:
        super().__init__()
        self.suggested = suggested
        self.source = source

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog"):
            yield Label("Save the edited policy as a new policy", classes="dialog-title")
            yield Static(
                plain(
                    f"A new folder in your policies/ keeps {self.source!r} untouched; "
                    "its output format and parser are copied."
                ),
                classes="dialog-help",
            )  # data (a policy name) goes in as Text, never markup
            yield Input(self.suggested, placeholder="new policy name", id="save-name")
            yield Input("", placeholder="description (optional)", id="save-description")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save", variant="primary", id="save-ok")
                yield Button("Cancel", id="save-cancel")

    def on_mount(self) -> None:
        self.query_one("#save-name", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save-ok":
            self._submit()
        else:
            self.dismiss(None)

    def _submit(self) -> None:
        name = self.query_one("#save-name", Input).value.strip()
        if not name:
            self.notify("give the new policy a name", severity="warning")
            return
        self.dismiss((name, self.query_one("#save-description", Input).value.strip()))

    def action_cancel(self) -> None:
        self.dismiss(None)


class TextPrompt(ModalScreen[str | None]):
    """Ask for one line of text (a note, tags); Enter keeps it, Esc cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, value: str = "", placeholder: str = "") -> None:
        super().__init__()
        self.title_text, self.value, self.placeholder = title, value, placeholder

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog"):
            yield Label(line(self.title_text), classes="dialog-title")
            yield Input(self.value, placeholder=self.placeholder, id="prompt-input")

    def on_mount(self) -> None:
        self.query_one("#prompt-input", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)
