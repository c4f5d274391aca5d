"""Workbench with a policy set: one row per policy (verdict, score, answer), reasoning on select."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_guard.store import Store
from tests.test_multi_policy import policies  # noqa: F401 - the fixture (3 policies, set abc)
from tests.test_policy_sets import NAMES
from tests.tui.conftest import SIZE, settle, shown, until


@pytest.mark.anyio
@pytest.mark.usefixtures("policies")
async def test_workbench_runs_a_text_against_a_set(make_app, db_path: Path) -> None:  # type: ignore[no-untyped-def]
    from textual.widgets import Select, TextArea

    from edge_guard.tui.widgets.set_results import SetResults
    from edge_guard.tui.widgets.verdict import VerdictPanel

    app = make_app(final="1", analysis="Reads as a violation.")
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        values = [v for _label, v in screen.query_one("#wb-set", Select)._options]
        assert "abc|separate" in values and "abc|combined" in values
        screen.query_one("#wb-set", Select).value = "abc|separate"
        screen.query_one("#wb-text", TextArea).load_text("some text")
        await pilot.press("ctrl+r")
        await until(pilot, lambda: not screen.running, "the set's run to end")
        await settle(pilot)
        table = screen.query_one(SetResults)
        assert table.display and table.row_count == 3
        assert list(table.results) == NAMES
        assert {str(r.verdict) for r in table.results.values()} == {"violation"}
        assert "set abc (separate): flagged" in str(table.border_title)
        assert "VIOLATION" in screen.query_one(VerdictPanel).plain
        assert screen.query_one("#wb-reasoning", TextArea).text == "Reads as a violation."
        table.focus()
        table.move_cursor(row=2)
        await pilot.press("enter")
        await settle(pilot)
        assert screen.last["policy"] == "gamma" and screen.last["verdict"] == "violation"
    rows = Store(db_path).query("SELECT policy_name FROM results ORDER BY policy_name")
    assert [r["policy_name"] for r in rows] == sorted(NAMES)  # one stored row per policy


@pytest.mark.anyio
@pytest.mark.usefixtures("policies")
async def test_runs_screen_filters_by_policy_and_shows_a_policy_table(
    make_app,
    db_path: Path,  # type: ignore[no-untyped-def]
    tmp_path: Path,
    tiny_model: Path,
) -> None:
    from textual.widgets import DataTable, Select, Static

    from edge_guard.policy.sets import load_set
    from edge_guard.runs.batch import run_dataset
    from edge_guard.runs.multi import execute_multi_run
    from edge_guard.runs.multi_plan import plan_multi_run
    from tests.runs_helpers import make_classifier, write_jsonl

    data = write_jsonl(tmp_path / "d.jsonl", [{"text": f"t{i}", "label": i % 2} for i in range(2)])
    clf = make_classifier(tiny_model, db_path)
    run_dataset(data, clf, name="single")  # toxic_simple
    pset = load_set("abc")
    execute_multi_run(
        plan_multi_run(data, clf, pset, name="multi", label_fields={"alpha": "label"}), clf
    )
    app = make_app(start="runs")
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        table = screen.query_one("#rn-runs", DataTable)
        await settle(pilot)
        assert table.row_count == 2
        screen.query_one("#rn-filter", Select).value = "beta"
        await settle(pilot)
        assert [str(k.value) for k in table.rows] == ["multi"]
        screen.query_one("#rn-filter", Select).value = "toxic_simple"
        await settle(pilot)
        assert [str(k.value) for k in table.rows] == ["single"]
        screen._evaluate("multi")
        metrics = screen.query_one("#rn-metrics", Static)
        await until(pilot, lambda: "any_violation" in shown(metrics), "the run's evaluation")
        text = shown(screen.query_one("#rn-metrics", Static))
        assert "3 policies (separate mode)" in text and "6/6 pairs over 2 texts" in text
        for name in [*NAMES, "macro (mean)", "any_violation"]:
            assert name in text
