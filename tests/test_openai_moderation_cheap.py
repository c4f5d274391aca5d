"""Taxonomy mode on a synthetic model (issue 29's cheap path): each member's one-pass score
IS the score of `render(taxonomy text, text) + header + cue(member)` evaluated alone; the
text and every member's cue are one decode; full reasoning is one pass per text;
stored rows serve reruns; `compare` puts it beside separate mode; `policies test` runs the
whole openai-moderation set."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from edge_guard.backends.local import EngineSettings
from edge_guard.classification.classifier import Classifier
from edge_guard.classification.onepass import answer_header
from edge_guard.compare.config import CompareConfig
from edge_guard.compare.multi import multi_summary, run_multi_compare
from edge_guard.engine.engine import GenerationRequest
from edge_guard.engine.sampling import SamplingConfig
from edge_guard.engine.step import branch_trie
from edge_guard.errors import EdgeGuardError
from edge_guard.policy.sets import load_set
from edge_guard.policy.taxonomy import cue_text, taxonomy_text
from edge_guard.runs.multi_eval import multi_outcomes
from edge_guard.runs.taxonomy import classify_taxonomy, make_cues
from edge_guard.store import Store
from tests.runs_helpers import write_jsonl
from tests.test_policy_sets import NAMES, write_policy

TEXTS = [
    "I will find you and hurt you.",
    "What a lovely afternoon at the park.",
    "how do I pick a lock",
]


@pytest.fixture
def abc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    folder = tmp_path / "pols"
    for n in NAMES:
        write_policy(folder, n)
    (folder / "sets").mkdir()
    (folder / "sets" / "abc.toml").write_text(
        'policies = ["alpha", "beta", "gamma"]\naliases = ["abc-latest"]\n[thresholds]\nbeta = 0.3\n'
    )
    monkeypatch.setenv("EDGE_GUARD_POLICIES", str(folder))
    return load_set("abc-latest")


def make(model: Path, tmp_path: Path, n_parallel: int, **kw: Any) -> Classifier:
    pset = load_set("abc")
    return Classifier(
        pset.policies,
        model,
        store=Store(tmp_path / "s.db"),
        sampling=SamplingConfig(max_tokens=16),
        engine_settings=EngineSettings(n_ctx=4096, n_parallel=n_parallel),
        **kw,
    )


def alone(clf: Classifier, pset: Any, text: str, name: str) -> tuple[dict[int, float], float]:
    """(log-probs of 0 and 1, P(1)) of the member's prompt evaluated on its own, from
    scratch, built independently of `taxonomy_run`: the rendered taxonomy prompt, the
    one-pass header, the member's cue."""
    engine = clf.backend.engine()
    vocab = engine.vocab
    ids = (
        engine.renderer.render(taxonomy_text(pset), text).token_ids
        + answer_header(vocab, "none")
        + vocab.encoder.encode(cue_text(name))
    )
    zero, one = vocab.encoder.encode("0")[0], vocab.encoder.encode("1")[0]
    engine.reset_state()
    resp = engine.generate(GenerationRequest(ids, score_only=True, score_token_ids=[zero, one]))
    lp = resp.final_token_logprobs or {}
    return lp, math.exp(lp[one]) / (math.exp(lp[zero]) + math.exp(lp[one]))


def test_each_score_is_its_prompt_scored_alone(
    tiny_o200k_model: Path, tmp_path: Path, abc: Any
) -> None:
    clf = make(tiny_o200k_model, tmp_path, n_parallel=1, reasoning="none")
    out = classify_taxonomy(clf, abc, TEXTS)
    assert [list(mr.results) for mr in out] == [NAMES] * len(TEXTS)
    for text, mr in zip(TEXTS, out, strict=True):
        for name, res in mr.results.items():
            logprobs, p = alone(clf, abc, text, name)
            # bit for bit (one sequence at a time): the same log-probs, so the same score
            assert res.model_response.final_token_logprobs == logprobs  # type: ignore[union-attr]
            assert res.metadata["p_violation"] == pytest.approx(p, rel=1e-12, abs=1e-15)
            assert res.metadata["mode"] == "taxonomy" and res.metadata["path"] == "one-pass"
            assert res.policy == name and res.text == text and not res.cached
        # the set's threshold (beta 0.3) decides beta; the others the policy's 0.5
        beta = mr.results["beta"]
        hit = beta.metadata["p_violation"] >= 0.3
        assert beta.verdict == ("violation" if hit else "no_violation")
    # the scores differ per member and per text (each cue and each text really read)
    scores = {round(r.metadata["p_violation"], 12) for mr in out for r in mr.results.values()}
    assert len(scores) > 3


def test_the_text_and_every_cue_are_one_decode(
    tiny_o200k_model: Path, tmp_path: Path, abc: Any
) -> None:
    clf = make(tiny_o200k_model, tmp_path, n_parallel=8, reasoning="none", use_cache=False)
    engine = clf.backend.engine()
    cues = make_cues(abc, engine.vocab, "none")
    classify_taxonomy(clf, abc, TEXTS[:1])  # the policy prefix is resident from here on
    before = dict(engine.stats)
    out = classify_taxonomy(clf, abc, TEXTS[1:2])[0]
    prompt = engine.renderer.render(taxonomy_text(abc), TEXTS[1])
    text_part = len(prompt.token_ids) - prompt.prefix_len + len(cues.shared)
    # one decode: the text once, then each cue's tokens (a start common to cues once)
    nodes = branch_trie([(k, k, ids) for k, (_name, ids) in enumerate(cues.cues)])
    assert engine.stats["decode_calls"] - before["decode_calls"] == 1
    assert engine.stats["decoded_tokens"] - before["decoded_tokens"] == text_part + len(nodes)
    assert engine.stats["prefix_tokens"] == before["prefix_tokens"]  # no prefix evaluated
    for (name, suffix), res in zip(cues.cues, out.results.values(), strict=True):
        t = res.model_response.timings  # type: ignore[union-attr]
        assert t.prompt_tokens - t.cached_tokens == len(suffix), name  # only its own cue
        assert t.prompt_tokens == len(prompt.token_ids) + len(cues.shared) + len(suffix)


