"""Workbench: classify with streaming reasoning, cache, copy, cancel, errors, save a policy edit."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Select, Static, TextArea

from edge_guard.engine.sampling import ForcedTokens, harmony_script
from edge_guard.policy.core import load_policy
from edge_guard.store import Store
from edge_guard.tui.screens.dialogs import SavePolicyScreen
from edge_guard.tui.widgets.verdict import VerdictPanel
from tests.tui.conftest import SIZE, settle, shown, until

pytestmark = pytest.mark.anyio


async def wait_idle(pilot, screen, attr: str = "running") -> None:  # type: ignore[no-untyped-def]
    """Until `screen.<attr>` is off and the app's workers have ended, their messages handled."""
    await until(pilot, lambda: not getattr(screen, attr), f"the screen's {attr!r} to end")
    await settle(pilot)


def panel(app) -> str:  # type: ignore[no-untyped-def]
    return app.screen.query_one(VerdictPanel).plain


def notes(app) -> list[str]:  # type: ignore[no-untyped-def]
    return [n.message for n in app._notifications]


async def classify(pilot, app, text: str, key: str = "ctrl+r") -> None:  # type: ignore[no-untyped-def]
    app.screen.query_one("#wb-text", TextArea).load_text(text)
    await pilot.press(key)
    await wait_idle(pilot, app.screen)


async def test_classify_streams_reasoning_and_shows_verdict(make_app, db_path: Path) -> None:
    app = make_app(final="1", analysis="It insults a person directly.")
    async with app.run_test(size=SIZE) as pilot:
        await classify(pilot, app, "you are an idiot")
        assert "VIOLATION" in panel(app) and "P(violation)" in panel(app)
        assert "answer: 1" in panel(app)
        screen = app.screen
        assert screen.query_one("#wb-reasoning", TextArea).text == "It insults a person directly."
        assert screen.query_one("#wb-history", DataTable).row_count == 1
    rows = Store(db_path).query("SELECT text, verdict, final, policy_name FROM results")
    assert rows == [
        {
            "text": "you are an idiot",
            "verdict": "violation",
            "final": "1",
            "policy_name": "toxic_simple",
        }
    ]


async def test_second_run_is_served_from_the_store_and_fresh_rerun_generates(
    make_app, db_path
) -> None:
    app = make_app(final="0", analysis="Friendly.")
    async with app.run_test(size=SIZE) as pilot:
        await classify(pilot, app, "have a nice day")
        assert "NO VIOLATION" in panel(app) and "[stored]" not in panel(app)
        await classify(pilot, app, "have a nice day")
        assert "[stored]" in panel(app)
        assert app.screen.query_one("#wb-reasoning", TextArea).text == "Friendly."
        await classify(pilot, app, "have a nice day", key="ctrl+f")
        assert "NO VIOLATION" in panel(app) and "[stored]" not in panel(app)
    assert Store(db_path).query("SELECT COUNT(*) AS n FROM results")[0]["n"] == 1


async def test_copy_puts_the_result_on_the_clipboard(make_app) -> None:
    app = make_app(final="1", analysis="Insult.")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+r")  # no text yet: a warning, nothing runs
        await pilot.pause()
        assert any("type a text" in n for n in notes(app))
        assert not app.screen.running
        await pilot.press("ctrl+o")
        assert any("nothing to copy" in n for n in notes(app))
        await classify(pilot, app, "you fool")
        await pilot.press("ctrl+o")
        assert "verdict: violation" in app.clipboard
        assert "text: you fool" in app.clipboard and "Insult." in app.clipboard


async def test_missing_model_is_an_error_notification_not_a_crash(make_app) -> None:
    app = make_app(model="no-such-model:q1")
    async with app.run_test(size=SIZE) as pilot:
        await classify(pilot, app, "hello")
        assert "unknown model" in panel(app)
        assert any("unknown model 'no-such-model:q1'" in n for n in notes(app))
        assert app.screen.query_one("#wb-run").disabled is False


async def test_controls_start_from_the_settings_and_a_bad_value_names_its_control(
    make_app, db_path
) -> None:
    from edge_guard.settings.resolve import resolve_settings

    spec = resolve_settings(
        {"effort": "low", "reasoning": "none", "max_tokens": 77}, env={}, config={}
    )
    app = make_app(settings=spec)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        assert (
            screen.query_one("#wb-effort", Select).value,
            screen.query_one("#wb-path", Select).value,
            screen.query_one("#wb-max-tokens", Input).value,
        ) == ("low", "none", "77")
        screen.query_one("#wb-max-tokens", Input).value = "0"
        await classify(pilot, app, "hello")
        assert notes(app)[-1] == "the max tokens box = '0': must be >= 1"
        assert not screen.running and Store(db_path).query("SELECT key FROM results") == []


