"""Batch runs: steered verdicts land in the store, reruns resume, mismatched configs are
refused, a SIGKILLed run resumes with every item once, Ctrl-C marks the run interrupted."""

from __future__ import annotations

import json
import signal
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_guard.cli import main
from edge_guard.errors import EdgeGuardError
from edge_guard.harmony.vocab import Vocab
from edge_guard.runs.batch import default_run_name, plan_run, run_dataset
from edge_guard.runs.metrics import predictions
from edge_guard.runs.outcomes import evaluate_run
from edge_guard.store import Store
from tests.runs_helpers import (
    HeldRun,
    labelled_rows,
    make_classifier,
    python_m,
    run_item_rows,
    steer_by_want,
    wants_of,
    write_jsonl,
)

REPO = Path(__file__).resolve().parent.parent


def test_steered_run_stores_verdicts_gold_and_evaluates(tmp_path: Path, tiny_model: Path) -> None:
    rows = labelled_rows(21)
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    clf = make_classifier(tiny_model)
    steer = steer_by_want(Vocab.from_gguf(tiny_model), wants_of(rows))
    summary = run_dataset(data, clf, name="r1", steer=steer)
    assert (summary.n_items, summary.n_done, summary.n_new, summary.status) == (21, 21, 21, "done")
    assert clf.store.run("r1")["status"] == "done"
    stored = clf.store.run_results("r1")
    assert [r["idx"] for r in stored] == list(range(21))
    assert [r["item_id"] for r in stored] == [r["id"] for r in rows]
    expected = {"1": "violation", "0": "no_violation", "?": "undetermined"}
    assert [r["verdict"] for r in stored] == [expected[r["want"]] for r in rows]
    assert [r["gold"] for r in stored] == [str(r["label"]) for r in rows]
    ev = evaluate_run(clf.store, "r1", n_resamples=100)
    verdicts = [expected[r["want"]] for r in rows]
    for t in ("excluded", "as_violation", "as_safe"):
        preds = predictions(verdicts, t)
        tp = sum(1 for p, r in zip(preds, rows, strict=True) if p == 1 and r["label"] == 1)
        fp = sum(1 for p, r in zip(preds, rows, strict=True) if p == 1 and r["label"] == 0)
        assert ev["treatments"][t]["confusion"]["tp"] == tp
        assert ev["treatments"][t]["confusion"]["fp"] == fp
    assert ev["verdicts"]["undetermined"] == sum(r["want"] == "?" for r in rows)
    # label scores from the first answer token's logits, for every determined item; the
    # undetermined ones have no score and are counted as left out
    n_und = sum(r["want"] == "?" for r in rows)
    assert (ev["scores"]["n"], ev["scores"]["n_undetermined_left_out"]) == (21 - n_und, n_und)
    assert ev["scores"]["n_left_out"] == n_und == 3


def test_rerun_resumes_and_mismatched_config_is_refused(tmp_path: Path, tiny_model: Path) -> None:
    rows = labelled_rows(8)
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    steer = steer_by_want(Vocab.from_gguf(tiny_model), wants_of(rows))
    clf = make_classifier(tiny_model)
    first = run_dataset(data, clf, steer=steer, limit=6)
    name = first.name
    assert name.startswith("d__toxic_simple__") and name.endswith("__tiny__n6-max64")
    again = run_dataset(data, make_classifier(tiny_model), steer=steer, limit=6)
    assert again.name == name and again.n_new == 0 and again.n_done == 6
    assert len(run_item_rows(clf.store, name)) == 6
    with pytest.raises(
        EdgeGuardError, match=r"different configuration \(effort 'medium' → 'high'\)"
    ):
        run_dataset(data, make_classifier(tiny_model, effort="high"), name=name, limit=6)
    with pytest.raises(EdgeGuardError, match="truncate None → True"):
        run_dataset(data, make_classifier(tiny_model, truncate=True), name=name, limit=6)
    with pytest.raises(EdgeGuardError, match="limit 6 → 7"):
        run_dataset(data, make_classifier(tiny_model), name=name, limit=7)
    write_jsonl(data, rows[:7])  # same path, different bytes
    with pytest.raises(EdgeGuardError, match="dataset_sha256"):
        run_dataset(data, make_classifier(tiny_model), name=name, limit=6)


def test_default_name_reflects_the_configuration(tmp_path: Path, tiny_model: Path) -> None:
    data = write_jsonl(tmp_path / "my data.jsonl", labelled_rows(10))
    a = plan_run(data, make_classifier(tiny_model), limit=4, sample="balanced", seed=2)
    b = plan_run(data, make_classifier(tiny_model, effort="low"))
    assert a.name.startswith("my-data__toxic_simple__")
    assert a.name.endswith("__n4-balanced-s2-max64")
    assert b.name.endswith("effort-low-max64")
    assert a.name == default_run_name(a.config)