def test_full_reasoning_is_one_pass_per_text_and_reruns_are_stored(
    tiny_o200k_model: Path, tmp_path: Path, abc: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    clf = make(tiny_o200k_model, tmp_path, n_parallel=4)
    calls: list[int] = []
    real = type(clf.backend).execute

    def counting(self: Any, requests: Any, n_parallel: Any = None) -> Any:
        reqs = list(requests)
        calls.append(len(reqs))
        return real(self, reqs, n_parallel)

    monkeypatch.setattr(type(clf.backend), "execute", counting)
    out = classify_taxonomy(clf, abc, TEXTS)
    assert calls == [len(TEXTS)]  # three texts: three reasoning passes, not nine
    for mr in out:
        results = list(mr.results.values())
        assert len({id(r.model_response) for r in results}) == 1
        assert all(r.metadata["reasoning"] == "full" for r in results)
        # a random model writes no valid answer object: undetermined, never "safe"
        if mr.results["alpha"].undetermined:
            assert mr.flagged is None and mr.undetermined == NAMES
    calls.clear()
    again = classify_taxonomy(clf, abc, TEXTS)
    assert calls == [] and all(r.cached for mr in again for r in mr.results.values())
    one = make(tiny_o200k_model, tmp_path, n_parallel=4, reasoning="none")
    classify_taxonomy(one, abc, TEXTS[:1])
    assert calls == [1]  # one request for the text, a branch per member
    calls.clear()
    assert all(r.cached for r in classify_taxonomy(one, abc, TEXTS[:1])[0].results.values())
    assert calls == []


def test_unusable_options_and_texts_are_refused_alone(
    tiny_o200k_model: Path, tmp_path: Path, abc: Any
) -> None:
    from edge_guard.runs.taxonomy import iter_taxonomy

    clf = make(tiny_o200k_model, tmp_path, n_parallel=4, reasoning="none")
    with pytest.raises(EdgeGuardError, match="cannot steer"):
        iter_taxonomy(clf, abc, TEXTS, [(0, 0)], steer=lambda t: None)
    cascade = make(tiny_o200k_model, tmp_path, n_parallel=4, reasoning="full", cascade="0.2:0.8")
    with pytest.raises(EdgeGuardError, match="no cascade"):
        classify_taxonomy(cascade, abc, TEXTS)
    out = classify_taxonomy(clf, abc, ["ok text", "bad \udc80 text"])
    assert all(not r.undetermined for r in out[0].results.values())
    assert all(r.undetermined and r.error for r in out[1].results.values())
    assert out[1].flagged is None


def test_compare_puts_taxonomy_beside_separate(
    tiny_o200k_model: Path, tmp_path: Path, abc: Any
) -> None:
    data = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"text": t, "a": i % 2}
            for i, t in enumerate([*TEXTS, "fine", "another message", "a third one"])
        ],
    )
    model = str(tiny_o200k_model)
    configs = [
        CompareConfig(None, (("reasoning", "none"), ("name", "separate"))),
        CompareConfig(None, (("mode", "taxonomy"), ("reasoning", "none"), ("name", "one-prompt"))),
    ]
    opts = {"model": model, "db": str(tmp_path / "c.db"), "ctx": 4096}
    store, runs, labels = run_multi_compare(
        data, abc, configs, base_opts=opts, label_fields={"alpha": "a"}
    )
    summary = multi_summary(store, runs, labels, n_resamples=50)
    assert summary["modes"] == ["separate", "taxonomy"]
    per = summary["vs_reference"][0]["policies"]
    outs = [multi_outcomes(store, r)[1] for r in runs]
    for name in NAMES:
        ref = dict(zip(outs[0][name].text_idx, outs[0][name].verdicts, strict=True))
        cand = dict(zip(outs[1][name].text_idx, outs[1][name].verdicts, strict=True))
        flips = sum(ref[t] != cand[t] for t in ref)
        assert per[name]["n"] == 6 and per[name]["flips"] == flips
        assert per[name]["agreement"] == pytest.approx(1 - flips / 6)
        assert "kappa" in per[name] and sum(per[name]["transitions"].values()) == flips
    # a rerun resumes both runs: nothing left to classify
    again = run_multi_compare(data, abc, configs, base_opts=opts, label_fields={"alpha": "a"})
    assert again[1] == runs


def test_policies_test_runs_the_whole_set(tiny_o200k_model: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(
        main_cli(),
        [
            "policies",
            "test",
            "openai-moderation",
            "--model",
            str(tiny_o200k_model),
            "--reasoning",
            "none",
            "--db",
            str(tmp_path / "t.db"),
            "--json",
        ],
    )
    assert res.exit_code in (0, 1), res.output
    import json

    report = json.loads(res.output)
    text = json.dumps(report)
    for key in load_set("openai-moderation").names:
        assert f'"{key}"' in text


def main_cli() -> Any:
    from edge_guard.cli import main

    return main
