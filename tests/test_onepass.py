"""One-pass scoring: exact answer headers, verdicts from label probabilities, keys, refusals."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from edge_guard.classification import onepass
from edge_guard.classification.classifier import Classifier
from edge_guard.errors import EdgeGuardError, PolicyError
from edge_guard.harmony.render import PromptRenderer
from edge_guard.harmony.vocab import Vocab
from edge_guard.policy.core import load_policy
from edge_guard.response import ModelResponse
from edge_guard.result import Verdict
from edge_guard.settings.values import REASONING_MODES

# o200k_harmony ids: <|start|> 200006, <|end|> 200007, <|message|> 200008, <|channel|> 200005;
# "assistant" 173781, "final" 17196, "analysis" 35644, "0" 15, "1" 16.
FINAL_HEADER = [200005, 17196, 200008]
EMPTY_ANALYSIS_HEADER = [200005, 35644, 200008, 200007, 200006, 173781, 200005, 17196, 200008]


def make_policy(tmp_path: Path, output: str, name: str = "p") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "policy.md").write_text("Answer 1 if the text is spam, else 0.\n")
    (folder / "policy.toml").write_text(f'name = "{name}"\n[output]\n{output}\n')
    return folder


def scored(
    logprobs: dict[int, float] | None = None, seqs: list[float] | None = None
) -> ModelResponse:
    r = ModelResponse(None, "", "scored", final_token_logprobs=logprobs)
    r.sequence_logprobs = seqs  # type: ignore[attr-defined]
    return r


def test_answer_headers_are_exact_ids(tiny_o200k_model: Path) -> None:
    vocab = Vocab.from_gguf(tiny_o200k_model)
    assert onepass.answer_header(vocab, "none") == FINAL_HEADER
    assert onepass.answer_header(vocab, "none-empty-analysis") == EMPTY_ANALYSIS_HEADER
    assert onepass.answer_header(vocab, "full") == []
    with pytest.raises(EdgeGuardError, match="unknown reasoning mode 'fast'"):
        onepass.answer_header(vocab, "fast")


def test_score_request_appends_the_header_to_the_normal_prompt(tiny_o200k_model: Path) -> None:
    clf = Classifier("toxic_simple", tiny_o200k_model, reasoning="none-empty-analysis")
    prompt = PromptRenderer(Vocab.from_gguf(tiny_o200k_model)).render(clf.policy.text, "hi")
    assert prompt.token_ids[-2:] == [200006, 173781]  # the normal prompt: <|start|>assistant
    from edge_guard.engine.engine import GenerationRequest

    req = onepass.score_request(
        clf, GenerationRequest(prompt.token_ids, prefix_len=prompt.prefix_len)
    )
    assert req.prompt_ids == prompt.token_ids + EMPTY_ANALYSIS_HEADER
    assert req.prefix_len == prompt.prefix_len
    assert req.score_only is True  # type: ignore[attr-defined]
    assert list(req.score_token_ids) == [15, 16]
    assert req.score_sequences == []  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("threshold", "verdict", "label"),
    [
        (0.5, Verdict.VIOLATION, "1"),
        (0.7, Verdict.VIOLATION, "1"),
        (0.71, Verdict.NO_VIOLATION, "0"),
    ],
)
def test_binary_verdict_from_probabilities(
    tmp_path: Path, tiny_o200k_model: Path, threshold: float, verdict: Verdict, label: str
) -> None:
    pol = load_policy(make_policy(tmp_path, f'kind = "binary"\nthreshold = {threshold}'))
    assert pol.output.threshold == threshold
    scoring = onepass.label_scoring(pol.output, Vocab.from_gguf(tiny_o200k_model))
    assert scoring.token_map == {15: "0", 16: "1"}
    # Unnormalised: 0.15 and 0.35 of the vocabulary's mass -> 0.3 / 0.7 over the labels.
    resp = scored({15: math.log(0.15), 16: math.log(0.35)})
    res = onepass.decide(pol, onepass.label_probs(pol.output, scoring, resp), resp, "none")
    assert res.verdict == verdict and res.fine_grain_label == label
    assert res.binary_label is (verdict == Verdict.VIOLATION)
    assert res.float_label == pytest.approx(0.7, abs=1e-12)
    assert res.metadata["label_probs"] == pytest.approx({"0": 0.3, "1": 0.7}, abs=1e-12)
    assert res.metadata["label_mass"] == pytest.approx(0.5, abs=1e-12)
    assert (res.metadata["path"], res.metadata["reasoning"]) == ("one-pass", "none")
    assert res.metadata["threshold"] == threshold
    assert res.parsed_successfully is True


def test_default_threshold_and_bad_threshold(tmp_path: Path) -> None:
    assert load_policy(make_policy(tmp_path, 'kind = "binary"')).output.threshold == 0.5
    with pytest.raises(PolicyError, match=r"threshold must be a number in \[0, 1\], got 1.5"):
        load_policy(make_policy(tmp_path, 'kind = "binary"\nthreshold = 1.5', "q"))


def test_multi_token_labels_scored_as_sequences(tmp_path: Path, tiny_o200k_model: Path) -> None:
    pol = load_policy(
        make_policy(
            tmp_path, 'kind = "labels"\nlabels = ["fine", "spam offer"]\nviolation = ["spam offer"]'
        )
    )
    scoring = onepass.label_scoring(pol.output, Vocab.from_gguf(tiny_o200k_model))
    assert scoring.token_map is None
    assert scoring.sequences == (
        ("fine", (107932,)),
        ("fine", (8975,)),
        ("spam offer", (170644, 2961)),
        ("spam offer", (33874, 2961)),
    )
    resp = scored(seqs=[math.log(0.1), math.log(0.1), math.log(0.5), math.log(0.3)])
    res = onepass.decide(pol, onepass.label_probs(pol.output, scoring, resp), resp, "none")
    assert res.metadata["label_probs"] == pytest.approx({"fine": 0.2, "spam offer": 0.8}, abs=1e-12)
    assert (res.verdict, res.fine_grain_label) == (Verdict.VIOLATION, "spam offer")
    wrong_len = scored(seqs=[0.0])
    res2 = onepass.decide(
        pol, onepass.label_probs(pol.output, scoring, wrong_len), wrong_len, "none"
    )
    assert (
        res2.verdict == Verdict.UNDETERMINED and res2.metadata["error"] == "no label probabilities"
    )


def test_likert_picks_the_likeliest_label_on_the_decided_side(tmp_path: Path) -> None:
    pol = load_policy(make_policy(tmp_path, 'kind = "likert"\nmin = 1\nmax = 3\nviolation = ["3"]'))
    from edge_guard.policy.parsers import scores_from_probs

    scores = scores_from_probs(pol.output, {"1": 0.2, "2": 0.5, "3": 0.3}, 1.0)
    res = onepass.decide(pol, scores, scored(), "none")
    assert (res.verdict, res.fine_grain_label) == (Verdict.NO_VIOLATION, "2")
    assert res.float_label == pytest.approx(2.1, abs=1e-12)  # the expected rating
    res = onepass.decide(pol, scores, scored(), "none", threshold=0.3)
    assert (res.verdict, res.fine_grain_label) == (Verdict.VIOLATION, "3")


def test_open_output_kind_is_refused(tmp_path: Path, tiny_o200k_model: Path) -> None:
    folder = make_policy(tmp_path, 'kind = "json"')
    with pytest.raises(EdgeGuardError, match=r"needs a closed output kind .* not 'json'"):
        Classifier(folder, tiny_o200k_model, reasoning="none")
    with pytest.raises(EdgeGuardError, match="needs a closed output kind"):
        Classifier(folder, tiny_o200k_model, cascade="0.2:0.8")
    Classifier(folder, tiny_o200k_model)  # full reasoning is fine


def test_cache_keys_differ_between_paths(tiny_o200k_model: Path) -> None:
    keys = {
        mode: Classifier("toxic_simple", tiny_o200k_model, reasoning=mode).key("hello")
        for mode in REASONING_MODES
    }
    keys["cascade"] = Classifier("toxic_simple", tiny_o200k_model, cascade=(0.2, 0.8)).key("hello")
    keys["cascade2"] = Classifier("toxic_simple", tiny_o200k_model, cascade=(0.1, 0.8)).key("hello")
    assert len(set(keys.values())) == 5
    # Full reasoning keys are what they were before one-pass existed (no extra field).
    full = Classifier("toxic_simple", tiny_o200k_model)
    assert "reasoning" not in full.key_fields("hello") and keys["full"] == full.key("hello")
    one = Classifier("toxic_simple", tiny_o200k_model, reasoning="none").key_fields("hello")
    assert one["reasoning"] == "none"


def test_one_pass_through_the_engine(tiny_o200k_model: Path) -> None:
    texts = ["hello there", "buy cheap pills now", "a third text"]
    clf = Classifier("toxic_simple", tiny_o200k_model)
    one = Classifier("toxic_simple", tiny_o200k_model, reasoning="none", store=clf.store)
    results = one.classify(texts)
    for r in results:
        resp = r.model_response
        assert resp.finish_reason == "scored" and resp.output_token_ids == []
        assert resp.prompt_token_ids[-3:] == FINAL_HEADER
        lp = resp.final_token_logprobs
        p = math.exp(lp[16]) / (math.exp(lp[15]) + math.exp(lp[16]))
        assert r.metadata["p_violation"] == pytest.approx(p, abs=1e-9)
        assert r.verdict == (Verdict.VIOLATION if p >= 0.5 else Verdict.NO_VIOLATION)
        assert r.metadata["path"] == "one-pass"
    again = Classifier("toxic_simple", tiny_o200k_model, reasoning="none", store=clf.store)
    cached = again.classify(texts)
    assert all(r.cached for r in cached)
    assert [r.metadata["p_violation"] for r in cached] == [
        r.metadata["p_violation"] for r in results
    ]
    empty = Classifier(
        "toxic_simple", tiny_o200k_model, reasoning="none-empty-analysis", store=clf.store
    ).classify(texts[:1])[0]
    assert empty.model_response.prompt_token_ids[-9:] == EMPTY_ANALYSIS_HEADER
    assert empty.metadata["reasoning"] == "none-empty-analysis" and not empty.cached


def test_cli_flags(tiny_o200k_model: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from edge_guard.cli import main

    def cli(*args: str) -> tuple[int, str]:
        r = CliRunner().invoke(main, ["classify", "-m", str(tiny_o200k_model), *args])
        return r.exit_code, r.output

    code, out = cli("-p", "toxic_simple", "--reasoning", "none", "--json", "hello")
    assert code == 0, out
    import json

    got = json.loads(out)
    got = got[0] if isinstance(got, list) else got
    assert got["finish_reason"] == "scored" and got["metadata"]["path"] == "one-pass"
    code, out = cli("-p", "toxic_simple", "--cascade", "0.9:0.1", "hello")
    assert code == 2 and out.strip().splitlines() == [
        "error: --cascade '0.9:0.1': bounds must satisfy 0 <= LOW <= HIGH <= 1, got 0.9:0.1"
    ]
    code, out = cli("-p", "spam", "--reasoning", "none", "hello")
    assert code != 0 and "needs a closed output kind (binary, likert or labels), not 'json'" in out
    code, out = cli("-p", "toxic_simple", "--reasoning", "fast", "hello")
    assert code != 0 and "'fast' is not one of 'full', 'none', 'none-empty-analysis'" in out


def test_tiny_label_probabilities_do_not_underflow(tmp_path: Path, tiny_o200k_model: Path) -> None:
    pol = load_policy(
        make_policy(
            tmp_path, 'kind = "labels"\nlabels = ["fine", "spam offer"]\nviolation = ["spam offer"]'
        )
    )
    scoring = onepass.label_scoring(pol.output, Vocab.from_gguf(tiny_o200k_model))
    # exp(-800) is 0.0 as a float; the ratios are still e^-1 : e^0 within each label pair.
    resp = scored(seqs=[-801.0, -math.inf, -800.0, -math.inf])
    scores = onepass.label_probs(pol.output, scoring, resp)
    assert scores is not None and scores["label_mass"] == 0.0
    p = 1 / (1 + math.exp(-1))
    assert scores["label_probs"] == pytest.approx({"fine": 1 - p, "spam offer": p}, abs=1e-12)
    assert onepass.label_probs(pol.output, scoring, scored(seqs=[-math.inf] * 4)) is None


def test_a_labels_spaced_variant_counts_for_it(tiny_o200k_model: Path) -> None:
    """A model that answers " unsafe" (space first) scores label "unsafe": both first
    tokens count (one-pass scoring and full reasoning's first answer token alike)."""
    from edge_guard.policy.core import OutputSpec, Policy
    from edge_guard.policy.parsers import label_scores, label_token_map

    spec = OutputSpec.from_dict(
        {"kind": "labels", "labels": ["safe", "unsafe"], "violation": ["unsafe"]}, "test"
    )
    pol = Policy("words", "Answer safe or unsafe.", output=spec)
    vocab = Vocab.from_gguf(tiny_o200k_model)
    ids = {label: vocab.encoder.encode(label) for label in ("safe", "unsafe", " safe", " unsafe")}
    assert all(len(v) == 1 for v in ids.values())  # four distinct single tokens
    scoring = onepass.label_scoring(pol.output, vocab)
    assert scoring.token_map == label_token_map(spec, vocab.encoder)
    assert set(scoring.token_map or {}) == {v[0] for v in ids.values()}
    lp = {
        ids["safe"][0]: math.log(0.2),
        ids["unsafe"][0]: math.log(0.01),
        ids[" unsafe"][0]: math.log(0.6),
        ids[" safe"][0]: math.log(0.19),
    }
    resp = ModelResponse(None, "", "scored", [], final_token_logprobs=lp)
    probs = onepass.label_probs(pol.output, scoring, resp)
    assert probs is not None and probs["p_violation"] == pytest.approx(0.61)
    full = label_scores(spec, label_token_map(spec, vocab.encoder), lp)
    assert full is not None and full["p_violation"] == pytest.approx(0.61)
