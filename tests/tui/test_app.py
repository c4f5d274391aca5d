"""App shell: F-keys switch screens, help, command palette, CLI wiring, core stays Textual-free."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from edge_guard.errors import EdgeGuardError
from edge_guard.tui.app import EdgeGuardApp
from edge_guard.tui.screens.help import HelpScreen
from edge_guard.tui.widgets.navbar import SCREENS
from tests.tui.conftest import SIZE, settle, until

pytestmark = pytest.mark.anyio


async def test_function_keys_and_tab_clicks_switch_screens(make_app) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        assert app.current_mode == "workbench"
        for mode, _title, key in SCREENS[::-1]:
            await pilot.press(key)
            await pilot.pause()
            assert app.current_mode == mode
            assert app.screen.query_one(f"#nav-{mode}").has_class("-active")
            others = [m for m, _t, _k in SCREENS if m != mode]
            assert not any(app.screen.query_one(f"#nav-{m}").has_class("-active") for m in others)
        await pilot.click("#nav-runs")  # the tabs are clickable too
        await pilot.pause()
        assert app.current_mode == "runs"


async def test_help_opens_with_f1_and_closes_with_escape(make_app) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f1")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen)
        assert app.current_mode == "workbench"


async def type_text(pilot, text: str, first: str) -> None:  # type: ignore[no-untyped-def]
    """Type into the palette's search box (set at once: one search, not one per key), then
    wait until its first hit is `first` (the search runs in a worker)."""
    from textual.command import CommandInput, CommandList, CommandPalette

    await until(pilot, lambda: isinstance(pilot.app.screen, CommandPalette), "the palette")
    palette = pilot.app.screen
    palette.query_one(CommandInput).value = text

    def first_hit() -> str:
        hits = palette.query_one(CommandList)
        return str(hits.get_option_at_index(0).prompt) if hits.option_count else ""

    await until(pilot, lambda: first in first_hit(), f"the palette to offer {first!r}")


async def test_command_palette_runs_screen_actions_and_goes_to_screens(make_app) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+p")
        await type_text(pilot, "copy result", "Copy result")
        await pilot.press("enter")
        await settle(pilot)
        # the Workbench's copy action ran: nothing to copy yet, so it says so
        assert any("nothing to copy" in n.message for n in app._notifications)
        await pilot.press("ctrl+p")
        await type_text(pilot, "go to study", "Go to Study")
        await pilot.press("enter")
        await until(pilot, lambda: app.current_mode == "study", "the Study screen")


async def test_start_screen_option(make_app) -> None:
    app = make_app(start="models")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert app.current_mode == "models"


def test_unknown_start_screen_is_a_one_line_error(db_path) -> None:
    with pytest.raises(EdgeGuardError, match="unknown TUI screen 'nope'"):
        EdgeGuardApp(db=db_path, start="nope")


def test_tui_command_is_registered_and_documented() -> None:
    from edge_guard.cli import COMMANDS, main

    assert COMMANDS["tui"] == "edge_guard.cli.tui_cmd:tui"
    out = CliRunner().invoke(main, ["tui", "--help"])
    assert out.exit_code == 0
    assert "--screen" in out.output and "--policy" in out.output


def test_the_core_never_imports_textual() -> None:
    code = """
import importlib, pkgutil, sys
import edge_guard
names = [m.name for m in pkgutil.walk_packages(edge_guard.__path__, 'edge_guard.')]
skip = ('edge_guard.tui', 'edge_guard.cli.tui_cmd', 'edge_guard.__main__')
for name in names:
    if name.startswith(skip):
        continue
    importlib.import_module(name)
    assert 'textual' not in sys.modules, f'{name} imported textual'
print(len(names))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.strip()) > 20


def test_cancel_flags_stop_a_generation_between_tokens(tiny_o200k_model, db_path) -> None:
    from edge_guard.store import Store
    from edge_guard.tui.jobs import Cancelled, ModelAccess, RunOptions
    from tests.tui.conftest import factory

    access = ModelAccess(factory)
    flag = access.new_flag()
    clf = access.classifier(
        "toxic_simple",
        RunOptions(model=str(tiny_o200k_model), max_tokens=8),
        store=Store(db_path),
        flag=flag,
    )
    access.cancel_all()  # what quitting does
    with pytest.raises(Cancelled):
        clf.classify(["anything"])
    assert Store(db_path).query("SELECT COUNT(*) AS n FROM results")[0]["n"] == 0


def test_edge_guard_without_a_command_opens_the_tui(monkeypatch, db_path) -> None:
    from edge_guard.cli import main

    opened: list[EdgeGuardApp] = []
    monkeypatch.setattr(EdgeGuardApp, "run", lambda self: opened.append(self))
    out = CliRunner().invoke(main, [])
    assert out.exit_code == 0, out.output
    assert len(opened) == 1 and opened[0].current_mode == "workbench"
    out = CliRunner().invoke(
        main, ["tui", "--screen", "runs", "--db", str(db_path), "--model", "synth:tiny-o200k"]
    )
    assert out.exit_code == 0, out.output
    assert opened[1].current_mode == "runs" and opened[1].model_ref == "synth:tiny-o200k"
    assert opened[1].store.path == str(db_path)


async def test_review_is_a_tab_a_go_to_entry_a_help_row_and_a_start_screen(
    make_app, monkeypatch, db_path
) -> None:
    """The Review screen is reached like every other one: its F9 tab, Ctrl+P "Go to
    Review", a row in F1 help, and `edge-guard tui --screen review`."""
    from textual.widgets import Markdown

    from edge_guard.cli import main
    from edge_guard.tui.screens.review import ReviewScreen

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        assert str(app.screen.query_one("#nav-review").render()) == "F9 Review"
        await pilot.click("#nav-review")
        await pilot.pause()
        assert app.current_mode == "review" and isinstance(app.screen, ReviewScreen)
        assert app.screen.query_one("#nav-review").has_class("-active")
        await pilot.press("f2")
        await pilot.press("ctrl+p")
        await type_text(pilot, "go to review", "Go to Review")
        await pilot.press("enter")
        await until(pilot, lambda: app.current_mode == "review", "the Review screen")
        await pilot.press("f1")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        help_text = app.screen.query_one("#help-text", Markdown).source
        assert "| F9 | Review | go through a run by queue" in help_text
        assert "| Review (F9) | pick a run and a queue" in help_text
    opened: list[EdgeGuardApp] = []
    monkeypatch.setattr(EdgeGuardApp, "run", lambda self: opened.append(self))
    out = CliRunner().invoke(main, ["tui", "--screen", "review", "--db", str(db_path)])
    assert out.exit_code == 0, out.output
    assert opened[0].current_mode == "review"
