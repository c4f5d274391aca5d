"""Results, Runs, Study, Compare, Models and Tests screens driven with Pilot on a temp store."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Select, Static, TextArea

from edge_guard.store import Store
from tests.tui.conftest import SIZE, factory, settle, shown, steer_to, until
from tests.tui.test_workbench import notes, wait_idle

pytestmark = pytest.mark.anyio


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


LABELLED = [
    {"text": "you are an idiot", "label": 1},
    {"text": "have a nice day", "label": 0},
    {"text": "I will hurt you", "label": 1},
    {"text": "the weather is fine", "label": 0},
]


def toxic_answer(text: str) -> str:
    return "1" if any(w in text for w in ("idiot", "hurt")) else "0"


# -- Results -------------------------------------------------------------------------------------
async def test_results_filters_by_verdict_and_text_and_opens_in_workbench(
    make_app, db_path
) -> None:
    store = Store(db_path)
    rows = [
        ("you are an idiot", "violation"),
        ("have a nice day", "no_violation"),
        ("nice idiot hat", "violation"),
    ]
    for i, (text, verdict) in enumerate(rows):
        store.put(
            {
                "key": f"k{i}",
                "created_at": f"2025-01-0{i + 1}T00:00:00",
                "text": text,
                "verdict": verdict,
                "policy_name": "toxic_simple",
                "model_ref": "m",
            }
        )
    app = make_app(start="results")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        table = app.screen.query_one("#rs-table", DataTable)
        assert table.row_count == 3
        app.screen.query_one("#rs-verdict", Select).value = "violation"
        await pilot.pause()
        assert table.row_count == 2
        app.screen.query_one("#rs-search", Input).value = "nice"
        await pilot.pause()
        assert table.row_count == 1
        table.focus()
        await pilot.pause()
        assert app.screen.query_one("#rs-text", TextArea).text == "nice idiot hat"
        await pilot.press("ctrl+w")
        await until(pilot, lambda: app.current_mode == "workbench", "the Workbench")
        await settle(pilot)
        assert app.current_mode == "workbench"
        assert app.screen.query_one("#wb-text", TextArea).text == "nice idiot hat"


def test_search_results_escapes_like_wildcards(db_path) -> None:
    from edge_guard.tui.screens.results import search_results

    store = Store(db_path)
    for i, text in enumerate(["100% sure", "1000 sure", "a_b", "axb"]):
        store.put({"key": f"k{i}", "text": text, "verdict": "violation", "policy_name": "p"})
    assert [r["text"] for r in search_results(store, text="0%")[0]] == ["100% sure"]
    assert [r["text"] for r in search_results(store, text="a_b")[0]] == ["a_b"]
    assert search_results(store, policy="other")[1] == 0


# -- Runs ----------------------------------------------------------------------------------------
async def test_runs_classifies_a_dataset_with_progress_and_metrics(
    make_app, tmp_path, db_path
) -> None:
    data = write_jsonl(tmp_path / "tiny.jsonl", LABELLED)
    app = make_app(final=toxic_answer, start="runs")
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        screen.query_one("#rn-dataset", Input).value = str(data)
        await pilot.press("ctrl+r")
        await wait_idle(pilot, screen)
        shown_metrics = screen.query_one("#rn-metrics", Static)  # (evaluated by a worker)
        await until(pilot, lambda: "95% CI" in shown(shown_metrics), "the run's evaluation")
        metrics = shown(screen.query_one("#rn-metrics", Static))
        assert re.search(r"accuracy +1\.000", metrics), metrics  # steered to the gold labels
        assert screen.query_one("#rn-progress").percentage == 1.0
        assert screen.query_one("#rn-runs", DataTable).row_count == 1
    store = Store(db_path)
    run = store.query("SELECT name, status, n_items FROM runs")[0]
    assert run["status"] == "done" and run["n_items"] == 4
    assert len(store.run_results(run["name"])) == 4


async def test_runs_reports_a_bad_dataset_as_an_error(make_app, tmp_path) -> None:
    app = make_app(start="runs")
    async with app.run_test(size=SIZE) as pilot:
        app.screen.query_one("#rn-dataset", Input).value = str(tmp_path / "missing.jsonl")
        await pilot.press("ctrl+r")
        await wait_idle(pilot, app.screen)
        assert any("no such dataset file" in n for n in notes(app))
        assert not app.screen.running


# -- Study ---------------------------------------------------------------------------------------
async def test_study_shows_both_distributions_agreement_and_reasonings(
    make_app, tmp_path, tiny_o200k_model
) -> None:
    other = tmp_path / "base.gguf"
    other.symlink_to(tiny_o200k_model)

    def steer(clf, texts):  # type: ignore[no-untyped-def]
        base = clf.backend.model_ref == str(other)
        return steer_to(
            lambda t: str(1 + len(t) % 5) if base else "3",
            "base view" if base else "safeguard view",
        )(clf, texts)

    app = make_app(steer=steer, start="study")
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        screen.query_one("#st-models", Input).value = f"{tiny_o200k_model}, {other}"
        screen.query_one("#st-limit", Input).value = "4"
        await pilot.press("ctrl+r")
        await wait_idle(pilot, screen)
        table = screen.query_one("#st-divergent", DataTable)
        await until(pilot, lambda: table.row_count, "the divergent items")
        chart = shown(screen.query_one("#st-chart"))
        stats = shown(screen.query_one("#st-stats", Static))
        assert "tiny-o200k" in chart and "base" in chart
        assert "exact agreement" in stats
        assert table.row_count >= 1
        table.focus()
        await settle(pilot)
        assert "safeguard view" in screen.query_one("#st-reason-a", TextArea).text
        assert "base view" in screen.query_one("#st-reason-b", TextArea).text


# -- Compare -------------------------------------------------------------------------------------
async def test_compare_shows_agreement_matrix_and_label_flips(
    make_app, tmp_path, db_path, tiny_o200k_model
) -> None:
    from edge_guard.runs.batch import run_dataset
    from edge_guard.tui.jobs import CancelFlag, ModelAccess, RunOptions

    data = write_jsonl(tmp_path / "pair.jsonl", LABELLED)
    store = Store(db_path)
    access = ModelAccess(factory)
    for name, answer in (("all-safe", "0"), ("by-word", None)):
        clf = access.classifier(
            "toxic_simple", RunOptions(model=str(tiny_o200k_model)), store=store, flag=CancelFlag()
        )
        steer = steer_to(answer or toxic_answer)
        run_dataset(
            data, clf, name=name, steer=lambda _i, row, clf=clf, s=steer: s(clf, [row.text])[0]
        )
    app = make_app(start="compare")
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        screen.query_one("#cp-a", Select).value = "all-safe"
        screen.query_one("#cp-b", Select).value = "by-word"
        flips = screen.query_one("#cp-flips", DataTable)
        await until(pilot, lambda: flips.row_count, "the label flips")
        await settle(pilot)
        assert flips.row_count == 2
        summary = shown(screen.query_one("#cp-matrix", Static))
        assert "4 shared items" in summary and "agreement 50.0%" in summary
        flips.focus()
        await settle(pilot)
        assert "verdict: no_violation" in screen.query_one("#cp-reason-a", TextArea).text
        assert "verdict: violation" in screen.query_one("#cp-reason-b", TextArea).text


# -- Models --------------------------------------------------------------------------------------
async def test_models_lists_builds_shows_info_and_pull_errors_offline(make_app) -> None:
    app = make_app(model="synth:tiny-o200k", start="models")
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        table = screen.query_one("#md-table", DataTable)
        ids = [str(k.value) for k in table.rows]
        assert "gpt-oss-safeguard-20b:mxfp4" in ids and "synth:tiny-o200k" in ids
        table.move_cursor(row=ids.index("gpt-oss-safeguard-20b:mxfp4"))
        info = screen.query_one("#md-info", Static)
        await until(pilot, lambda: "gpt-oss-safeguard-20b:mxfp4" in shown(info), "its info")
        assert "not downloaded" in shown(info)
        await pilot.press("ctrl+r")  # pull: offline in tests (HF_HUB_OFFLINE=1)
        await until(pilot, lambda: screen.pulling is None, "the pull to end")
        await settle(pilot)
        assert any("offline" in n for n in notes(app))
        await pilot.press("ctrl+u")
        assert app.model_ref == "gpt-oss-safeguard-20b:mxfp4"
        await pilot.press("f2")
        await pilot.pause()
        assert app.screen.query_one("#wb-model", Input).value == "gpt-oss-safeguard-20b:mxfp4"


# -- Tests ---------------------------------------------------------------------------------------
async def test_tests_screen_runs_golden_cases_failures_first(make_app) -> None:
    app = make_app(final="1", start="tests")
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await pilot.press("ctrl+r")
        await wait_idle(pilot, screen)
        summary = shown(screen.query_one("#ts-summary", Static))
        assert "passed" in summary and "failed" in summary
        table = screen.query_one("#ts-cases", DataTable)
        first = table.get_row_at(0)
        last = table.get_row_at(table.row_count - 1)
        assert str(first[0]) == "fail" and str(last[0]) == "pass"


async def test_workbench_test_key_runs_the_edited_policy_cases(make_app) -> None:
    app = make_app(final="0")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+t")
        await until(pilot, lambda: app.current_mode == "tests", "the Tests screen")
        await settle(pilot)
        assert app.current_mode == "tests"
        await wait_idle(pilot, app.screen)
        assert "passed" in shown(app.screen.query_one("#ts-summary", Static))


async def test_compare_opens_a_saved_comparison(
    make_app, tmp_path, db_path, tiny_o200k_model
) -> None:
    from edge_guard.compare import build_configs, run_compare
    from edge_guard.engine.sampling import ForcedTokens, harmony_script
    from edge_guard.harmony.vocab import o200k_harmony_vocab

    data = write_jsonl(tmp_path / "cmp.jsonl", LABELLED)
    vocab = o200k_harmony_vocab()  # the tiny model's ids are gpt-oss's

    def steer(k, _cfg, _idx, row):  # type: ignore[no-untyped-def]
        answer = "0" if k == 0 else toxic_answer(row.text)
        return ForcedTokens(harmony_script(vocab, final=answer, analysis=f"config {k}"))

    model = str(tiny_o200k_model)
    run_compare(
        data,
        "toxic_simple",
        build_configs([f"{model},name=lenient", f"{model},name=strict,effort=low"]),
        base_opts={"db": str(db_path), "threads": 1, "ctx": 4096, "max_tokens": 64},
        name="lenient-vs-strict",
        steer=steer,
    )
    app = make_app(start="compare")
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        screen.query_one("#cp-saved", Select).value = "lenient-vs-strict"
        flips = screen.query_one("#cp-flips", DataTable)
        matrix = screen.query_one("#cp-matrix", Static)
        # (the two newest runs are compared first, until the saved one loads)
        await until(pilot, lambda: "pairwise agreement" in shown(matrix), "the saved comparison")
        await settle(pilot)
        assert flips.row_count == 2
        summary = shown(screen.query_one("#cp-matrix", Static))
        assert "lenient" in summary and "strict" in summary and "pairwise agreement" in summary
        flips.focus()
        await settle(pilot)
        assert "config 1" in screen.query_one("#cp-reason-b", TextArea).text
