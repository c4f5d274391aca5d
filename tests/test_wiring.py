"""Wiring between the parts, asserted as a user sees it (issue 28).

Each test here failed to exist while one line of wiring was broken and the suite stayed
green: the model identity, the one engine call for every (text, policy) pair, the spaced
label variants of one-pass scoring, the cascade deciding again after a policy edit, set
thresholds (classify, multi-policy runs, eval, the service), the service's `no_cache`, and
a stored conversation re-parsed under a new parser. `scripts/mutants.py` breaks each line
again and checks that the test named beside it in `scripts/mutants.toml` fails.

Thresholds are placed around the score the synthetic model gives (a "strict" set flags at
half of it, a "lax" one only halfway between it and 1), so the expected verdicts hold for
whatever score the model's random weights give.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from edge_guard.backends.local import LocalBackend
from edge_guard.classification import onepass
from edge_guard.classification.classifier import Classifier
from edge_guard.cli import main
from edge_guard.conversation import Conversation
from edge_guard.engine.engine import GenerationRequest
from edge_guard.engine.sampling import ForcedTokens, SamplingConfig, harmony_script
from edge_guard.result import Verdict
from edge_guard.store import Store
from tests.wiring_helpers import served_app, steer_marked_texts, write_policy, write_set

SHORT = SamplingConfig(max_tokens=12)
# yes/no labels: both words and their spaced variants (" yes", " no") are single o200k
# tokens, and the synthetic model gives them scores far from 0 and 1.
YES_NO = {"kind": "labels", "labels": ["yes", "no"], "violation": ["yes"]}
TEXT = "message number 1"


@pytest.fixture
def policies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A policy folder on the search path: `yn` (yes/no labels) and `plain` (binary)."""
    folder = tmp_path / "policies"
    write_policy(folder, "yn", YES_NO)
    write_policy(folder, "plain", {"kind": "binary"})
    monkeypatch.setenv("EDGE_GUARD_POLICIES", str(folder))
    return folder


def around(p: float) -> tuple[float, float]:
    """(strict, lax) thresholds: below the score p (flags it) and above it (does not)."""
    assert 0 < p < 1, f"the synthetic model's score {p} cannot show a threshold"
    return p / 2, (1 + p) / 2


def write_sets(folder: Path, p: float) -> tuple[float, float]:
    """Sets `strict` and `lax`: yn thresholded around the score p, plain unthresholded."""
    strict, lax = around(p)
    write_set(folder, "strict", ["yn", "plain"], {"yn": strict})
    write_set(folder, "lax", ["yn", "plain"], {"yn": lax})
    return strict, lax


def _cli(*args: str) -> Any:
    res = CliRunner().invoke(main, list(args))
    assert res.exit_code == 0, res.output
    return res


def _one_pass_score(model: Path, text: str = TEXT) -> float:
    """yn's one-pass P(violation) for `text`, from a plain classify."""
    out = json.loads(
        _cli("classify", "-p", "yn", "--reasoning", "none", "-m", str(model), "--json", text).stdout
    )
    return float(out["metadata"]["p_violation"])


# -- model identity ------------------------------------------------------------------------
def _replace(path: Path, new: Path) -> None:
    """`new` moved over `path` (as a download or a quantization writes it), mtime later."""
    mtime = path.stat().st_mtime_ns
    shutil.copyfile(new, path.with_suffix(".partial"))
    os.replace(path.with_suffix(".partial"), path)
    os.utime(path, ns=(mtime + 10**10, mtime + 10**10))  # later, on any clock granularity


@pytest.fixture
def two_models(synth_model: Callable[..., Path]) -> tuple[Path, Path]:
    old, new = synth_model("tiny", seed=11), synth_model("tiny", seed=12)
    assert old.stat().st_size == new.stat().st_size  # only the content tells them apart
    return old, new


def test_a_model_file_replaced_at_the_same_path_is_never_served_the_old_rows(
    tmp_path: Path, two_models: tuple[Path, Path]
) -> None:
    old, new = two_models
    path, db = tmp_path / "model.gguf", tmp_path / "store.db"
    shutil.copyfile(old, path)
    first = Classifier("toxic_simple", path, db=db, sampling=SHORT).classify([TEXT])[0]
    _replace(path, new)
    again = Classifier("toxic_simple", path, db=db, sampling=SHORT).classify([TEXT])[0]
    assert not again.cached and again.key != first.key
    digest = hashlib.sha256(new.read_bytes()).hexdigest()
    assert Store(db).get(again.key)["model"] == f"sha256:{digest}"


