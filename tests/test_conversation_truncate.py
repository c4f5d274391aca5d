"""--truncate keeps the judged message: context first, the judged message cut in its own
middle only when it alone does not fit, the cut recorded; `edge-guard prompt` shows it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from edge_guard.backends.local import EngineSettings
from edge_guard.classification.classifier import Classifier
from edge_guard.classification.truncation import TRUNCATION_MARKER
from edge_guard.conversation import Conversation, quoted
from edge_guard.engine.sampling import SamplingConfig
from edge_guard.store import Store

N_CTX, MAX_TOKENS = 2048, 4
LONG = "CTX-HEAD " + "blah " * 3000 + "CTX-TAIL"
JUDGED = "Sure: JUDGED-START take the pipe JUDGED-END"


def _classifier(model: Path, tmp_path: Path, policy: str) -> Classifier:
    return Classifier(
        policy,
        model,
        truncate=True,
        store=Store(tmp_path / "s.db"),
        sampling=SamplingConfig(max_tokens=MAX_TOKENS),
        engine_settings=EngineSettings(n_ctx=N_CTX, n_parallel=2),
    )


@pytest.fixture
def clf(tiny_o200k_model: Path, tmp_path: Path) -> Classifier:
    return _classifier(tiny_o200k_model, tmp_path, "harmful_assistance")


def _prompt_text(clf: Classifier, result: Any) -> str:
    ids = result.model_response.prompt_token_ids
    assert len(ids) + MAX_TOKENS <= N_CTX
    return clf.backend.vocab().decode(ids)


def test_context_is_cut_first_and_the_judged_message_is_read_whole(clf: Classifier) -> None:
    conv = Conversation(
        [{"role": "user", "content": LONG}, {"role": "assistant", "content": JUDGED}], "assistant"
    )
    result = clf.classify([conv])[0]
    assert result.error is None and result.text == JUDGED
    meta = result.metadata
    assert (meta["truncated"], meta["truncation"], meta["cut_messages"], meta["judged_cut"]) == (
        True,
        "context",
        [1],
        False,
    )
    assert meta["kept_tokens"] < meta["original_tokens"]
    shown = _prompt_text(clf, result)
    assert "Classify message [2] (assistant)" in shown
    assert "[2] assistant << classify this message\n" + quoted(JUDGED) in shown  # whole
    assert "CTX-HEAD" in shown and "CTX-TAIL" in shown
    assert json.dumps(TRUNCATION_MARKER)[1:-1] in shown  # the marker, inside the cut message
    assert clf.key(conv) == result.key and "truncate" in clf.key_fields(conv)
    assert clf.classify([conv])[0].cached  # the cut is in the key: the same cut hits


def test_a_judged_message_too_long_alone_is_cut_in_its_own_middle(clf: Classifier) -> None:
    judged = "JUDGED-START " + "word " * 3000 + "JUDGED-END"
    conv = Conversation(
        [{"role": "user", "content": LONG}, {"role": "assistant", "content": judged}], "assistant"
    )
    result = clf.classify([conv])[0]
    meta = result.metadata
    assert (meta["truncation"], meta["cut_messages"], meta["judged_cut"]) == (
        "judged",
        [1, 2],
        True,
    )
    shown = _prompt_text(clf, result)
    assert '[1] user\n"[...]"' in shown  # the context went first, to the marker alone
    assert "JUDGED-START" in shown and "JUDGED-END" in shown
    assert "Classify message [2] (assistant)" in shown
    assert result.text == judged  # the result is the whole judged message's


def test_target_all_cuts_every_message_alike(tiny_o200k_model: Path, tmp_path: Path) -> None:
    clf = _classifier(tiny_o200k_model, tmp_path, "toxic_simple")  # judges any input
    conv = Conversation(
        [
            {"role": "user", "content": LONG},
            {"role": "assistant", "content": LONG.replace("CTX", "ANS")},
        ],
        "all",
    )
    result = clf.classify([conv])[0]
    assert (result.metadata["truncation"], result.metadata["cut_messages"]) == ("judged", [1, 2])
    shown = _prompt_text(clf, result)
    for mark in ("CTX-HEAD", "CTX-TAIL", "ANS-HEAD", "ANS-TAIL", "Classify the whole conversation"):
        assert mark in shown


def test_an_item_that_cannot_fit_is_an_error_for_that_item_only(clf: Classifier) -> None:
    crowd = Conversation(
        [{"role": "user", "content": f"m{i}"} for i in range(600)]
        + [{"role": "assistant", "content": JUDGED}],
        "assistant",
    )
    fits = Conversation(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": JUDGED}], "assistant"
    )
    bad, good = clf.classify([crowd, fits])
    assert bad.error is not None and bad.error.startswith("prompt cannot fit a 2048-token context")
    assert "\n" not in bad.error and str(bad.verdict) == "undetermined"
    assert good.error is None and "truncated" not in good.metadata


def _cli(*args: str) -> Any:
    from edge_guard.cli import main

    return CliRunner().invoke(main, list(args))


@pytest.mark.parametrize("reasoning", ["full", "none"])
def test_prompt_command_shows_exactly_what_classify_sends(
    tiny_o200k_model: Path, tmp_path: Path, reasoning: str
) -> None:
    messages = tmp_path / "conv.json"
    messages.write_text(
        json.dumps([{"role": "user", "content": LONG}, {"role": "assistant", "content": JUDGED}])
    )
    common = [
        "-p",
        "harmful_assistance",
        "-m",
        str(tiny_o200k_model),
        "--messages",
        str(messages),
        "--truncate",
        "--ctx",
        str(N_CTX),
        "--max-tokens",
        str(MAX_TOKENS),
        "--reasoning",
        reasoning,
        "--effort",
        "low",
        "--date",
        "2020-01-01",
    ]
    shown = _cli("prompt", *common, "--json")
    assert shown.exit_code == 0, shown.output
    prompt = json.loads(shown.stdout)
    sent = _cli("classify", *common, "--db", str(tmp_path / "s.db"), "--parallel", "2", "--json")
    assert sent.exit_code == 0, sent.output
    result = json.loads(sent.stdout)
    row = Store(tmp_path / "s.db").get(result["key"])
    assert json.loads(row["prompt_token_ids"]) == prompt["token_ids"]
    assert prompt["truncation"] == {k: result["metadata"][k] for k in prompt["truncation"]}
    assert prompt["truncation"]["cut_messages"] == [1]
    plain = _cli("prompt", *common[:-4])
    assert plain.exit_code == 0 and plain.stdout.endswith(
        "<|end|><|start|>assistant"
        + ("<|channel|>final<|message|>" if reasoning == "none" else "")
        + "\n"
    )
    assert "truncated to fit 2048 tokens" in plain.stderr and "cut message(s) 1" in plain.stderr
