"""Workbench buttons run the same actions as their keys (Run, Copy, Add turn).

The handlers await `run_action` (a coroutine): one that only called it would build a
coroutine that never runs, and the button would do nothing.
"""

from __future__ import annotations

import pytest
from textual.widgets import TextArea

from edge_guard.tui.widgets.conversation import ConversationInput
from edge_guard.tui.widgets.verdict import VerdictPanel
from tests.tui.conftest import SIZE, settle, until

pytestmark = pytest.mark.anyio


async def test_copy_button_with_nothing_to_copy_says_so(make_app) -> None:  # type: ignore[no-untyped-def]
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.click("#wb-copy")
        await pilot.pause()
        assert [n.message for n in app._notifications] == [
            "nothing to copy yet — run a classification first"
        ]


async def test_run_and_copy_buttons_do_what_their_keys_do(make_app) -> None:  # type: ignore[no-untyped-def]
    app = make_app(final="1", analysis="Insult.")
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        screen.query_one("#wb-text", TextArea).load_text("you fool")
        await pilot.click("#wb-run")
        await until(pilot, lambda: not screen.running, "the run to end")
        await settle(pilot)
        assert "VIOLATION" in screen.query_one(VerdictPanel).plain
        await pilot.click("#wb-copy")
        await pilot.pause()
        assert "verdict: violation" in app.clipboard and "text: you fool" in app.clipboard


async def test_add_turn_button_adds_the_typed_turn(make_app) -> None:  # type: ignore[no-untyped-def]
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        conv = screen.query_one(ConversationInput)
        conv.toggle()
        await pilot.pause()
        screen.query_one("#wb-text", TextArea).load_text("hello there")
        await pilot.click("#conv-add")
        await pilot.pause()
        assert [t["content"] for t in conv.turns] == ["hello there"]
        assert screen.query_one("#wb-text", TextArea).text == ""