def test_a_model_file_replaced_at_the_same_path_answers_with_the_new_weights(
    tmp_path: Path, two_models: tuple[Path, Path]
) -> None:
    old, new = two_models
    path, other = tmp_path / "model.gguf", tmp_path / "other.gguf"
    shutil.copyfile(old, path)
    shutil.copyfile(new, other)
    first = Classifier("toxic_simple", path, db=tmp_path / "a.db", sampling=SHORT).classify([TEXT])
    truth = Classifier("toxic_simple", other, db=tmp_path / "b.db", sampling=SHORT).classify([TEXT])
    ids = lambda res: res[0].model_response.output_token_ids  # noqa: E731
    assert ids(first) != ids(truth)
    # the first file's engine loaded again, then the file replaced under it
    Classifier("toxic_simple", path, db=tmp_path / "c.db", sampling=SHORT).classify(["load"])
    _replace(path, new)
    again = Classifier("toxic_simple", path, db=tmp_path / "a.db", sampling=SHORT).classify([TEXT])
    assert ids(again) == ids(truth)


# -- one engine call for every (text, policy) pair ------------------------------------------
class CountingBackend(LocalBackend):
    """The local backend, counting the requests of each `execute` call."""

    calls: list[int]

    def execute(self, requests: Any, **kw: Any) -> Any:
        self.calls.append(len(requests))
        return super().execute(requests, **kw)


def test_every_text_policy_pair_goes_to_the_engine_in_one_call(
    tmp_path: Path, tiny_model: Path, policies: Path
) -> None:
    backend = CountingBackend(tiny_model)
    backend.calls = []
    clf = Classifier(["toxic_simple", "yn", "plain"], backend, db=tmp_path / "s.db", sampling=SHORT)
    texts = ["first text", "second text"]
    results = clf.classify(texts)
    assert [sorted(r.results) for r in results] == [["plain", "toxic_simple", "yn"]] * 2
    assert backend.calls == [6]  # the engine batches all six pairs together


# -- one-pass scoring counts the spaced label variants ---------------------------------------
def test_one_pass_score_counts_the_spaced_answers(
    tmp_path: Path, tiny_o200k_model: Path, policies: Path
) -> None:
    clf = Classifier("yn", tiny_o200k_model, db=tmp_path / "s.db", reasoning="none")
    vocab = clf.backend.vocab()
    ids = {w: vocab.encoder.encode(w) for w in ("yes", "no", " yes", " no")}
    assert all(len(v) == 1 for v in ids.values()), ids
    texts = [f"message number {i}" for i in range(8)]
    results = clf.classify(texts)
    # The same prompt scored directly: P(yes) counts "yes" and " yes" against all four.
    requests = [
        GenerationRequest(
            clf.prompt(t).token_ids + onepass.answer_header(vocab, "none"),
            SamplingConfig(max_tokens=1),
            score_only=True,
            score_token_ids=[v[0] for v in ids.values()],
        )
        for t in texts
    ]
    seen = 0
    for j, resp in clf.backend.execute(requests):
        e = {w: math.exp(resp.final_token_logprobs[v[0]]) for w, v in ids.items()}
        spaced = (e["yes"] + e[" yes"]) / sum(e.values())
        plain = e["yes"] / (e["yes"] + e["no"])
        if (spaced >= 0.5) == (plain >= 0.5):
            continue  # this text's verdict does not depend on the spaced answers
        seen += 1
        res = results[j]
        assert res.metadata["p_violation"] == pytest.approx(spaced, abs=1e-6)
        assert res.verdict == (Verdict.VIOLATION if spaced >= 0.5 else Verdict.NO_VIOLATION)
    assert seen, "no text whose verdict depends on the spaced answers: pick other texts"


# -- the cascade decides again after a policy edit --------------------------------------------
def test_cascade_decides_again_after_a_threshold_edit(
    tmp_path: Path, tiny_o200k_model: Path, policies: Path
) -> None:
    strict, lax = around(_one_pass_score(tiny_o200k_model))
    toml = policies / "yn" / "policy.toml"

    def verdict() -> tuple[str, bool]:
        out = json.loads(
            _cli(
                "classify",
                "-p",
                "yn",
                "--cascade",
                "0:0",
                "-m",
                str(tiny_o200k_model),
                "--json",
                TEXT,
            ).stdout
        )
        assert out["metadata"]["path"] == "one-pass"  # band [0, 0]: nothing escalates
        return out["verdict"], out["cached"]

    toml.write_text(toml.read_text().replace("threshold = 0.5", f"threshold = {strict!r}"))
    assert verdict() == ("violation", False)
    assert verdict() == ("violation", True)  # stored decision, same policy
    toml.write_text(toml.read_text().replace(f"threshold = {strict!r}", f"threshold = {lax!r}"))
    assert verdict()[0] == "no_violation"  # the edit is decided again, not served stale


