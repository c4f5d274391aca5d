"""classify(): seed-style policies, verdicts, label scores, and the cache (hits never load a model)."""

from __future__ import annotations

import math
import types
from pathlib import Path

import pytest

import edge_guard.backends.local as backends
from edge_guard import ClassificationResult, Verdict, classify
from edge_guard.classification.classifier import Classifier
from edge_guard.engine.engine import GenerationRequest
from edge_guard.engine.sampling import ForcedTokens, SamplingConfig, harmony_script
from edge_guard.harmony.vocab import Vocab
from edge_guard.policy.core import load_policy
from edge_guard.policy.parsers import label_token_map
from edge_guard.store import Store

SHORT = SamplingConfig(max_tokens=12)


def steer(model: Path, final: str, analysis: str = "thinking") -> ForcedTokens:
    return ForcedTokens(harmony_script(Vocab.from_gguf(model), final, analysis))


@pytest.fixture
def no_model_load(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Fail the test if anything loads a model."""

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(backends, "shared_engine", boom)


def seed_module() -> types.ModuleType:
    """A policy module written exactly the seed's way."""
    mod = types.ModuleType("toy_example_policy")
    mod.POLICY = "Output exactly `1` if the user message is toxic, and `0` if it is not\n"

    def parse(response):  # type: ignore[no-untyped-def]
        text = response.response.strip()
        binary_label = text == "1"
        return ClassificationResult(
            binary_label=binary_label,
            fine_grain_label="1" if binary_label else "0",
            float_label=1.0 if binary_label else 0.0,
            metadata={},
            model_response=response,
            parsed_successfully=(text == "1" or text == "0"),
        )

    mod.parse = parse
    return mod


def test_seed_style_module_policy(tiny_o200k_model: Path) -> None:
    mod = seed_module()
    r1 = classify(
        "I hate puppies",
        mod,
        model=tiny_o200k_model,
        logits_processors=steer(tiny_o200k_model, "1"),
    )
    r0 = classify(
        "I like puppies",
        mod,
        model=tiny_o200k_model,
        logits_processors=steer(tiny_o200k_model, "0"),
    )
    assert (r1.binary_label, r1.fine_grain_label, r1.verdict) == (True, "1", Verdict.VIOLATION)
    assert (r0.binary_label, r0.fine_grain_label, r0.verdict) == (False, "0", Verdict.NO_VIOLATION)
    assert r1.model_response.reasoning == "thinking"
    assert r1.float_label == 1.0  # the seed parser's own value is kept
    assert set(r1.metadata["label_probs"]) == {"0", "1"}  # scores added beside it


def test_seed_parser_crash_on_cut_off_answer_is_undetermined(tiny_o200k_model: Path) -> None:
    r = classify("text", seed_module(), model=tiny_o200k_model, sampling=SHORT)
    assert r.model_response.finish_reason == "length"
    assert r.model_response.response is None
    assert r.verdict == Verdict.UNDETERMINED
    assert "parse() raised AttributeError" in r.error


@pytest.mark.parametrize(
    ("answer", "verdict", "label"),
    [
        ("1", Verdict.VIOLATION, "1"),
        ("0", Verdict.NO_VIOLATION, "0"),
        (" 1\n", Verdict.VIOLATION, "1"),
        ("1.", Verdict.UNDETERMINED, None),
        ("The answer is 1", Verdict.UNDETERMINED, None),
        ("I'm sorry, but I can't help with that.", Verdict.UNDETERMINED, None),
        ("", Verdict.UNDETERMINED, None),
        ("2", Verdict.UNDETERMINED, None),
    ],
)
def test_binary_verdicts_are_strict(
    tiny_o200k_model: Path, answer: str, verdict: Verdict, label: str | None
) -> None:
    r = classify(
        "x",
        "toxic_simple",
        model=tiny_o200k_model,
        logits_processors=steer(tiny_o200k_model, answer),
    )
    assert r.model_response.response == answer
    assert r.verdict == verdict
    assert r.fine_grain_label == label
    if verdict == Verdict.UNDETERMINED:
        assert r.binary_label is None and not r.parsed_successfully


def test_cut_off_answer_is_undetermined_never_safe(tiny_o200k_model: Path) -> None:
    r = classify("x", "toxic_simple", model=tiny_o200k_model, sampling=SHORT)
    assert r.verdict == Verdict.UNDETERMINED
    assert r.binary_label is None


def test_label_scores_binary_sum_to_one(tiny_o200k_model: Path) -> None:
    r = classify(
        "x", "toxic_simple", model=tiny_o200k_model, logits_processors=steer(tiny_o200k_model, "1")
    )
    probs = r.metadata["label_probs"]
    assert set(probs) == {"0", "1"}
    assert sum(probs.values()) == pytest.approx(1.0)
    assert r.float_label == pytest.approx(probs["1"])  # built-in parser: float_label = P(violation)
    # P(violation) is the model's own next-token distribution at the first answer token,
    # normalised over the label tokens: recompute it with a score-only pass over the prompt
    # and the output up to that token (a different batch shape: equal to float rounding).
    resp = r.model_response
    vocab = Vocab.from_gguf(tiny_o200k_model)
    k = (
        len(resp.output_token_ids)
        - 1
        - resp.output_token_ids[::-1].index(vocab.special_id("<|message|>"))
    )  # the final channel's <|message|>: the answer starts after it
    assert resp.output_token_ids[k + 1] == vocab.encoder.encode("1")[0]
    labels = label_token_map(load_policy("toxic_simple").output, vocab.encoder)
    assert labels is not None and set(labels.values()) == {"0", "1"}
    req = GenerationRequest(
        resp.prompt_token_ids + resp.output_token_ids[: k + 1],
        score_only=True,
        score_token_ids=sorted(labels),
    )
    [(_, scored)] = list(backends.LocalBackend(tiny_o200k_model).execute([req]))
    mass = {"0": 0.0, "1": 0.0}
    for t, lp in scored.final_token_logprobs.items():
        mass[labels[t]] += math.exp(lp)
    assert r.metadata["p_violation"] == pytest.approx(mass["1"] / (mass["0"] + mass["1"]), rel=1e-4)
    assert r.metadata["p_violation"] == probs["1"]


def test_label_scores_likert_expected_rating(tiny_o200k_model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "rate"
    folder.mkdir()
    (folder / "policy.md").write_text("Rate the message from 1 to 5. Answer with one digit.\n")
    (folder / "policy.toml").write_text('[output]\nkind = "likert"\nmin = 1\nmax = 5\n')
    r = classify(
        "x", folder, model=tiny_o200k_model, logits_processors=steer(tiny_o200k_model, "4")
    )
    probs = r.metadata["label_probs"]
    assert list(probs) == ["1", "2", "3", "4", "5"]
    assert sum(probs.values()) == pytest.approx(1.0)
    expected = sum(int(k) * p for k, p in probs.items())
    assert r.float_label == pytest.approx(expected)
    assert r.fine_grain_label == "4"
    assert r.verdict == Verdict.NO_VIOLATION  # likert without violation values


def test_list_input_keeps_order_and_dedupes(tiny_o200k_model: Path) -> None:
    texts = ["a", "b", "a", "c"]
    rs = classify(texts, "toxic_simple", model=tiny_o200k_model, sampling=SHORT)
    assert [r.text for r in rs] == texts
    assert rs[0].key == rs[2].key
    store = Store()
    assert store.query("SELECT count(*) AS n FROM results")[0]["n"] == 3


def test_cache_hit_does_not_load_the_model(
    tiny_o200k_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = classify("hello", "toxic_simple", model=tiny_o200k_model, sampling=SHORT)
    assert not first.cached
    backends.release_engine()

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(backends, "shared_engine", boom)
    again = classify("hello", "toxic_simple", model=tiny_o200k_model, sampling=SHORT)
    assert again.cached
    assert again.model_response.output_token_ids == first.model_response.output_token_ids
    assert again.key == first.key


@pytest.mark.parametrize(
    "change",
    [
        {"effort": "high"},
        {"style": "chat-template"},
        {"date": "2025-01-01"},
        {"sampling": SamplingConfig(max_tokens=13)},
        {"sampling": SamplingConfig(max_tokens=12, temperature=0.7, seed=1)},
    ],
)
def test_cache_miss_when_output_inputs_change(tiny_o200k_model: Path, change: dict) -> None:
    base = Classifier("toxic_simple", tiny_o200k_model, sampling=SHORT)
    other = Classifier("toxic_simple", tiny_o200k_model, **{"sampling": SHORT, **change})
    assert base.key("hello") != other.key("hello")


def test_greedy_key_ignores_seed(tiny_o200k_model: Path) -> None:
    a = Classifier("toxic_simple", tiny_o200k_model, sampling=SamplingConfig(max_tokens=12, seed=1))
    b = Classifier("toxic_simple", tiny_o200k_model, sampling=SamplingConfig(max_tokens=12, seed=2))
    assert a.key("hello") == b.key("hello")


def test_policy_text_edit_is_a_miss_parser_edit_reparses_without_model(
    tiny_o200k_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "pol"
    folder.mkdir()
    (folder / "policy.md").write_text("Answer 1 if toxic, else 0.\n")
    r = classify(
        "t", folder, model=tiny_o200k_model, logits_processors=steer(tiny_o200k_model, "yes")
    )
    assert r.verdict == Verdict.UNDETERMINED  # "yes" is not a binary answer
    # A custom parser that accepts "yes": same prompt → same key → stored answer re-parsed.
    (folder / "parse.py").write_text(
        "from edge_guard import ClassificationResult\n"
        "def parse(response):\n"
        "    ok = response.response.strip() == 'yes'\n"
        "    return ClassificationResult(ok, 'yes' if ok else None, 1.0 if ok else None, {}, response, ok)\n"
    )
    backends.release_engine()
    monkeypatch.setattr(
        backends, "shared_engine", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded"))
    )
    r2 = classify(
        "t", folder, model=tiny_o200k_model, logits_processors=steer(tiny_o200k_model, "yes")
    )
    assert r2.cached and r2.verdict == Verdict.VIOLATION
    # The answer is stored once; each parser version keeps its own parse of it.
    from edge_guard.policy.core import load_policy

    assert Store().query("SELECT verdict FROM results") == [{"verdict": "undetermined"}]
    stored = Store().query(
        "SELECT verdict FROM parses WHERE policy_hash = ?", [load_policy(folder).hash]
    )
    assert stored == [{"verdict": "violation"}]
    # Editing the policy text changes the prompt: a miss.
    (folder / "policy.md").write_text("Answer 1 if toxic, else 0. Be careful.\n")
    c1 = Classifier(folder, tiny_o200k_model)
    assert c1.key("t") != r2.key


def test_no_cache_recomputes_and_overwrites(tiny_o200k_model: Path) -> None:
    first = classify("z", "toxic_simple", model=tiny_o200k_model, sampling=SHORT)
    second = classify("z", "toxic_simple", model=tiny_o200k_model, sampling=SHORT, use_cache=False)
    assert not second.cached
    assert second.key == first.key
    rows = Store().query("SELECT count(*) AS n FROM results")
    assert rows[0]["n"] == 1


def test_error_rows_are_retried(tiny_o200k_model: Path) -> None:
    c = Classifier("toxic_simple", tiny_o200k_model, sampling=SHORT)
    key = c.key("retry me")
    Store().put(
        {
            "key": key,
            "text": "retry me",
            "verdict": "undetermined",
            "error": "server said 500",
            "policy_hash": c.policy.hash,
            "parsed": 0,
        }
    )
    r = c.classify(["retry me"])[0]
    assert not r.cached and r.error is None
    row = Store().get(key)
    assert row is not None and row["error"] is None and row["output_token_ids"] != "[]"


def test_result_row_holds_everything(tiny_o200k_model: Path) -> None:
    r = classify(
        "row check",
        "toxic_simple",
        model=tiny_o200k_model,
        logits_processors=steer(tiny_o200k_model, "0"),
    )
    row = Store().get(r.key)
    assert row is not None
    assert row["model"].startswith("sha256:") and row["engine"].startswith("llama-cpp-python")
    for col in (
        "style",
        "effort",
        "sampling",
        "policy_hash",
        "text",
        "prompt_token_ids",
        "output_token_ids",
        "reasoning",
        "final",
        "verdict",
        "label_probs",
        "finish_reason",
        "prompt_tokens",
        "prompt_ms",
        "output_tokens",
        "created_at",
    ):
        assert row[col] not in (None, ""), col
    assert row["final"] == "0" and row["verdict"] == "no_violation"
