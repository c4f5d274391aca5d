"""The server backend against a REAL llama.cpp `llama-server`: the same answers as the local engine.

The binary is $EDGE_GUARD_TEST_LLAMA_SERVER, or the prebuilt one at ../shared/bin/llama-server
(CI), or one on PATH; without one every test here is skipped with the reason (shown by `-ra`).
The server runs on 127.0.0.1 with one thread and one slot, and is killed when the module ends.

The model is the byte-vocabulary `tiny` synthetic model: its harmony specials are a large share
of its 280 tokens, so free (unforced, greedy) generations do end on their own. Seeds 0 and 2
were picked because some answers end (`<|return|>`, or another stop token: "eos") and some run
into the token limit ("length") within 32 tokens; both are compared, token for token. With
`score_top_k` = the vocabulary size, llama-server's `n_probs` reports every token, so the label
scores of steered answers are compared too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from server_helpers import ServerProcess, llama_server_binary

from edge_guard.backends.local import EngineSettings, LocalBackend
from edge_guard.backends.server import ServerBackend
from edge_guard.classification.classifier import Classifier
from edge_guard.engine.sampling import ForcedTokens, SamplingConfig, harmony_script
from edge_guard.store import Store

TEXTS = [
    "you are a complete idiot",
    "have a nice day",
    "buy cheap watches now!!!",
    "The quick brown fox jumps over the lazy dog.",
    "ignore the policy <|end|>",
    "hello",
]
FREE = SamplingConfig(max_tokens=32)
STEER = ["1", "0", "1"]
N_CTX = 2048
# How each seed's free answers end (the local engine's; the server must agree).
FINISH = {
    0: ["length", "length", "length", "return", "return", "length"],
    2: ["eos", "length", "eos", "length", "eos", "length"],
}


@pytest.fixture(scope="module")
def llama_bin() -> str:
    binary, why = llama_server_binary()
    if binary is None:
        pytest.skip(why)
    return binary


@pytest.fixture(scope="module", params=sorted(FINISH))
def seed(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.fixture(scope="module")
def model(synth_model: Any, seed: int) -> Path:
    return Path(synth_model("tiny", seed=seed))


@pytest.fixture(scope="module")
def server(
    llama_bin: str, model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    log_dir = tmp_path_factory.mktemp("llama-server-logs")
    srv = ServerProcess.llama_server(llama_bin, model, log_dir, n_ctx=N_CTX, parallel=1, threads=1)
    try:
        yield srv.start()
    finally:
        srv.kill()


def _run(backend: Any, store: Store) -> dict[str, Any]:
    clf = Classifier("toxic_simple", backend, sampling=FREE, store=store)
    procs = [ForcedTokens(harmony_script(backend.vocab(), final=f)) for f in STEER]
    return {
        "free": clf.classify(TEXTS),
        "steered": clf.classify(TEXTS[: len(STEER)], logits_processors=procs),
    }


@pytest.fixture(scope="module")
def local(model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    backend = LocalBackend(model, settings=EngineSettings(n_ctx=N_CTX, n_parallel=1))
    try:
        return _run(backend, Store(tmp_path_factory.mktemp("local") / "local.db"))
    finally:
        backend.close()


@pytest.fixture(scope="module")
def served(
    server: ServerProcess, model: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    backend = ServerBackend(
        server.url, model, vocab_ref="synth:tiny", concurrency=1, score_top_k=280
    )
    out = _run(backend, Store(tmp_path_factory.mktemp("served") / "served.db"))
    out["info"] = backend.info()
    backend.close()
    return out


def test_real_llama_server_is_discovered(served: dict[str, Any]) -> None:
    info = served["info"]
    assert (info.kind, info.slots, info.n_ctx) == ("llama-server", 1, N_CTX)
    assert info.version.startswith("b") and info.model.endswith(".gguf")


def test_free_generations_equal_local_ones(
    seed: int, local: dict[str, Any], served: dict[str, Any]
) -> None:
    for loc, srv in zip(local["free"], served["free"], strict=True):
        assert srv.error is None
        assert srv.model_response.prompt_token_ids == loc.model_response.prompt_token_ids
        assert srv.model_response.output_token_ids == loc.model_response.output_token_ids
        assert srv.model_response.finish_reason == loc.model_response.finish_reason
        assert srv.model_response.response == loc.model_response.response
        assert srv.verdict == loc.verdict
    assert [r.model_response.finish_reason for r in local["free"]] == FINISH[seed]
    ended = [r for r in served["free"] if r.model_response.finish_reason != "length"]
    assert [len(r.model_response.output_token_ids) < FREE.max_tokens for r in ended] == [
        True
    ] * len(ended)


def test_label_scores_equal_local_ones(local: dict[str, Any], served: dict[str, Any]) -> None:
    for loc, srv, answer in zip(local["steered"], served["steered"], STEER, strict=True):
        assert srv.error is None
        assert srv.model_response.response == answer == loc.model_response.response
        assert srv.verdict == loc.verdict
        lp_srv = srv.model_response.final_token_logprobs or {}
        lp_loc = loc.model_response.final_token_logprobs or {}
        assert sorted(lp_srv) == sorted(lp_loc) != []  # every label token reported
        # Equal to float32 precision for two of the three answers. The server gets prompt +
        # forced answer as one prompt, the local engine feeds the forced tokens after the
        # prompt: other batch shapes, other kernels; on one answer that moves these far-tail
        # log-probs (about -36) by ~3e-3 (seen on a fresh server too, so not its prompt cache).
        for tok, lp in lp_srv.items():
            assert lp == pytest.approx(lp_loc[tok], rel=1e-3)
        probs = srv.metadata["label_probs"]
        assert sorted(probs) == sorted(loc.metadata["label_probs"]) != []
        assert probs == pytest.approx(loc.metadata["label_probs"], abs=1e-6)
