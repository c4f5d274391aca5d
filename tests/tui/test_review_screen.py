"""The Review screen (issue 30) driven with Pilot: label with one key each, notes and tags,
the reviewed/remaining counter, promote to cases, run the policy's tests and see them there;
hostile data shown literally."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Select, Static, TextArea

from edge_guard.store import Store
from tests.test_review import store_run, write_policy
from tests.tui.conftest import SIZE, settle, shown, until
from tests.tui.test_hostile_tui import ESC, MARKUP, REASONING
from tests.tui.test_workbench import wait_idle

pytestmark = pytest.mark.anyio

COMMENTS = [
    {"text": f"comment {i}", "verdict": "no_violation", "p": 0.1 * i, "gold": i % 2 == 1}
    for i in range(8)
]
ANSWERS = {"you are an idiot": "1", "thank you kindly": "0"}


def answer(text: str) -> str:
    return ANSWERS.get(text, "1" if text in ("comment 0", "comment 2") else "0")


def counter(app) -> str:  # type: ignore[no-untyped-def]
    return shown(app.screen.query_one("#rv-counter", Static))


async def prompt(pilot, app, key: str, value: str) -> None:  # type: ignore[no-untyped-def]
    """Press `key` (n / t), type `value` into the dialog, Enter."""
    await pilot.press(key)
    await pilot.pause()
    app.screen.query_one("#prompt-input", Input).value = value
    await pilot.press("enter")
    await pilot.pause()


async def test_review_five_promote_three_and_test_the_policy(
    make_app, db_path: Path, tmp_path: Path
) -> None:
    folder = write_policy(tmp_path / "rude")
    store_run(db_path, "r", COMMENTS)
    app = make_app(final=answer, start="review")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = app.screen
        assert screen.query_one("#rv-run", Select).value == "r"  # the latest run, loaded
        assert "reviewed 0 / remaining 8" in counter(app)
        screen.query_one("#rv-queue", Select).value = "all"
        await pilot.pause()
        screen.query_one("#rv-policy", Input).value = str(folder)
        table = screen.query_one("#rv-items", DataTable)
        table.focus()
        await pilot.press("1")  # item 0: violation, then the next item
        await pilot.press("0")  # item 1
        await prompt(pilot, app, "n", "sarcasm [bold]is[/bold] rude")  # held for item 2
        await prompt(pilot, app, "t", "sarcasm, edge")
        assert "held for the next label: sarcasm [bold]is[/bold] rude [sarcasm, edge]" in (
            shown(screen.query_one("#rv-detail", Static))
        )
        await pilot.press("1")  # item 2, with the note and tags
        await pilot.press("s")  # item 3: skip
        await pilot.press("0")  # item 4
        assert "reviewed 5 / remaining 3" in counter(app)
        assert table.cursor_row == 5
        rows = Store(db_path).query(
            "SELECT idx, label, note, tags, source FROM review_decisions ORDER BY id"
        )
        assert [(r["idx"], r["label"]) for r in rows] == [
            (0, "violation"),
            (1, "no_violation"),
            (2, "violation"),
            (3, "skip"),
            (4, "no_violation"),
        ]
        assert rows[2]["note"] == "sarcasm [bold]is[/bold] rude"
        assert json.loads(rows[2]["tags"]) == ["sarcasm", "edge"]
        assert {r["source"] for r in rows} == {"tui"}
        # promote items 0, 1 and 2 (arrows move; p promotes the highlighted item)
        for _ in range(5):
            await pilot.press("up")
        for _ in range(3):
            await pilot.press("p")
            await pilot.press("down")
        await pilot.pause()
        lines = (folder / "cases.jsonl").read_text().splitlines()
        added = [json.loads(x) for x in lines[2:]]
        assert [(c["text"], c["expected"]) for c in added] == [
            ("comment 0", "1"),
            ("comment 1", "0"),
            ("comment 2", "1"),
        ]
        assert added[2]["note"] == "sarcasm [bold]is[/bold] rude"
        assert added[2]["tags"] == ["sarcasm", "edge", "review"]
        assert added[2]["provenance"]["run"] == "r" and added[2]["provenance"]["item"] == 2
        # run the policy's tests from the screen: the promoted cases are in the result
        await pilot.press("ctrl+t")
        await until(pilot, lambda: app.current_mode == "tests", "the Tests screen")
        await settle(pilot)
        assert app.current_mode == "tests"
        await wait_idle(pilot, app.screen)
        cases = app.screen.query_one("#ts-cases", DataTable)
        names = {str(cases.get_row_at(i)[1]) for i in range(cases.row_count)}
        assert names == {"insult", "polite", "comment 0", "comment 1", "comment 2"}
        assert "5/5 passed" in shown(app.screen.query_one("#ts-summary", Static))


async def test_note_on_a_decided_item_keeps_history_and_hostile_data_is_literal(
    make_app, db_path: Path
) -> None:
    items = [
        {
            "text": f"{ESC} {MARKUP}",
            "verdict": "violation",
            "p": 0.9,
            "gold": False,
            "reasoning": REASONING,
        },
        {
            "text": "you fool",
            "verdict": "no_violation",
            "p": 0.4,
            "gold": True,
            "conversation": {
                "messages": [
                    {"role": "user", "content": "[bold]hi[/bold]"},
                    {"role": "assistant", "content": "you fool"},
                ],
                "target": "last",
            },
        },
    ]
    store_run(db_path, "r", items)
    app = make_app(final=None, start="review")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = app.screen
        screen.query_one("#rv-queue", Select).value = "all"
        await pilot.pause()
        assert screen.query_one("#rv-text", TextArea).text == f"{ESC} {MARKUP}"
        assert screen.query_one("#rv-reasoning", TextArea).text == REASONING
        table = screen.query_one("#rv-items", DataTable)
        # escapes shown, not obeyed; markup shown literally
        assert str(table.get_row_at(0)[6]).startswith("\\x1b]0;pwned\\x07\\x1b[2J hostile [/] text")
        table.focus()
        await pilot.press("1")
        await pilot.press("up")
        await prompt(pilot, app, "n", "[/] second thoughts")  # decided: a new decision
        detail = shown(screen.query_one("#rv-detail", Static))
        assert "note: [/] second thoughts" in detail and "decision: violation" in detail
        rows = Store(db_path).query("SELECT label, note FROM review_decisions ORDER BY id")
        assert [(r["label"], r["note"]) for r in rows] == [
            ("violation", ""),
            ("violation", "[/] second thoughts"),
        ]
        await pilot.press("down")
        conv = screen.query_one("#rv-text", TextArea)
        assert conv.text.splitlines() == [
            "[1] user",
            "    [bold]hi[/bold]",
            ">>> [2] assistant (judged)",
            "    you fool",
        ]
        assert "conversation (>>> judged)" in str(conv.border_title)
        assert "reviewed 1 / remaining 1" in counter(app)
