"""Parsed labels belong to the (result, policy version) pair (issue 16, item 1).

Two policies with the same policy.md and different parse.py share a cache key (the parser
is not in it), so they share the model's answer; each keeps its own parse of it, and a
run's `eval` never changes because another run happened.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from edge_guard.classification.classifier import Classifier
from edge_guard.harmony.vocab import Vocab
from edge_guard.runs.batch import run_dataset
from edge_guard.runs.outcomes import evaluate_run
from edge_guard.store import Store
from edge_guard.store.migrations import migrations
from tests.runs_helpers import SHORT, labelled_rows, steer_by_want, wants_of, write_jsonl

POLICY = "Answer 1 if the text is toxic, else 0.\n"
INVERTED = """
from edge_guard import ClassificationResult

def parse(response):
    ans = (response.response or "").strip()
    if ans not in ("0", "1"):
        return ClassificationResult(None, None, None, {}, response, False)
    bad = ans == "0"
    return ClassificationResult(bad, "inverted-" + ans, float(bad), {}, response, True)
"""
A_VERDICT = {"1": "violation", "0": "no_violation", "?": "undetermined"}
B_VERDICT = {"1": "no_violation", "0": "violation", "?": "undetermined"}


def _policies(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "pol_a", tmp_path / "pol_b"
    for folder in (a, b):
        folder.mkdir()
        (folder / "policy.md").write_text(POLICY, encoding="utf-8")
    (b / "parse.py").write_text(INVERTED, encoding="utf-8")
    return a, b


def _seen(store: Store, run: str) -> list[tuple[str, str, str | None, str]]:
    return [
        (r["verdict"], r["policy_name"], r["fine_grain_label"], r["policy_hash"])
        for r in store.run_results(run)
    ]


def test_a_second_parser_never_rewrites_the_first_runs_results(
    tmp_path: Path, tiny_model: Path
) -> None:
    a, b = _policies(tmp_path)
    rows = labelled_rows(8)
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    steer = steer_by_want(Vocab.from_gguf(tiny_model), wants_of(rows))
    store = Store(tmp_path / "db.sqlite")
    ca = Classifier(a, tiny_model, sampling=SHORT, store=store)
    cb = Classifier(b, tiny_model, sampling=SHORT, store=store)
    assert ca.key("x") == cb.key("x") and ca.policy.hash != cb.policy.hash

    run_dataset(data, ca, name="A", steer=steer)
    eval_a = evaluate_run(store, "A", n_resamples=50)
    seen_a = _seen(store, "A")
    assert [v for v, *_ in seen_a] == [A_VERDICT[r["want"]] for r in rows]
    assert {(n, h) for _, n, _, h in seen_a} == {("pol_a", ca.policy.hash)}

    summary = run_dataset(data, cb, name="B", steer=steer)
    assert (summary.n_cached, summary.n_new) == (8, 0)  # B re-parsed A's stored answers
    assert [v for v, *_ in _seen(store, "B")] == [B_VERDICT[r["want"]] for r in rows]
    assert {(n, h) for _, n, _, h in _seen(store, "B")} == {("pol_b", cb.policy.hash)}
    # A is exactly as it was: rows, labels, policy name and the whole evaluation.
    assert _seen(store, "A") == seen_a
    assert evaluate_run(store, "A", n_resamples=50) == eval_a
    # Comparisons and reports read each run's own parse too.
    from edge_guard.compare.stats import load_comparison
    from edge_guard.report import build_report

    c = load_comparison(store, ["A", "B"], n_resamples=0)
    assert c["items"]["verdicts"] == [
        [A_VERDICT[r["want"]] for r in rows],
        [B_VERDICT[r["want"]] for r in rows],
    ]
    assert c["configs"][1]["vs_reference"]["n_flips"] == sum(r["want"] != "?" for r in rows)
    rep = build_report(["A", "B"], store, n_resamples=50, benchmark=None, plots=False)
    assert [r.eval["verdicts"] for r in rep.runs] == [
        eval_a["verdicts"],
        evaluate_run(store, "B", n_resamples=50)["verdicts"],
    ]
    # The shared result rows keep the parse (and name) of the run that produced them.
    assert {r["policy_name"] for r in store.query("SELECT policy_name FROM results")} == {"pol_a"}
    # Each policy's cache hits come back with its own parse.
    texts = [r["text"] for r in rows]
    procs = [steer(i, type("R", (), {"text": t})()) for i, t in enumerate(texts)]  # type: ignore[arg-type]
    again_a = ca.classify(texts, logits_processors=procs)
    again_b = cb.classify(texts, logits_processors=procs)
    assert all(r.cached for r in again_a + again_b)
    assert [str(r.verdict) for r in again_a] == [A_VERDICT[r["want"]] for r in rows]
    assert [str(r.verdict) for r in again_b] == [B_VERDICT[r["want"]] for r in rows]
    assert [r.fine_grain_label for r in again_b if r.parsed_successfully] == [
        "inverted-" + r["want"] for r in rows if r["want"] != "?"
    ]


def _put(store: Store, key: str, policy: str, verdict: str, error: str | None, run: str) -> None:
    store.ensure_run(run, kind="run", config={"policy_hash": f"h-{policy}"}, n_items=1)
    store.put(
        {
            "key": key,
            "text": "t",
            "policy_name": policy,
            "policy_hash": f"h-{policy}",
            "verdict": verdict,
            "parsed": int(verdict != "undetermined"),
            "error": error,
            "metadata": {"by": policy},
        },
        {"run": run, "idx": 0, "item_id": "i0", "key": key, "gold": "1", "extra": {}},
    )


def test_a_retry_by_another_policy_leaves_the_first_runs_error_and_resume_redoes_it(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "db.sqlite")
    _put(store, "k", "a", "undetermined", "server said 500", "A")
    _put(store, "k", "b", "violation", None, "B")  # B retried the error row and got an answer
    [a] = store.run_results("A")
    assert (a["verdict"], a["error"], a["policy_name"], json.loads(a["metadata"])) == (
        "undetermined",
        "server said 500",
        "a",
        {"by": "a"},
    )
    [b] = store.run_results("B")
    assert (b["verdict"], b["error"], b["policy_name"]) == ("violation", None, "b")
    assert store.get("k")["verdict"] == "violation"  # the newest answer, as B parsed it
    assert store.done_indices("A") == store.done_indices("B") == {0}  # both committed
    assert store.ok_indices("A") == set()  # A's own parse is an error: a resume redoes it
    assert store.ok_indices("B") == {0}


def test_migration_moves_existing_parses_and_run_items_to_their_policy(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    from sqlite_utils import Database

    db = Database(conn)
    migrations.apply(db, stop_before="m004_parses")
    db["results"].insert(
        {
            "key": "k",
            "policy_name": "a",
            "policy_hash": "h-a",
            "verdict": "violation",
            "parsed": 1,
            "metadata": "{}",
        }
    )
    db["runs"].insert({"name": "A", "kind": "run"})
    db["run_items"].insert({"run": "A", "idx": 0, "key": "k", "gold": "1", "extra": "{}"})
    conn.close()
    store = Store(path)
    parses = store.query("SELECT key, policy_hash, policy_name, verdict, parsed FROM parses")
    assert parses == [
        {"key": "k", "policy_hash": "h-a", "policy_name": "a", "verdict": "violation", "parsed": 1}
    ]
    assert store.query("SELECT policy_hash FROM run_items") == [{"policy_hash": "h-a"}]
    # Deleting a result deletes its parses (`cache clear` deletes results rows).
    with store.transaction() as tx:
        tx.execute("DELETE FROM run_items")
        tx.execute("DELETE FROM results")
    assert store.query("SELECT count(*) AS n FROM parses") == [{"n": 0}]