async def test_escape_cancels_a_generation_and_stores_nothing(make_app, db_path) -> None:
    started, release = threading.Event(), threading.Event()

    class Slow:
        cache_id = "slow"

        def __init__(self, script: list[int]) -> None:
            self.inner = ForcedTokens(script)

        def __call__(self, ids, logits):  # type: ignore[no-untyped-def]
            started.set()
            release.wait(10)
            return self.inner(ids, logits)

    def steer(clf, texts):  # type: ignore[no-untyped-def]
        return [Slow(harmony_script(clf.backend.vocab(), final="1")) for _ in texts]

    app = make_app(final=None, steer=steer)
    async with app.run_test(size=SIZE) as pilot:
        app.screen.query_one("#wb-text", TextArea).load_text("slow text")
        await pilot.press("ctrl+r")
        await until(pilot, started.is_set, "the generation's first token")
        assert app.screen.running
        await pilot.press("escape")
        release.set()
        await wait_idle(pilot, app.screen)
        assert "cancelled" in panel(app)
        assert not app.models.busy
    assert Store(db_path).query("SELECT COUNT(*) AS n FROM results")[0]["n"] == 0


async def test_status_line_counts_tokens_and_checks_the_format(make_app) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        status = app.screen.query_one("#policy-status", Static)
        await until(pilot, lambda: "tokens (prompt prefix" in shown(status), "the token count")
        text = shown(status)
        assert "binary 0/1" in text and "built-in parser" in text
        area = app.screen.query_one("#policy-text", TextArea)
        area.load_text("Decide if the message is rude. Answer yes or no.")
        await until(pilot, lambda: "edited" in shown(status), "the status of the edit")
        text = shown(status)
        assert "edited" in text and "never mentions" in text


async def test_save_as_writes_a_new_policy_and_keeps_the_original(
    make_app, edge_guard_home, db_path
) -> None:
    original = load_policy("toxic_simple").text
    app = make_app(final="1")
    async with app.run_test(size=SIZE) as pilot:
        area = app.screen.query_one("#policy-text", TextArea)
        area.load_text(original + "\nAlso toxic: spam links.\n")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, SavePolicyScreen)
        name_input = app.screen.query_one("#save-name", Input)
        assert name_input.value == "toxic_simple-2"
        name_input.value = "toxic_simple"  # a shipped policy's name: refused, nothing written
        await pilot.press("enter")
        await settle(pilot)
        assert any("already exists" in n for n in notes(app))
        assert not (edge_guard_home / "policies" / "toxic_simple").exists()
        await pilot.press("ctrl+s")
        await pilot.pause()
        name_input = app.screen.query_one("#save-name", Input)
        name_input.value = "toxic_spam"
        await pilot.press("enter")
        await until(pilot, lambda: not isinstance(app.screen, SavePolicyScreen), "the dialog")
        await settle(pilot)
        saved = edge_guard_home / "policies" / "toxic_spam"
        assert (saved / "policy.md").read_text().endswith("Also toxic: spam links.\n")
        assert load_policy(str(saved)).output == load_policy("toxic_simple").output
        assert load_policy("toxic_simple").text == original
        assert app.screen.query_one("#policy-select", Select).value == str(saved)
        # classifying now files results under the new policy's name
        await classify(pilot, app, "buy cheap pills here")
    assert Store(db_path).query("SELECT policy_name FROM results") == [
        {"policy_name": "toxic_spam"}
    ]


async def test_selecting_a_history_row_shows_the_stored_result(make_app) -> None:
    app = make_app(final="1", analysis="first reasoning")
    async with app.run_test(size=SIZE) as pilot:
        await classify(pilot, app, "first text")
        app.screen.query_one("#wb-text", TextArea).load_text("something else")
        app.screen.query_one("#wb-reasoning", TextArea).load_text("")
        table = app.screen.query_one("#wb-history", DataTable)
        table.focus()
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen.query_one("#wb-text", TextArea).text == "first text"
        assert app.screen.query_one("#wb-reasoning", TextArea).text == "first reasoning"
        assert "[stored]" in panel(app)
