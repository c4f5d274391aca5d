"""Workbench: classify with streaming reasoning, cache, copy, cancel, save a policy edit."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import DataTable, TextArea

from edge_guard.store import Store
from edge_guard.tui.widgets.verdict import VerdictPanel
from tests.tui.conftest import SIZE

pytestmark = pytest.mark.anyio


async def wait_idle(pilot, screen) -> None:  # type: ignore[no-untyped-def]
    for _ in range(400):
        await pilot.pause(0.05)
        if not screen.running:
            break
    await pilot.pause(0.05)


def panel_text(app) -> str:  # type: ignore[no-untyped-def]
    return app.screen.query_one(VerdictPanel).plain


async def test_classify_streams_reasoning_and_shows_verdict(make_app, db_path: Path) -> None:
    app = make_app(final="1", analysis="It insults a person directly.")
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        screen.query_one("#wb-text", TextArea).load_text("you are an idiot")
        await pilot.press("ctrl+r")
        await wait_idle(pilot, screen)
        assert "VIOLATION" in panel_text(app)
        assert "P(violation)" in panel_text(app)
        assert screen.query_one("#wb-reasoning", TextArea).text == "It insults a person directly."
        table = screen.query_one("#wb-history", DataTable)
        assert table.row_count == 1
    rows = Store(db_path).query("SELECT text, verdict, final, policy_name FROM results")
    assert rows == [{"text": "you are an idiot", "verdict": "violation", "final": "1",
                     "policy_name": "toxic_simple"}]  # fmt: skip