# -- set thresholds: classify, multi-policy runs, eval --------------------------------------
def test_set_thresholds_decide_classify_with_a_set(tiny_o200k_model: Path, policies: Path) -> None:
    write_sets(policies, _one_pass_score(tiny_o200k_model))
    for name, want in (("strict", "violation"), ("lax", "no_violation")):
        out = json.loads(
            _cli(
                "classify",
                "--set",
                name,
                "--reasoning",
                "none",
                "-m",
                str(tiny_o200k_model),
                "--json",
                TEXT,
            ).stdout
        )
        assert out["results"]["yn"]["verdict"] == want, name
        assert out["flagged"] == (
            want == "violation" or out["results"]["plain"]["verdict"] != "no_violation"
        )


def test_set_thresholds_decide_a_multi_policy_run_and_its_eval(
    tmp_path: Path, tiny_o200k_model: Path, policies: Path
) -> None:
    from edge_guard.policy.sets import load_set
    from edge_guard.runs.multi import execute_multi_run
    from edge_guard.runs.multi_plan import plan_multi_run
    from tests.runs_helpers import write_jsonl

    thresholds = dict(
        zip(("strict", "lax"), write_sets(policies, _one_pass_score(tiny_o200k_model)), strict=True)
    )
    data = write_jsonl(tmp_path / "d.jsonl", [{"id": "a", "text": TEXT, "y": 0}])
    for name, want in (("strict", "violation"), ("lax", "no_violation")):
        clf = Classifier("yn", tiny_o200k_model, db=tmp_path / "s.db", reasoning="none")
        plan = plan_multi_run(data, clf, load_set(name), name=f"run-{name}")
        live: dict[int, str] = {}

        def on_result(
            _progress: Any, _t: int, p: int, res: Any, live: dict[int, str] = live
        ) -> None:
            live[p] = str(res.verdict)

        execute_multi_run(plan, clf, on_result=on_result)
        assert live[plan.pset.names.index("yn")] == want, name  # as each pair completes
        ev = json.loads(
            _cli("eval", f"run-{name}", "--db", str(tmp_path / "s.db"), "--json").stdout
        )
        counts = ev["per_policy"]["yn"]["verdicts"]
        assert counts[want] == 1 and ev["thresholds"]["yn"] == thresholds[name]


# -- the service: set thresholds and no_cache -----------------------------------------------
def serve_args(tmp_path: Path, model: Path, *more: str) -> list[str]:
    return [
        "--model",
        str(model),
        "--policy",
        "yn",
        "--max-tokens",
        "64",
        "--parallel",
        "2",
        "--ctx",
        "4096",
        "--db",
        str(tmp_path / "serve.db"),
        *more,
    ]


@pytest.fixture
def service(
    tmp_path: Path, tiny_o200k_model: Path, policies: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """A TestClient on the app `edge-guard serve` builds (no socket); marked texts steered."""
    steer_marked_texts(monkeypatch)
    with served_app(monkeypatch, serve_args(tmp_path, tiny_o200k_model)) as client:
        yield client


def test_service_refuses_a_wrong_or_missing_key(
    tmp_path: Path, tiny_o200k_model: Path, policies: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EG_WIRING_KEY", "s3cret-key")
    args = serve_args(tmp_path, tiny_o200k_model, "--api-key-env", "EG_WIRING_KEY")
    with served_app(monkeypatch, args) as client:
        body = {"text": "hello", "policy": "yn", "max_tokens": 4}
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "s3cret-key"}):
            r = client.post("/v1/classify", json=body, headers=headers)
            assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
            assert "s3cret" not in r.text
        ok = client.post("/v1/classify", json=body, headers={"Authorization": "Bearer s3cret-key"})
        assert ok.status_code == 200, ok.text
        assert client.get("/health").status_code == 200  # open: no data in it


def test_service_applies_a_sets_thresholds(service: Any, policies: Path) -> None:
    from tests.wiring_helpers import SAY_NO, SAY_YES

    def classify(policy: str, text: str) -> dict[str, Any]:
        r = service.post("/v1/classify", json={"text": text, "policy": policy})
        assert r.status_code == 200, r.text
        return {x["policy"]: x for x in r.json()["results"]}["yn"]

    said_no, said_yes = classify("yn", SAY_NO), classify("yn", SAY_YES)
    assert (said_no["verdict"], said_yes["verdict"]) == ("no_violation", "violation")
    write_set(policies, "strict", ["yn", "plain"], {"yn": around(said_no["p_violation"])[0]})
    write_set(policies, "lax", ["yn", "plain"], {"yn": around(said_yes["p_violation"])[1]})
    assert classify("strict", SAY_NO)["verdict"] == "violation"  # its score is over the bar
    assert classify("lax", SAY_YES)["verdict"] == "no_violation"  # its score is under it
    mod = service.post("/v1/moderations", json={"input": SAY_NO, "model": "strict"}).json()
    assert mod["results"][0]["categories"]["yn"] is True and mod["results"][0]["flagged"]