def test_killed_run_resumes_with_every_item_once(tmp_path: Path, tiny_model: Path) -> None:
    rows = labelled_rows(40)
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    db = tmp_path / "store.db"
    script = tmp_path / "held_run.py"
    script.write_text(
        textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(REPO)!r})
        from edge_guard.harmony.vocab import Vocab
        from edge_guard.runs.batch import run_dataset
        from tests.runs_helpers import hold_after, make_classifier, steer_by_want
        rows = [json.loads(x) for x in open({str(data)!r})]
        wants = {{r["text"]: r["want"] for r in rows}}
        model = {str(tiny_model)!r}
        clf = make_classifier(model, {str(db)!r}, parallel=2)
        run_dataset({str(data)!r}, clf, name="killme", steer=steer_by_want(Vocab.from_gguf(model), wants),
                    on_result=hold_after(5))
    """)
    )
    run = HeldRun([sys.executable, str(script)], tmp_path / "run.log")
    run.wait_held()  # 5 items stored, the 6th not yet: kill it there
    run.proc.send_signal(signal.SIGKILL)
    run.finish(30)
    store = Store(db)
    before = {r["idx"]: r["key"] for r in run_item_rows(store, "killme")}
    assert len(before) == 5, "the run was not killed after its 5th stored item"
    assert store.run("killme")["status"] == "running"  # killed: nobody could mark it
    clf = make_classifier(tiny_model, db)
    summary = run_dataset(
        data, clf, name="killme", steer=steer_by_want(Vocab.from_gguf(tiny_model), wants_of(rows))
    )
    assert summary.n_new == 40 - len(before)  # only the missing items were classified
    items = run_item_rows(store, "killme")
    assert [r["idx"] for r in items] == list(range(40))  # every item, once
    assert all(before[r["idx"]] == r["key"] for r in items if r["idx"] in before)
    assert store.run("killme")["status"] == "done"
    results = store.run_results("killme")
    assert len(results) == 40 and len({r["key"] for r in results}) == 40


def test_ctrl_c_marks_interrupted_and_the_same_command_resumes(
    tmp_path: Path, tiny_model: Path
) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", labelled_rows(40))
    db = tmp_path / "store.db"
    args = [
        "run",
        str(data),
        "-p",
        "toxic_simple",
        "-m",
        str(tiny_model),
        "--max-tokens",
        "24",
        "--db",
        str(db),
        "--name",
        "ctrl-c",
    ]
    # The child holds once two items are stored, until the test's SIGINT: the interrupt
    # lands mid-run however fast the machine is.
    argv = python_m("edge_guard", *args, "--parallel", "1", hold_after_items=2)
    run = HeldRun(argv, tmp_path / "run.log", cwd=REPO)
    run.wait_held()
    run.proc.send_signal(signal.SIGINT)
    rc, out = run.finish(), run.output()
    assert rc == 130, out
    assert "interrupted: 2/40 items saved" in out and "--name ctrl-c" in out
    assert "resume with: edge-guard run" in out
    store = Store(db)
    assert store.run("ctrl-c")["status"] == "interrupted"
    assert len(store.done_indices("ctrl-c")) == 2  # the two items stored before the hold
    res = CliRunner().invoke(main, [*args, "--json"])
    assert res.exit_code == 0, res.output
    assert "resuming: 2 done, 38 to do" in res.stderr
    summary = json.loads(res.stdout)["summary"]
    assert summary["n_new"] == 38 and summary["status"] == "done"
    assert len(run_item_rows(store, "ctrl-c")) == 40


def test_cli_run_reports_malformed_rows_and_prints_eval(tmp_path: Path, tiny_model: Path) -> None:
    good = [json.dumps({"text": f"t{i}", "label": i % 2}) for i in range(4)]
    p = tmp_path / "mixed.jsonl"
    p.write_bytes(
        "\n".join(
            [
                good[0],
                "{not json",
                good[1],
                '{"label": 1}',
                good[2],
                good[3],
                '{"text": "x", "label": "perhaps"}',
            ]
        ).encode()
        + b"\n"
    )
    args = ["run", str(p), "-p", "toxic_simple", "-m", str(tiny_model), "--max-tokens", "4"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "warning: 2 malformed rows skipped (line 2: invalid JSON" in res.stderr
    assert "line 4: missing text field 'text'" in res.stderr
    assert "gold labels that do not map" in res.stderr and "'perhaps'" in res.stderr
    assert "undetermined excluded (headline)" in res.stdout
    assert "undetermined = safe" in res.stdout and "undetermined = violation" in res.stdout
    run = Store().query("SELECT name, notes, n_items FROM runs")[0]
    notes = json.loads(run["notes"])
    assert run["n_items"] == 5 and notes["malformed"] == 2
    assert notes["malformed_first"][0] == [2, notes["malformed_first"][0][1]]
    assert notes["unmapped_labels"] == {"perhaps": 1}
    ev = json.loads(CliRunner().invoke(main, ["eval", run["name"], "--json"]).stdout)
    for key in (
        "accuracy",
        "precision",
        "recall",
        "f1",
        "treatments",
        "confusion",
        "verdicts",
        "undetermined_rate",
        "parse_rate",
        "scores",
        "ci",
        "headline",
        "n_labelled",
    ):
        assert key in ev
    assert ev["n_labelled"] == 4 and ev["verdicts"]["undetermined"] == 5  # cut off at 4 tokens
    assert ev["treatments"]["as_safe"]["n"] == 4 and ev["treatments"]["excluded"]["n"] == 0
    assert ev["ci"]["resamples"] == 1000


def test_eval_unknown_run_is_one_line(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["eval", "nope"])
    assert res.exit_code == 1
    assert res.stderr.startswith("error: no run named 'nope'")
