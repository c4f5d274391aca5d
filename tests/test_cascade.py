"""The cascade: exactly the texts with P(violation) in [LOW, HIGH] escalate; paths and keys."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from edge_guard import classify
from edge_guard.classification import onepass
from edge_guard.classification.classifier import Classifier, RunItem
from edge_guard.errors import EdgeGuardError
from edge_guard.harmony.vocab import Vocab
from edge_guard.response import ModelResponse
from edge_guard.result import Verdict
from edge_guard.settings.values import parse_bounds
from edge_guard.store import Store

P_RE = re.compile(r"p=([0-9.]+)")


class ScriptedBackend:
    """A backend that scores a text `p=0.25 ...` as P("1") = 0.25 and, in full reasoning,
    answers "1" after some reasoning; a score-then-continue request is scored, then answered
    in full when its `escalate` says so (as the engine does). Records every request;
    `fail_scores` names texts (by their `p=` value) whose scoring fails."""

    name = "local"
    model_ref = "scripted"

    def __init__(self, vocab: Vocab) -> None:
        self._vocab = vocab
        self.calls: list[list[Any]] = []
        self.fail_scores: set[float] = set()

    def identity(self) -> str:
        return "scripted:1"

    def engine_version(self) -> str:
        return "scripted"

    def vocab(self) -> Vocab:
        return self._vocab

    def close(self) -> None:
        pass

    def execute(
        self, requests: Sequence[Any], n_parallel: int | None = None
    ) -> Iterator[tuple[int, ModelResponse]]:
        self.calls.append(list(requests))
        for i, req in enumerate(requests):
            text = self._vocab.decode(req.prompt_ids)
            if not getattr(req, "score_only", False):
                yield i, ModelResponse("1", "because", "eos", list(req.prompt_ids))
                continue
            p = float(P_RE.findall(text)[-1])
            if p in self.fail_scores:
                yield i, ModelResponse.failed("NaN logits", list(req.prompt_ids))
                continue
            lp = {
                15: math.log(1 - p) if p < 1 else -math.inf,
                16: math.log(p) if p > 0 else -math.inf,
            }
            score = ModelResponse(None, "", "scored", list(req.prompt_ids), final_token_logprobs=lp)
            if req.escalate is not None and req.escalate(score):
                prompt = list(req.prompt_ids[: req.continue_at])
                yield i, ModelResponse("1", "because", "eos", prompt, scored=score)
            else:
                yield i, score


@pytest.fixture
def backend(tiny_o200k_model: Path) -> ScriptedBackend:
    return ScriptedBackend(Vocab.from_gguf(tiny_o200k_model))


PS = [0.05, 0.2, 0.35, 0.5, 0.8, 0.95]
TEXTS = [f"p={p} text {i}" for i, p in enumerate(PS)]


def test_parse_bounds() -> None:
    assert parse_bounds("0.2:0.8") == (0.2, 0.8)
    assert parse_bounds((0, 1)) == (0.0, 1.0)
    assert parse_bounds(None) is None
    for bad, msg in [
        ("0.2", "is not LOW:HIGH"),
        ("a:b", "is not LOW:HIGH"),
        ("0.8:0.2", "0 <= LOW <= HIGH <= 1"),
        ("-1:0.5", "0 <= LOW"),
        ("0.1:0.2:0.3", "is not LOW:HIGH"),
    ]:
        with pytest.raises(EdgeGuardError, match=msg):
            parse_bounds(bad)


def test_exactly_the_texts_in_the_band_escalate(backend: ScriptedBackend) -> None:
    clf = Classifier("toxic_simple", backend, cascade="0.2:0.8")
    clf.store.ensure_run("casc")
    items = [RunItem("casc", i) for i in range(len(TEXTS))]
    results = list(clf.iter(TEXTS, run_items=items))
    by_i = dict(results)
    paths = [by_i[i].metadata["path"] for i in range(len(PS))]
    # Bounds included: 0.2 and 0.8 escalate, 0.05 / 0.95 do not.
    assert paths == ["one-pass", "escalated", "escalated", "escalated", "escalated", "one-pass"]
    # One batch of score-then-continue requests: each scores the prompt plus the final
    # header and, if it escalates, goes on from the prompt's end in the same sequence.
    assert [len(c) for c in backend.calls] == [6]
    header = len(onepass.answer_header(backend.vocab(), "none"))
    for r in backend.calls[0]:
        assert r.score_only and r.escalate is not None
        assert r.continue_at == len(r.prompt_ids) - header
        assert r.sampling == Classifier("toxic_simple", backend).sampling
    assert [by_i[i].verdict for i in (0, 5)] == [Verdict.NO_VIOLATION, Verdict.VIOLATION]
    assert by_i[1].model_response.reasoning == "because"
    assert by_i[1].metadata["one_pass_p_violation"] == pytest.approx(0.2, abs=1e-12)
    assert by_i[1].metadata["cascade"] == [0.2, 0.8]
    # Three keys per escalated text: one-pass, full, and the cascade's own decision.
    esc = by_i[1]
    assert len({esc.key, esc.metadata["one_pass_key"], esc.metadata["full_key"]}) == 3
    # The run links the cascade rows, whose stored metadata records the path.
    store = clf.store
    rows = store.query(
        "SELECT r.metadata FROM run_items i JOIN results r ON r.key = i.key "
        "WHERE i.run = 'casc' ORDER BY i.idx"
    )
    import json

    assert [json.loads(r["metadata"])["path"] for r in rows] == paths


def test_cascade_decisions_are_cached_and_full_results_shared(backend: ScriptedBackend) -> None:
    store = Store()
    list(Classifier("toxic_simple", backend, cascade=(0.2, 0.8), store=store).iter(TEXTS))
    backend.calls.clear()
    again = dict(Classifier("toxic_simple", backend, cascade=(0.2, 0.8), store=store).iter(TEXTS))
    assert backend.calls == [] and all(r.cached for r in again.values())
    assert again[2].metadata["path"] == "escalated"
    # A plain full-reasoning run reuses the escalated texts' full results (they are full ones)
    # and computes only the others; its results carry no cascade path.
    full = dict(Classifier("toxic_simple", backend, store=store).iter(TEXTS))
    assert [len(c) for c in backend.calls] == [2]
    assert [full[i].cached for i in range(6)] == [False, True, True, True, True, False]
    assert all("path" not in r.metadata for r in full.values())
    # A different band is a different decision (own key), computed from the cached stages.
    backend.calls.clear()
    other = dict(Classifier("toxic_simple", backend, cascade=(0.0, 0.1), store=store).iter(TEXTS))
    assert backend.calls == []
    assert [other[i].metadata["path"] for i in range(6)] == ["escalated"] + ["one-pass"] * 5


def test_a_policy_edit_decides_stored_cascades_again(backend: ScriptedBackend) -> None:
    """A threshold edit keeps every key (same text, same labels) but is another policy
    version: its stored decisions are decided again from the stored stages, not served."""
    import dataclasses

    from edge_guard.policy.core import load_policy

    store, pol = Store(), load_policy("toxic_simple")
    first = dict(Classifier(pol, backend, cascade=(0.2, 0.8), store=store).iter(TEXTS))
    assert first[0].verdict == Verdict.NO_VIOLATION  # P = 0.05 < 0.5
    edited = dataclasses.replace(pol, output=dataclasses.replace(pol.output, threshold=0.01))
    backend.calls.clear()
    again = dict(Classifier(edited, backend, cascade=(0.2, 0.8), store=store).iter(TEXTS))
    assert backend.calls == []  # nothing computed again: the stages are stored
    assert again[0].key == first[0].key
    assert (again[0].verdict, again[0].metadata["path"]) == (Verdict.VIOLATION, "one-pass")
    assert again[0].metadata["threshold"] == 0.01
    assert [again[i].metadata["path"] for i in range(1, 5)] == ["escalated"] * 4
    assert again[1].metadata["one_pass_p_violation"] == pytest.approx(0.2, abs=1e-12)


def test_one_pass_only_through_the_api(backend: ScriptedBackend) -> None:
    res = classify(TEXTS, "toxic_simple", backend, reasoning="none")
    assert [r.verdict for r in res] == [Verdict.NO_VIOLATION] * 3 + [Verdict.VIOLATION] * 3
    assert all(
        r.metadata["path"] == "one-pass" and r.model_response.finish_reason == "scored" for r in res
    )
    assert [len(c) for c in backend.calls] == [6]
    casc = classify(TEXTS, "toxic_simple", backend, cascade=(0.2, 0.8))
    assert [r.metadata["path"] for r in casc] == ["one-pass"] + ["escalated"] * 4 + ["one-pass"]
    # The one-pass stage was stored: only the 4 escalated texts go on, as full requests.
    assert [len(c) for c in backend.calls] == [6, 4]
    assert not any(r.score_only for r in backend.calls[1])
    assert casc[0].metadata["cascade"] == [0.2, 0.8]


def test_cascade_needs_violation_labels(backend: ScriptedBackend) -> None:
    with pytest.raises(EdgeGuardError, match="--cascade needs violation labels"):
        Classifier("is_good", backend, cascade="0.2:0.8")


def test_compare_config_keys_parse() -> None:
    from edge_guard.compare.config import parse_config

    assert parse_config("m,reasoning=none").opts == {"reasoning": "none"}
    assert parse_config("reasoning=none-empty-analysis").opts == {
        "reasoning": "none-empty-analysis"
    }
    assert parse_config("m,cascade=0.2:0.8,effort=low").opts == {
        "cascade": "0.2:0.8",
        "effort": "low",
    }
    with pytest.raises(
        EdgeGuardError, match="reasoning='fast' must be one of full, none, none-empty-analysis"
    ):
        parse_config("m,reasoning=fast")
    with pytest.raises(
        EdgeGuardError, match=r"cascade='0.9:0.1' bounds must satisfy 0 <= LOW <= HIGH <= 1"
    ):
        parse_config("m,cascade=0.9:0.1")


def test_eval_paths_share_escalated_and_agreement_with_full(backend: ScriptedBackend) -> None:
    from edge_guard.runs.paths import format_paths, path_summary

    store = Store()
    base = {
        "dataset_sha256": "abc",
        "policy_hash": "h",
        "model_identity": "scripted:1",
        "style": "harmony",
        "effort": "medium",
    }
    store.ensure_run("full", config=base)
    store.ensure_run("casc", config={**base, "reasoning": "none", "cascade": [0.2, 0.8]})
    list(
        Classifier("toxic_simple", backend, store=store).iter(
            TEXTS, run_items=[RunItem("full", i) for i in range(6)]
        )
    )
    list(
        Classifier("toxic_simple", backend, store=store, cascade=(0.2, 0.8)).iter(
            TEXTS, run_items=[RunItem("casc", i) for i in range(6)]
        )
    )
    assert path_summary(store, "full") is None  # a plain full-reasoning run
    s = path_summary(store, "casc")
    assert s is not None
    assert (s["one_pass"], s["escalated"], s["escalated_share"]) == (2, 4, 4 / 6)
    v = s["vs_full"]
    # Full reasoning says "1" everywhere; the cascade says 0 only for p=0.05.
    assert (v["run"], v["n"], v["n_undetermined"]) == ("full", 6, 0)
    assert v["agreement"] == pytest.approx(5 / 6) and v["kappa"] == 0.0
    assert (v["precision"], v["recall"]) == (1.0, pytest.approx(5 / 6))
    assert v["f1"] == pytest.approx(10 / 11)
    assert (
        format_paths(s)[1]
        == "paths (cascade 0.2:0.8): 2 decided by one pass, 4 escalated (66.7% escalated)"
    )


def test_a_failed_score_escalates_in_a_second_stage(backend: ScriptedBackend) -> None:
    backend.fail_scores = {0.05, 0.95}
    store = Store()
    res = dict(Classifier("toxic_simple", backend, cascade=(0.2, 0.8), store=store).iter(TEXTS))
    assert [len(c) for c in backend.calls] == [6, 2]  # in place, then the two failed scores
    assert [r.score_only for r in backend.calls[1]] == [False, False]
    assert [res[i].metadata["path"] for i in range(6)] == ["escalated"] * 6
    assert [res[i].verdict for i in range(6)] == [Verdict.VIOLATION] * 6
    assert res[0].metadata["one_pass_p_violation"] is None
    # every stage was stored: the same classifier again calls nothing
    backend.calls.clear()
    again = dict(Classifier("toxic_simple", backend, cascade=(0.2, 0.8), store=store).iter(TEXTS))
    assert (
        backend.calls == [] and [again[i].metadata["path"] for i in range(6)] == ["escalated"] * 6
    )


def test_in_place_on_the_engine_equals_the_two_stages(tiny_o200k_model: Path) -> None:
    """On the real engine: the in-place cascade's one-pass scores are a plain one-pass
    run's, and its escalated answers are a plain full run's, token for token."""
    from edge_guard.engine.sampling import SamplingConfig

    texts = ["hello there", "some text to judge with care", "x"]
    kw: dict[str, Any] = {"sampling": SamplingConfig(max_tokens=24), "parallel": 1}
    plain = Classifier("toxic_simple", tiny_o200k_model, store=Store(), **kw).classify(texts)
    one = Classifier(
        "toxic_simple", tiny_o200k_model, store=Store(), reasoning="none", **kw
    ).classify(texts)
    store = Store()
    casc = Classifier(
        "toxic_simple", tiny_o200k_model, store=store, cascade=(0.0, 1.0), **kw
    ).classify(texts)
    for c, p, o in zip(casc, plain, one, strict=True):
        assert c.metadata["path"] == "escalated"
        assert c.model_response.output_token_ids == p.model_response.output_token_ids
        assert c.model_response.prompt_token_ids == p.model_response.prompt_token_ids
        assert c.metadata["one_pass_p_violation"] == pytest.approx(
            o.metadata["p_violation"], abs=1e-6
        )
        assert c.metadata["full_key"] == p.key and c.metadata["one_pass_key"] == o.key
    assert store.query("SELECT count(*) AS n FROM results")[0]["n"] == 9  # 3 keys per text
    p0 = one[0].metadata["p_violation"]  # the random model: about 1 - 2e-7, the others 1.0
    assert p0 < min(one[1].metadata["p_violation"], one[2].metadata["p_violation"])
    mixed = Classifier(
        "toxic_simple", tiny_o200k_model, store=Store(), cascade=(p0, p0), **kw
    ).classify(texts)
    assert [k.metadata["path"] for k in mixed] == ["escalated", "one-pass", "one-pass"]
    assert [mixed[i].verdict for i in (1, 2)] == [one[i].verdict for i in (1, 2)]
    assert mixed[0].model_response.output_token_ids == plain[0].model_response.output_token_ids
