"""Undetermined answers have no label score (issue 16, item 3).

An unparsable or cut-off answer is not "certainly safe": it never enters ROC-AUC, AUPRC or
mean |ΔP|, and every output says how many items were left out for it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from edge_guard.compare.render import render_markdown
from edge_guard.compare.stats import compare_outcomes, pair_stats
from edge_guard.runs.metrics import evaluate, score_metrics
from edge_guard.runs.outcomes import Outcomes, item_score

V, N, U = "violation", "no_violation", "undetermined"


def _row(
    idx: int, verdict: str, p: float | None, float_label: float | None = None
) -> dict[str, Any]:
    meta = {} if p is None else {"p_violation": p}
    return {
        "idx": idx,
        "item_id": f"i{idx}",
        "verdict": verdict,
        "metadata": json.dumps(meta),
        "float_label": float_label,
        "text": f"text {idx}",
        "final": None,
        "reasoning": "",
        "finish_reason": "length" if verdict == U else "eos",
        "error": None,
        "parsed": int(verdict != U),
        "prompt_ms": 0.0,
        "output_ms": 0.0,
        "prompt_tokens": 0,
        "cached_tokens": 0,
        "output_tokens": 0,
    }


def _outcomes(name: str, rows: list[dict[str, Any]], gold: list[bool | None]) -> Outcomes:
    run = {
        "name": name,
        "status": "done",
        "policy": "p",
        "model": "m",
        "n_items": len(rows),
        "config": json.dumps({"compare": {"label": name}}),
        "notes": "{}",
    }
    return Outcomes(
        run,
        rows,
        [r["verdict"] for r in rows],
        gold,
        [item_score(r) for r in rows],
        [bool(r["parsed"]) for r in rows],
    )


def test_item_score_of_an_undetermined_answer_is_none_not_its_float_label() -> None:
    # A cut-off answer: the parser left float_label 0.0 and there are no label probabilities.
    assert item_score(_row(0, U, None, float_label=0.0)) is None
    # Even label probabilities do not make an undetermined answer a score.
    assert item_score(_row(0, U, 0.3, float_label=0.0)) is None
    # Determined answers: P(violation) when present, else the parser's float label.
    assert item_score(_row(0, V, 0.7, float_label=1.0)) == 0.7
    assert item_score(_row(0, N, None, float_label=0.0)) == 0.0
    assert item_score(_row(0, V, None, float_label=None)) is None


def test_roc_auc_and_auprc_leave_undetermined_items_out_and_count_them() -> None:
    rows = [
        _row(0, V, 0.9),
        _row(1, N, 0.2),
        _row(2, U, None, 0.0),
        _row(3, N, 0.6),
        _row(4, V, 0.55),
        _row(5, N, None, None),
    ]
    gold = [True, False, True, False, True, False]
    scores = [item_score(r) for r in rows]
    assert scores == [0.9, 0.2, None, 0.6, 0.55, None]
    ev = evaluate([r["verdict"] for r in rows], gold, scores, n_resamples=0)
    s = ev["scores"]
    # pos .9 .55, neg .2 .6: 3 of 4 pairs ranked right (the 0.0 of item 2 would make it 3 of 6)
    assert s["roc_auc"] == pytest.approx(0.75)
    assert s["auprc"] == pytest.approx(0.5 * 1.0 + 0.5 * (2 / 3))
    assert (s["n"], s["n_positive"]) == (4, 2)
    assert s["n_left_out"] == 2  # items 2 (undetermined) and 5 (no score)
    assert s["n_undetermined_left_out"] == 1


def test_score_metrics_drops_undetermined_items_even_when_given_a_score() -> None:
    s = score_metrics([True, False, True], [0.9, 0.2, 0.0], verdicts=[V, N, U])
    assert (s["n"], s["n_left_out"], s["n_undetermined_left_out"]) == (2, 1, 1)
    assert s["roc_auc"] == 1.0
    # Without verdicts nothing is known to be undetermined.
    s = score_metrics([True, False, True], [0.9, 0.2, None])
    assert (s["n"], s["n_left_out"], s["n_undetermined_left_out"]) == (2, 1, 0)


def test_eval_text_says_how_many_undetermined_items_have_no_score() -> None:
    from edge_guard.cli.eval_cmd import format_eval

    rows = [
        _row(0, V, 0.9),
        _row(1, N, 0.2),
        _row(2, U, None, 0.0),
        _row(3, N, 0.6),
        _row(4, V, 0.55),
    ]
    out = _outcomes("a", rows, [True, False, True, False, True])
    from edge_guard.runs.outcomes import evaluate_outcomes

    text = format_eval(evaluate_outcomes(out, n_resamples=0))
    line = next(ln for ln in text.splitlines() if ln.startswith("label scores"))
    assert line == (
        "label scores (n=4; 1 labelled item left out: 1 undetermined): ROC-AUC 0.750, "
        "AUPRC 0.833 (prevalence 0.500)"
    )


def test_mean_abs_delta_p_leaves_undetermined_items_out_and_counts_them() -> None:
    ref = _outcomes(
        "ref",
        [_row(0, V, 0.9), _row(1, N, 0.2), _row(2, U, None, 0.0), _row(3, N, 0.1)],
        [True, False, True, False],
    )
    cand = _outcomes(
        "cand",
        [_row(0, V, 0.8), _row(1, N, 0.4), _row(2, N, 0.3), _row(3, U, None, 0.0)],
        [True, False, True, False],
    )
    dp = pair_stats(ref, cand, n_resamples=0)["delta_p"]
    # before: |0.3 - 0.0| and |0.0 - 0.1| entered as if 0.0 were a score (n 4, mean 0.175)
    assert dp["n"] == 2
    assert dp["mean_abs"] == pytest.approx(0.15)
    assert dp["max_abs"] == pytest.approx(0.2)
    assert dp["n_left_out"] == 2
    c = compare_outcomes([ref, cand], ["ref", "cand"], n_resamples=0)
    assert c["configs"][1]["vs_reference"]["delta_p"]["n_left_out"] == 2
    assert c["items"]["scores"] == [[0.9, 0.2, None, 0.1], [0.8, 0.4, 0.3, None]]
    c.update(title="t", generated_at="now", version="0", plots={})
    md = render_markdown(c)
    assert "over 2 items scored by both (2 left out: undetermined or unscored on a side)" in md