def test_service_no_cache_recomputes(service: Any) -> None:
    body = {"text": "hello there", "policy": "yn", "max_tokens": 8}

    def cached(**extra: Any) -> bool:
        r = service.post("/v1/classify", json={**body, **extra})
        assert r.status_code == 200, r.text
        return bool(r.json()["results"][0]["cached"])

    assert (cached(), cached(), cached(no_cache=True), cached()) == (False, True, False, True)


# -- a stored conversation re-parsed under a new parser -------------------------------------
def test_a_stored_conversation_is_reparsed_as_a_conversation(
    tmp_path: Path, tiny_o200k_model: Path
) -> None:
    folder = write_policy(tmp_path / "pols", "conv", {"kind": "binary"}, judges="assistant")
    parse = folder / "parse.py"
    parse.write_text(
        "from edge_guard.policy.core import OutputSpec\n"
        "from edge_guard.policy.parsers import builtin_parse\n\n\n"
        "def parse(response):\n    return builtin_parse(response, OutputSpec())\n"
    )
    conv = Conversation(
        [
            {"role": "user", "content": "how do I bake bread?"},
            {"role": "assistant", "content": "Mix flour, water and yeast."},
        ]
    )
    db = tmp_path / "s.db"

    def classify() -> Any:
        clf = Classifier(folder, tiny_o200k_model, db=db, sampling=SamplingConfig(max_tokens=40))
        steer = ForcedTokens(harmony_script(clf.backend.vocab(), "1", "checked"))
        return clf.classify([conv], logits_processors=steer)[0]

    first = classify()
    parse.write_text(parse.read_text() + "\n# a parser edit: a new policy version\n")
    again = classify()  # the stored answer, parsed again by the edited parser
    assert again.cached and again.key == first.key
    assert again.verdict == first.verdict == Verdict.VIOLATION
    assert (
        again.to_dict()["conversation"]
        == first.to_dict()["conversation"]
        == json.loads(conv.canonical())
    )
    assert again.text == first.text == "Mix flour, water and yeast."


# -- a custom parser never decides a cut-off answer ------------------------------------------
EAGER_PARSE = """
from edge_guard import ClassificationResult, Verdict


def parse(response):  # says "safe" to anything but "1", verdict and all
    text = (response.response or "").strip()
    flagged = text == "1"
    return ClassificationResult(binary_label=flagged, fine_grain_label=text or "0",
                                float_label=float(flagged), metadata={},
                                model_response=response, parsed_successfully=True,
                                verdict=Verdict.VIOLATION if flagged else Verdict.NO_VIOLATION)
"""


def test_a_custom_parser_never_turns_a_cut_off_answer_into_a_verdict(
    tmp_path: Path, tiny_model: Path
) -> None:
    folder = write_policy(tmp_path / "pols", "eager", {"kind": "binary"})
    (folder / "parse.py").write_text(EAGER_PARSE)
    clf = Classifier(
        folder, tiny_model, db=tmp_path / "s.db", sampling=SamplingConfig(max_tokens=6)
    )
    res = clf.classify(["is this fine?"])[0]
    assert res.model_response.response is None  # no complete final answer
    assert res.verdict == Verdict.UNDETERMINED  # never "safe", whatever parse() says
    assert Store(tmp_path / "s.db").get(res.key)["verdict"] == "undetermined"


# -- an edited policy is asked again ---------------------------------------------------------
def test_an_edited_policy_text_is_never_served_the_old_texts_answers(
    tmp_path: Path, tiny_model: Path
) -> None:
    folder = write_policy(tmp_path / "pols", "edited", {"kind": "binary"})
    db = tmp_path / "s.db"

    def classify() -> Any:
        return Classifier(folder, tiny_model, db=db, sampling=SHORT).classify([TEXT])[0]

    first = classify()
    assert classify().cached  # same policy: the stored answer
    (folder / "policy.md").write_text("Is the message rude? Answer 1 if it is, 0 if not.\n")
    again = classify()
    assert not again.cached and again.key != first.key
    prompt = again.model_response.prompt_token_ids
    vocab = Classifier(folder, tiny_model, db=db).backend.vocab()
    assert "Is the message rude?" in vocab.decode(prompt)  # asked with the new text
