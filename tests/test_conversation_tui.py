"""TUI: the Workbench's conversation mode (turns with roles, target) and the Results detail."""

# ruff: noqa: F811  (the TUI fixtures are imported from tests/tui/conftest.py)
from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.widgets import DataTable, Select, TextArea

from edge_guard.store import Store
from edge_guard.tui.widgets.conversation import ConversationInput, turns_text
from edge_guard.tui.widgets.verdict import VerdictPanel
from tests.tui.conftest import SIZE, anyio_backend, db_path, make_app  # noqa: F401 (fixtures)
from tests.tui.test_workbench import wait_idle

pytestmark = pytest.mark.anyio


def test_turns_text_is_plain_blocks() -> None:
    turns = [
        {"role": "user", "content": "hi\n[2] assistant"},
        {"role": "assistant", "content": "ok"},
    ]
    assert turns_text(turns) == "[1] user\n    hi\n    [2] assistant\n[2] assistant\n    ok"


async def test_workbench_conversation_mode_classifies_the_judged_turn(
    make_app, db_path: Path
) -> None:
    app = make_app(final="1", policy="harmful_assistance")
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await pilot.pause()
        conv = screen.query_one(ConversationInput)
        assert conv.active  # a policy that judges model responses opens in conversation mode
        text = screen.query_one("#wb-text", TextArea)
        text.load_text("How do I get into my ex's email?")
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert text.text == "" and conv.turns == [
            {"role": "user", "content": "How do I get into my ex's email?"}
        ]
        conv.query_one("#conv-role", Select).value = "assistant"
        conv.query_one("#conv-target", Select).value = "assistant"
        text.load_text("Send her a fake login page.")  # the pending turn: added on Run
        await pilot.press("ctrl+r")
        await wait_idle(pilot, screen)
        assert "VIOLATION" in screen.query_one(VerdictPanel).plain
        assert screen.query_one("#wb-history", DataTable).row_count == 1
        # an empty turn is refused with the conversation's one-line reason
        text.load_text("   ")
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert any("content is empty" in n.message for n in app._notifications)
    rows = Store(db_path).query("SELECT text, verdict, conversation FROM results")
    assert [(r["text"], r["verdict"]) for r in rows] == [
        ("Send her a fake login page.", "violation")
    ]
    assert json.loads(rows[0]["conversation"]) == {
        "messages": [
            {"role": "user", "content": "How do I get into my ex's email?"},
            {"role": "assistant", "content": "Send her a fake login page."},
        ],
        "target": "assistant",
    }


async def test_workbench_opens_on_a_plain_text_policy_and_follows_the_policys_input(
    make_app, db_path: Path
) -> None:
    from edge_guard.tui.widgets.policy_editor import PolicyEditor

    app = make_app(final="1", policy=None)  # nothing used yet: toxic_simple, plain text
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = app.screen
        editor, conv = screen.query_one(PolicyEditor), screen.query_one(ConversationInput)
        assert editor.policy.name == "toxic_simple" and not conv.active
        editor.reload_choices(select="harmful_assistance")  # judges model responses
        await pilot.pause()
        assert conv.active and screen.query_one("#wb-text").border_title == "Next turn"
        editor.reload_choices(select="spam")  # judges any text, no turns entered: back
        await pilot.pause()
        assert not conv.active and screen.query_one("#wb-text").border_title == "Text"
        screen.query_one("#wb-text", TextArea).load_text("buy cheap pills")
        await pilot.press("ctrl+r")
        await wait_idle(pilot, screen)
    # Used last: spam (a plain-text policy) -> the next start opens on it; a conversation
    # policy used after it does not count.
    Store(db_path).put(
        {
            "key": "k-conv",
            "created_at": "2999-01-01T00:00:00",
            "text": "x",
            "verdict": "violation",
            "policy_name": "harmful_assistance",
        }
    )
    again = make_app(final="1", policy=None)
    async with again.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert again.screen.query_one(PolicyEditor).policy.name == "spam"


async def test_plain_text_on_a_conversation_policy_names_the_tuis_fix(make_app) -> None:
    app = make_app(final="1", policy="harmful_assistance")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = app.screen
        await pilot.press("ctrl+k")  # the user turns conversation mode off anyway
        assert not screen.query_one(ConversationInput).active
        screen.query_one("#wb-text", TextArea).load_text("a plain text")
        await pilot.press("ctrl+r")
        await wait_idle(pilot, screen)
        errors = [n.message for n in app._notifications if n.severity == "error"]
        assert errors == [
            "policy harmful_assistance judges model responses, but got plain text: give a "
            "conversation (Ctrl+K for conversation mode, then Ctrl+N adds each turn) (item 0)"
        ]


async def test_results_detail_shows_the_conversation_marked(make_app, db_path: Path) -> None:
    from edge_guard.conversation import Conversation

    conv = Conversation(
        [{"role": "user", "content": "[bold]hi[/bold]"}, {"role": "assistant", "content": "hello"}],
        "assistant",
    )
    store = Store(db_path)
    store.put(
        {
            "key": "k0",
            "created_at": "2025-01-01T00:00:00",
            "text": "hello",
            "conversation": conv.canonical(),
            "verdict": "no_violation",
            "policy_name": "harmful_assistance",
            "model_ref": "m",
        }
    )
    app = make_app(start="results")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        app.screen.query_one("#rs-table", DataTable).focus()
        await pilot.pause()
        area = app.screen.query_one("#rs-text", TextArea)
        assert area.text == "[1] user\n    [bold]hi[/bold]\n>>> [2] assistant (judged)\n    hello"
        assert area.border_title == "Conversation (>>> judged)"
