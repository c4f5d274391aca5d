"""Hostile data on every TUI screen (issue 16 item 6): texts, answers, reasoning, run names,
policy names, model labels and paths that contain Rich/Textual markup (`[/]`, `[bold]`,
`[link=...]`) and terminal escape sequences. Every screen opens, its rows are selected, the app
keeps running, and the data is shown literally (escape sequences as visible escapes)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Select, Static, TextArea

from edge_guard.store import Store
from tests.tui.conftest import SIZE, factory, settle, shown, steer_to, until
from tests.tui.test_workbench import classify, notes, panel, wait_idle

pytestmark = pytest.mark.anyio

MARKUP = "hostile [/] text [bold]x[/bold] [link=https://evil.example]click[/link]"
ESC = "\x1b]0;pwned\x07\x1b[2J"
TEXT = f"{MARKUP} {ESC}"
TEXT_SHOWN = f"{MARKUP} \\x1b]0;pwned\\x07\\x1b[2J"  # what a one-line cell shows
ANSWER = "[/] [bold]1[/bold]"
REASONING = f"I think [/] [link=https://evil.example]so[/link] {ESC}"
RUN = "run [/] x [bold]b[/bold]"
POLICY = "pol [/] [bold]p[/bold]"


def rows_of(table: DataTable) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def hostile_policy(home: Path) -> Path:
    """A policy folder (in the data dir, so every policy list shows it) with a hostile name,
    description and golden cases."""
    from edge_guard.paths import data_dir

    folder = data_dir() / "policies" / "evil [bold]pol"
    folder.mkdir(parents=True)
    (folder / "policy.md").write_text("Answer 1 if the text is toxic, else 0.\n")
    (folder / "policy.toml").write_text(
        f"name = {json.dumps(POLICY)}\ndescription = {json.dumps(MARKUP)}\n"
    )
    (folder / "cases.jsonl").write_text(
        json.dumps({"id": f"case {MARKUP}", "text": TEXT, "expected": 1})
        + "\n"
        + json.dumps({"text": f"second {MARKUP}", "expected": 0, "note": MARKUP})
        + "\n"
    )
    return folder


def put_results(db: Path) -> None:
    store = Store(db)
    store.put(
        {
            "key": "h1",
            "created_at": "2025-01-01T00:00:00",
            "text": TEXT,
            "verdict": "undetermined",
            "policy_name": POLICY,
            "model_ref": f"m {MARKUP}",
            "final": ANSWER,
            "reasoning": REASONING,
            "error": f"boom {MARKUP} {ESC}",
        }
    )


def hostile_runs(tmp_path: Path, db: Path, model: Path, policy: Path) -> None:
    """Two runs over one hostile dataset that disagree on one item (for Runs and Compare)."""
    from edge_guard.runs.batch import run_dataset
    from edge_guard.tui.jobs import CancelFlag, ModelAccess, RunOptions

    data = tmp_path / "hostile.jsonl"
    data.write_text(
        json.dumps({"text": TEXT, "label": 1, "id": f"id {MARKUP}"})
        + "\n"
        + json.dumps({"text": f"calm {MARKUP}", "label": 0})
        + "\n"
    )
    store = Store(db)
    access = ModelAccess(factory)
    for name, answer in ((RUN, "1"), (f"other {RUN}", "0")):
        clf = access.classifier(
            str(policy), RunOptions(model=str(model), max_tokens=64), store=store, flag=CancelFlag()
        )
        steer = steer_to(answer, REASONING)
        run_dataset(
            data, clf, name=name, steer=lambda _i, row, clf=clf, s=steer: s(clf, [row.text])[0]
        )


# -- Workbench -----------------------------------------------------------------------------------
async def test_workbench_shows_hostile_answer_reasoning_and_names(
    make_app, db_path: Path, edge_guard_home: Path
) -> None:
    policy = hostile_policy(edge_guard_home)
    app = make_app(final=ANSWER, analysis=REASONING, policy=str(policy))
    async with app.run_test(size=SIZE) as pilot:
        await classify(pilot, app, TEXT)
        screen = app.screen
        assert app.is_running and app.current_mode == "workbench"
        assert f"answer: {ANSWER}" in panel(app)
        assert screen.query_one("#wb-reasoning", TextArea).text == REASONING
        table = screen.query_one("#wb-history", DataTable)
        assert rows_of(table)[0][4] == TEXT_SHOWN[:49] + "…"
        assert rows_of(table)[0][3] == ANSWER[:11] + "…"
        assert table._border_title.plain == f"History of {POLICY} · 1 stored (• = this version)"
        assert screen.query_one("PolicyEditor")._border_title.plain == f"Policy · {POLICY}"
        table.focus()
        await pilot.press("enter")  # show the stored row
        await settle(pilot)
        assert f"answer: {ANSWER}" in panel(app)
        await pilot.press("ctrl+s")  # the save dialog quotes the policy name
        await until(pilot, lambda: app.screen.query(".dialog-help"), "the save dialog")
        await settle(pilot)
        assert POLICY in shown(app.screen.query_one(".dialog-help", Static))
        await pilot.press("escape")
        await settle(pilot)
        assert app.is_running
    row = Store(db_path).query("SELECT text, final, reasoning, policy_name FROM results")[0]
    assert row == {"text": TEXT, "final": ANSWER, "reasoning": REASONING, "policy_name": POLICY}


# -- Results -------------------------------------------------------------------------------------
async def test_results_lists_and_shows_hostile_rows(make_app, db_path: Path) -> None:
    put_results(db_path)
    app = make_app(start="results")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = app.screen
        table = screen.query_one("#rs-table", DataTable)
        row = rows_of(table)[0]
        assert row[1] == POLICY[:19] + "…" and row[6] == TEXT_SHOWN[:69] + "…"
        table.focus()
        await settle(pilot)
        assert app.is_running
        assert f"answer: {ANSWER}" in panel(app)
        assert f"error: boom {MARKUP} \\x1b]0;pwned\\x07\\x1b[2J" in panel(app)
        assert screen.query_one("#rs-text", TextArea).text == TEXT
        assert screen.query_one("#rs-reasoning", TextArea).text == REASONING
        policy_select = screen.query_one("#rs-policy", Select)
        policy_select.value = POLICY
        await settle(pilot)
        assert table.row_count == 1 and app.is_running


async def test_a_hostile_text_shown_whole_in_a_cell_shows_its_escapes(
    make_app, db_path: Path
) -> None:
    """A text short enough for its cell: its escape sequences are visible, never obeyed."""
    Store(db_path).put(
        {
            "key": "h2",
            "created_at": "2025-01-01T00:00:00",
            "text": f"hi {ESC}",
            "verdict": "violation",
            "policy_name": "p",
            "model_ref": "m",
            "final": "1",
        }
    )
    app = make_app(start="results")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        row = rows_of(app.screen.query_one("#rs-table", DataTable))[0]
        assert row[6] == "hi \\x1b]0;pwned\\x07\\x1b[2J"
        assert app.is_running


# -- Runs ----------------------------------------------------------------------------------------
async def test_runs_lists_and_evaluates_a_hostile_run(
    make_app, tmp_path: Path, db_path: Path, tiny_o200k_model: Path, edge_guard_home: Path
) -> None:
    policy = hostile_policy(edge_guard_home)
    hostile_runs(tmp_path, db_path, tiny_o200k_model, policy)
    app = make_app(start="runs")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = app.screen
        table = screen.query_one("#rn-runs", DataTable)
        names = sorted(r[0] for r in rows_of(table))
        assert names == [f"other {RUN}", RUN]
        assert all(r[3] == POLICY[:15] + "…" for r in rows_of(table))
        table.focus()
        table.move_cursor(row=[r[0] for r in rows_of(table)].index(RUN))
        await pilot.press("enter")
        metrics = screen.query_one("#rn-metrics", Static)
        await until(pilot, lambda: RUN in shown(metrics), "the run's evaluation")
        assert app.is_running
        assert shown(metrics).startswith(f"{RUN}  [done]  2/2 items · policy {POLICY} · model ")
        # a policy choice with a hostile folder name is listed literally
        labels = [str(p) for p, _v in screen.query_one("#rn-policy", Select)._options]
        assert "evil [bold]pol" in labels


# -- Compare -------------------------------------------------------------------------------------
async def test_compare_shows_hostile_runs_and_flips(
    make_app, tmp_path: Path, db_path: Path, tiny_o200k_model: Path, edge_guard_home: Path
) -> None:
    policy = hostile_policy(edge_guard_home)
    hostile_runs(tmp_path, db_path, tiny_o200k_model, policy)
    app = make_app(start="compare")
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        screen.query_one("#cp-a", Select).value = RUN
        screen.query_one("#cp-b", Select).value = f"other {RUN}"
        flips = screen.query_one("#cp-flips", DataTable)
        await until(pilot, lambda: flips.row_count == 2, "the two label flips")
        await settle(pilot)
        assert app.is_running
        summary = shown(screen.query_one("#cp-matrix", Static))
        assert f"A {RUN}\nB other {RUN}\n2 shared items" in summary
        assert sorted(r[3] for r in rows_of(flips)) == sorted(
            [TEXT_SHOWN[:69] + "…", f"calm {MARKUP}"[:69] + "…"]
        )
        flips.focus()
        await settle(pilot)
        assert REASONING in screen.query_one("#cp-reason-a", TextArea).text
        assert app.is_running


# -- Study ---------------------------------------------------------------------------------------
async def test_study_shows_hostile_items_and_model_labels(
    make_app, tmp_path: Path, db_path: Path, tiny_o200k_model: Path
) -> None:
    from edge_guard.study import StudyConfig, run_study
    from edge_guard.tui.jobs import CancelFlag, ModelAccess, RunOptions

    a = tmp_path / "sg [i]x.gguf"
    b = tmp_path / "base [link=evil]y.gguf"
    a.symlink_to(tiny_o200k_model)
    b.symlink_to(tiny_o200k_model)
    data = tmp_path / "opinions.jsonl"
    data.write_text(
        json.dumps({"id": f"i [/] {ESC}", "topic": f"topic {MARKUP}", "text": TEXT})
        + "\n"
        + json.dumps({"id": "i2", "topic": "t", "text": "plain"})
        + "\n"
    )
    store = Store(db_path)
    access, clfs = ModelAccess(factory), {}

    def make(model: str):  # type: ignore[no-untyped-def]
        clfs[model] = access.classifier(
            "is_good", RunOptions(model=model, max_tokens=64), store=store, flag=CancelFlag()
        )
        return clfs[model]

    def steer(model: str, item, _r: int):  # type: ignore[no-untyped-def]
        answer = "5" if model == str(b) else "1"
        return steer_to(answer, REASONING)(clfs[model], [item.text])[0]

    run_study(
        StudyConfig(models=[str(a), str(b)], dataset=str(data)),
        name=f"study {RUN}",
        store=store,
        classifier_factory=make,
        steer=steer,
    )
    app = make_app(start="study")
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        table = screen.query_one("#st-divergent", DataTable)
        await until(pilot, lambda: table.row_count == 2, "the two divergent items")
        await settle(pilot)
        assert app.is_running
        texts = sorted(r[3] for r in rows_of(table))
        assert texts == sorted([TEXT_SHOWN[:59] + "…", "plain"])
        assert f"topic {MARKUP}"[:29] + "…" in [r[2] for r in rows_of(table)]
        chart = shown(screen.query_one("#st-chart"))
        assert "sg [i]x" in chart and "base [link=evil]y" in chart
        assert "sg [i]x vs base [link=evil]y" in shown(screen.query_one("#st-stats", Static))
        options = [str(p) for p, _v in screen.query_one("#st-run", Select)._options]
        assert f"study {RUN} [done]" in options
        table.focus()
        await settle(pilot)
        assert REASONING in screen.query_one("#st-reason-a", TextArea).text
        assert app.is_running


# -- Tests ---------------------------------------------------------------------------------------
async def test_tests_screen_runs_hostile_cases(make_app, edge_guard_home: Path) -> None:
    policy = hostile_policy(edge_guard_home)
    app = make_app(final=ANSWER, analysis=REASONING, policy=str(policy), start="tests")
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        assert screen.query_one("#ts-policy", Select).value == str(policy)
        await pilot.press("ctrl+r")
        await wait_idle(pilot, screen)
        assert app.is_running
        table = screen.query_one("#ts-cases", DataTable)
        rows = rows_of(table)
        assert sorted(r[1] for r in rows) == sorted(
            [f"case {MARKUP}"[:29] + "…", f"second {MARKUP}"[:29] + "…"]
        )
        assert {r[3] for r in rows} == {"—"}  # the hostile answer is not a label: undetermined
        summary = shown(screen.query_one("#ts-summary", Static))
        assert f"policy {POLICY} version v1" in summary
        table.focus()
        await settle(pilot)
        assert TEXT in screen.query_one("#ts-detail", TextArea).text
        assert app.is_running


# -- Models --------------------------------------------------------------------------------------
async def test_models_shows_a_hostile_model_path(
    make_app, tmp_path: Path, tiny_model: Path
) -> None:
    from edge_guard.registry.manage import add_local

    folder = tmp_path / "x [" / "] [bold]m"  # the path reads `x [/] [bold]m/...`
    folder.mkdir(parents=True)
    path = folder / "tiny.gguf"
    shutil.copyfile(tiny_model, path)  # (a fresh copy: its header is read, not cached)
    add_local(path, "mine:evil")
    app = make_app(model="mine:evil", start="models")
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        table = screen.query_one("#md-table", DataTable)
        ids = [str(k.value) for k in table.rows]
        table.move_cursor(row=ids.index("mine:evil"))
        info = screen.query_one("#md-info", Static)
        await until(pilot, lambda: "memory fit" in shown(info), "the model's info")
        assert app.is_running
        assert str(path) in shown(info).replace("\n", "")
        app.notify(f"note {MARKUP} {ESC}")
        await settle(pilot)
        assert notes(app)[-1] == f"note {MARKUP} \\x1b]0;pwned\\x07\\x1b[2J"
        assert app.is_running


async def test_runs_screen_starts_a_run_with_a_hostile_name(
    make_app, tmp_path: Path, db_path: Path
) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"text": TEXT, "label": 1}) + "\n")
    app = make_app(final=ANSWER, analysis=REASONING, start="runs")
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        screen.query_one("#rn-dataset", Input).value = str(data)
        screen.query_one("#rn-name", Input).value = RUN
        await pilot.press("ctrl+r")
        await wait_idle(pilot, screen)
        assert app.is_running
        assert shown(screen.query_one("#rn-rate", Static)).strip() == f"done · {RUN}"
        assert f"run {RUN} finished" in notes(app)
        assert [r[0] for r in rows_of(screen.query_one("#rn-runs", DataTable))] == [RUN]
    assert Store(db_path).query("SELECT name FROM runs") == [{"name": RUN}]
