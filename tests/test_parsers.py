"""Built-in answer parsers are strict: the whole final answer must match the declared format."""

from __future__ import annotations

import json
import time

from hypothesis import given
from hypothesis import strategies as st

from edge_guard.harmony.vocab import o200k_harmony_vocab
from edge_guard.policy.core import OutputSpec, Policy
from edge_guard.policy.parsers import builtin_parse, label_scores, label_token_map, run_parser
from edge_guard.response import ModelResponse
from edge_guard.result import Verdict

BINARY = OutputSpec()
LIKERT = OutputSpec("likert", tuple(str(i) for i in range(1, 6)), ())
LABELS = OutputSpec("labels", ("safe", "spam", "scam"), ("spam", "scam"))
JSON = OutputSpec("json", (), ())


def resp(text: str | None) -> ModelResponse:
    return ModelResponse(text, "", "return" if text is not None else "length")


@given(st.text())
def test_binary_accepts_exactly_a_lone_digit(text: str) -> None:
    r = builtin_parse(resp(text), BINARY)
    if text.strip(" \t\n\r\x0b\x0c") in ("0", "1"):
        assert r.parsed_successfully and r.fine_grain_label == text.strip()
    else:
        assert not r.parsed_successfully
        assert r.verdict == Verdict.UNDETERMINED


@given(st.text(), st.sampled_from(["0", "1"]), st.text(min_size=1))
def test_binary_rejects_digit_with_any_other_text(prefix: str, digit: str, suffix: str) -> None:
    text = prefix + digit + suffix
    if text.strip(" \t\n\r\x0b\x0c") not in ("0", "1"):
        assert not builtin_parse(resp(text), BINARY).parsed_successfully


@given(st.integers(-3, 9), st.sampled_from(["", " ", "\n", "  \n"]))
def test_likert_range(n: int, pad: str) -> None:
    r = builtin_parse(resp(f"{pad}{n}{pad}"), LIKERT)
    assert r.parsed_successfully == (1 <= n <= 5)
    if r.parsed_successfully:
        assert r.fine_grain_label == str(n) and r.float_label == float(n)


@given(st.text())
def test_likert_random_strings(text: str) -> None:
    r = builtin_parse(resp(text), LIKERT)
    assert r.parsed_successfully == (text.strip(" \t\n\r\x0b\x0c") in {"1", "2", "3", "4", "5"})


def test_labels_exact_match_case_insensitive() -> None:
    assert builtin_parse(resp(" Spam\n"), LABELS).fine_grain_label == "spam"
    assert builtin_parse(resp("spam!"), LABELS).parsed_successfully is False
    r = builtin_parse(resp("safe"), LABELS)
    assert r.verdict == Verdict.NO_VIOLATION
    assert builtin_parse(resp("scam"), LABELS).verdict == Verdict.VIOLATION


def test_json_output() -> None:
    ok = builtin_parse(resp(json.dumps({"violation": 1, "policy_category": "phishing", "confidence": "high",
                                        "rationale": "asks for a password"})), JSON)  # fmt: skip
    assert ok.verdict == Verdict.VIOLATION and ok.metadata["policy_category"] == "phishing"
    assert ok.metadata["confidence_value"] == 0.9
    assert builtin_parse(resp('{"violation": 0}'), JSON).verdict == Verdict.NO_VIOLATION
    for bad in (
        '```json\n{"violation": 1}\n```',
        '{"violation": 2}',
        "[1]",
        "violation: 1",
        '{"category": "x"}',
    ):
        assert builtin_parse(resp(bad), JSON).verdict == Verdict.UNDETERMINED, bad


@given(st.text())
def test_json_never_raises(text: str) -> None:
    builtin_parse(resp(text), JSON)


def test_missing_final_is_undetermined_for_every_kind() -> None:
    for spec in (BINARY, LIKERT, LABELS, JSON):
        assert builtin_parse(resp(None), spec).verdict == Verdict.UNDETERMINED


def test_label_scores_normalise_over_labels() -> None:
    vocab = o200k_harmony_vocab()
    tmap = label_token_map(BINARY, vocab.encoder)
    assert tmap is not None and set(tmap.values()) == {"0", "1"}
    zero, one = vocab.encoder.encode("0")[0], vocab.encoder.encode("1")[0]
    scores = label_scores(BINARY, tmap, {zero: -2.0, one: -1.0})
    assert scores is not None
    assert (
        sum(scores["label_probs"].values()) == 1.0
        or abs(sum(scores["label_probs"].values()) - 1) < 1e-12
    )
    assert scores["p_violation"] > 0.5


def test_custom_parser_failures_are_recorded() -> None:
    def raises(r):  # type: ignore[no-untyped-def]
        raise ValueError("nope")

    def wrong_type(r):  # type: ignore[no-untyped-def]
        return {"label": 1}

    def hangs(r):  # type: ignore[no-untyped-def]
        time.sleep(30)

    for fn, needle in (
        (raises, "raised ValueError"),
        (wrong_type, "returned dict"),
        (hangs, "did not return"),
    ):
        policy = Policy("p", "text", parser=fn, parser_source=fn.__name__)
        t0 = time.monotonic()
        r = run_parser(policy, resp("1"), time_limit=0.5)
        assert time.monotonic() - t0 < 10
        assert r.verdict == Verdict.UNDETERMINED
        assert needle in (r.error or "")
