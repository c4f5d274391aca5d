"""`edge-guard bench`'s one-pass variants: one-pass scoring and the cascade at a fixed share.

- ``one_pass``: every text scored in one forward pass (score-only requests: the prompt plus
  the final-channel header, no generation), `parallel` texts per batch;
- ``cascade_10`` / ``cascade_30``: the cascade as `classify --cascade` runs it, in place:
  one score-then-continue request per text scores it and, when its P(violation) lies in
  [LOW, HIGH], generates full reasoning (the same fixed-length generation as the other
  variants) in the same sequence. The band is fixed before the timed run, from the
  quantiles of the one-pass scores (the ``one_pass`` variant's, else an untimed scoring
  pass): the central ``round(share * n)`` scores (at least one), with each bound halfway
  to the next score outside, so exactly that share escalates (the count is reported).
  Every variant starts from a reset state and pays the policy prefix once.

The one-pass roofline is the prompt work alone at llama.cpp's own rates from the same run:
``prefix_s + n * one_pass_suffix_tokens / suffix_tok_s``.
This module imports nothing from `bench.core` (which calls it): rows come from `row_fn`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from edge_guard.classification.cascade import escalation, in_place_request
from edge_guard.classification.onepass import answer_header, label_probs, label_scoring
from edge_guard.engine.engine import Engine, GenerationRequest
from edge_guard.engine.sampling import SamplingConfig
from edge_guard.policy.core import OutputSpec
from edge_guard.response import ModelResponse
from edge_guard.settings.values import NONE

ONE_PASS_VARIANTS = ("one_pass", "cascade_10", "cascade_30")
CASCADE_SHARES = {"cascade_10": 0.10, "cascade_30": 0.30}
LABELS = {
    "one_pass": "(e) one-pass scoring",
    "cascade_10": "(f) cascade, 10% escalated",
    "cascade_30": "(g) cascade, 30% escalated",
    "one_pass_roofline": "one-pass roofline",
}
ROOFLINE_DEFINITION = (
    "one_pass_roofline_s = prefix_s + n * mean_one_pass_suffix_tokens / suffix_tok_s (the "
    "prompt work alone at the same llama.cpp rates; a one-pass suffix is the text's suffix "
    "plus the final-channel header)"
)

RowFn = Callable[..., dict[str, Any]]


def score_requests(
    engine: Engine, reqs: Sequence[GenerationRequest], mode: str = NONE
) -> list[GenerationRequest]:
    """The one-pass (score-only) form of each full-reasoning request: binary labels 0/1."""
    header = answer_header(engine.vocab, mode)
    scoring = label_scoring(OutputSpec(), engine.vocab)
    out = []
    for r in reqs:
        out.append(
            GenerationRequest(
                list(r.prompt_ids) + header,
                SamplingConfig(max_tokens=1),
                prefix_len=r.prefix_len,
                score_only=True,
                score_token_ids=scoring.score_token_ids,
                score_sequences=scoring.score_sequences,
            )
        )
    return out


def p_violation(engine: Engine, response: ModelResponse) -> float | None:
    spec = OutputSpec()
    scores = label_probs(spec, label_scoring(spec, engine.vocab), response)
    return None if scores is None else float(scores["p_violation"])


def band_for_share(scores: Sequence[float | None], share: float) -> tuple[float, float, int]:
    """(LOW, HIGH, k): a band holding the central k = max(1, round(share * n)) of the
    sorted scores, each bound halfway to the next score outside (0 or 1 past the ends), so
    a rescoring that rounds differently in the last bits escalates the same texts."""
    known = sorted(p for p in scores if p is not None)
    if not known:
        return 0.0, 1.0, 0
    k = min(len(known), max(1, round(share * len(scores))))
    start, end = (len(known) - k) // 2, (len(known) - k) // 2 + k - 1
    low = (known[start - 1] + known[start]) / 2 if start > 0 else 0.0
    high = (known[end] + known[end + 1]) / 2 if end + 1 < len(known) else 1.0
    return low, high, k


def in_place_requests(
    engine: Engine, reqs: Sequence[GenerationRequest], band: tuple[float, float]
) -> list[GenerationRequest]:
    """Score-then-continue requests: each full request scored, and generated in place
    when its P(violation) lies in `band` (what `classify --cascade` sends)."""
    escalate = escalation(OutputSpec(), label_scoring(OutputSpec(), engine.vocab), band)
    return [
        in_place_request(s, r, escalate)
        for r, s in zip(reqs, score_requests(engine, reqs), strict=True)
    ]


def _run(engine: Engine, reqs: Sequence[GenerationRequest], width: int) -> list[ModelResponse]:
    out: list[ModelResponse | None] = [None] * len(reqs)
    for i, resp in engine.generate_many(list(reqs), n_parallel=width):
        out[i] = resp
    done = [r for r in out if r is not None]
    if len(done) != len(reqs):  # generate_many answers every request once
        raise RuntimeError(f"{len(reqs) - len(done)} of {len(reqs)} requests got no response")
    return done


def run_variants(
    engine: Engine,
    reqs: list[GenerationRequest],
    variants: Sequence[str],
    width: int,
    row_fn: RowFn,
    say: Callable[[str], None],
) -> dict[str, dict[str, Any]]:
    """Time the chosen one-pass variants on all `reqs` (full-reasoning requests)."""
    results: dict[str, dict[str, Any]] = {}
    scored = score_requests(engine, reqs)
    prompt_total = sum(len(r.prompt_ids) for r in scored)
    chosen = [v for v in ONE_PASS_VARIANTS if v in variants]  # one_pass first: its scores
    scores: list[float | None] | None = None
    for name in chosen:
        say(f"{LABELS[name]}: {len(reqs)} texts")
        band = None
        if name in CASCADE_SHARES:
            if scores is None:  # no one_pass variant: score untimed for the band
                scores = [p_violation(engine, r) for r in _run(engine, scored, width)]
            low, high, _k = band_for_share(scores, CASCADE_SHARES[name])
            band = (low, high)
        work = scored if band is None else in_place_requests(engine, reqs, band)
        engine.reset_state()
        t0, c0 = time.perf_counter(), time.process_time()
        engine.warm_prefix(reqs[0])  # timed apart: the steady figures
        prefix_s = time.perf_counter() - t0
        responses = _run(engine, work, width)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        got = [p_violation(engine, r.scored or r) for r in responses]
        scores = got if scores is None else scores
        up = [r for r in responses if r.scored is not None]
        n_out = sum(len(r.output_token_ids) for r in up)
        row = row_fn(len(reqs), wall, cpu, prompt_total, n_out, prefix_s=prefix_s)
        row["unscored"] = sum(p is None for p in got)
        if band is not None:
            row.update(band=list(band), escalated=len(up), escalated_share=len(up) / len(reqs))
        results[name] = row
        say(f"{LABELS[name]}: {row['labels_per_hour']:.0f} labels/hour ({wall:.1f} s)")
    return results


def roofline_row(
    rates: dict[str, Any],
    reqs: Sequence[GenerationRequest],
    prefix_len: int,
    header_len: int,
    row_fn: RowFn,
) -> dict[str, Any]:
    """Prompt tokens at the batched prompt rate: what one-pass scoring cannot beat."""
    n = len(reqs)
    suffix = sum(len(r.prompt_ids) - prefix_len for r in reqs) / n + header_len

    def ideal(r: dict[str, Any]) -> float:
        return float(r["prefix_s"] + n * suffix / r["suffix_tok_s"])

    prompt_total = sum(len(r.prompt_ids) + header_len for r in reqs)
    return row_fn(n, ideal(rates), ideal(rates["cpu"]), prompt_total, 0, prefix_s=rates["prefix_s"])


def ratios(results: dict[str, dict[str, Any]], field: str = "seconds") -> dict[str, float | None]:
    """labels/s of each one-pass variant over full reasoning in parallel (d), and one-pass
    over its own roofline (the share of the roofline it reaches); from `field`
    (``seconds``, or ``steady_seconds``: once the policy prefix is resident)."""
    out: dict[str, float | None] = {}
    d = results.get("parallel")
    for name in ONE_PASS_VARIANTS:
        r = results.get(name)
        out[f"{name}/parallel"] = d[field] / r[field] if d and r else None
    r, roof = results.get("one_pass"), results.get("one_pass_roofline")
    out["one_pass/one_pass_roofline"] = roof[field] / r[field] if r and roof else None
    return out


def table_notes(report: dict[str, Any]) -> list[str]:
    """The table's lines for the one-pass variants (none when they did not run)."""
    res = report["results"]
    if not any(name in res for name in ONE_PASS_VARIANTS):
        return []
    lines = [""]
    for name in CASCADE_SHARES:
        r = res.get(name)
        if r is not None:
            low, high = r["band"]
            lines.append(
                f"{LABELS[name]}: LOW:HIGH = {low:.6g}:{high:.6g}, escalated "
                f"{r['escalated']}/{r['n']} ({100 * r['escalated_share']:.1f}%)"
            )
    for title, key in (
        ("one-pass ratios (labels/s)", "one_pass_ratios"),
        ("steady one-pass ratios", "one_pass_steady_ratios"),
    ):
        shown = [f"{k} = {v:.2f}" for k, v in (report.get(key) or {}).items() if v]
        if shown:
            lines.append(f"{title}: " + ", ".join(shown))
    lines.append(ROOFLINE_DEFINITION + ".")
    return lines
