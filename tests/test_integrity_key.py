"""The cache key holds every setting that can change the output, and nothing else (issue 16, item 2).

A result decoded with other numerics (several sequences in one batch, flash attention,
another batch size, another GPU/CPU split) is not served to a run that asked for another
numerics class; thread count and context size (when the prompt fits) never change it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

import edge_guard.engine.llama_runtime as rt
from edge_guard.backends.local import EngineSettings, LocalBackend
from edge_guard.classification.classifier import Classifier
from edge_guard.engine.sampling import ForcedTokens, harmony_script
from edge_guard.harmony.vocab import Vocab
from edge_guard.store import Store

TEXT = "is this toxic?"


def _key(
    model: Path,
    store: Store,
    *,
    policy: Any = "toxic_simple",
    parallel: int | None = None,
    processor: Any = None,
    **settings: Any,
) -> str:
    clf = Classifier(
        policy, model, store=store, parallel=parallel, engine_settings=EngineSettings(**settings)
    )
    return clf.key(TEXT, processor=processor)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "db.sqlite")


def test_numerics_settings_change_the_key(tiny_model: Path, store: Store) -> None:
    base = _key(tiny_model, store)  # defaults: 8 parallel, flash attention auto (off on CPU)
    # Sequential decoding (`--parallel 1`: one slot, one resident prefix) is its own class.
    seq = _key(tiny_model, store, parallel=1, n_parallel=1)
    assert seq != base
    assert _key(tiny_model, store, n_parallel=1) == seq
    # Every width above 1 batches sequences together; one sequence at a time beside up to 8
    # resident prefixes is not bit-identical to sequential either.
    assert _key(tiny_model, store, parallel=2) == _key(tiny_model, store, parallel=8) == base
    assert _key(tiny_model, store, parallel=1) == base
    assert _key(tiny_model, store, n_parallel=1, extra={"max_prefixes": 4}) == base
    # swa_full=False decodes one sequence at a time (the engine forces it).
    assert _key(tiny_model, store, swa_full=False) == seq
    # Flash attention on (auto resolves to off on a CPU-only split).
    assert _key(tiny_model, store, flash_attn=True) != base
    assert _key(tiny_model, store, flash_attn=False) == base
    # The batch size (= micro-batch size) splits the prompt differently.
    assert _key(tiny_model, store, extra={"n_batch": 256}) != base
    assert _key(tiny_model, store, extra={"n_batch": 512}) == base


def test_gpu_split_changes_the_key_where_a_gpu_exists(
    tiny_model: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    cpu = [_key(tiny_model, store, n_gpu_layers=n) for n in (0, 3, "auto")]
    if rt.supports_gpu():
        pytest.skip("this llama.cpp build has a GPU backend: the CPU-only half does not apply")
    assert len(set(cpu)) == 1  # without a GPU backend every layer runs on the CPU anyway
    monkeypatch.setattr(rt, "supports_gpu", lambda: True)
    auto_split = LocalBackend(tiny_model).numerics()["gpu_layers"]
    keys = {n: _key(tiny_model, store, n_gpu_layers=n) for n in (0, 1, 99, -1, "auto")}
    assert keys[0] != keys[1] != keys[99]
    assert keys[99] == keys[-1] == keys["auto"]  # all layers, however it is spelled
    assert auto_split == "all"
    assert keys[0] not in cpu  # a GPU build may offload big batches even with 0 layers


def test_settings_that_cannot_change_the_output_stay_out_of_the_key(
    tiny_model: Path, store: Store
) -> None:
    base = _key(tiny_model, store)
    assert _key(tiny_model, store, n_threads=1) == base
    assert _key(tiny_model, store, n_threads=2) == base
    assert _key(tiny_model, store, n_ctx=1024) == base  # the prompt fits either way
    assert _key(tiny_model, store, n_ctx=4096) == base


def test_model_engine_identity_labels_and_steering_change_the_key(
    tiny_model: Path, tiny_o200k_model: Path, store: Store, tmp_path: Path
) -> None:
    base = _key(tiny_model, store)
    assert _key(tiny_o200k_model, store) != base
    clf = Classifier("toxic_simple", tiny_model, store=store, engine_settings=EngineSettings())
    assert clf.key(TEXT) == base
    clf.backend._engine_version = "llama-cpp-python 0.0.0"  # type: ignore[union-attr]
    assert clf.key(TEXT) != base
    clf = Classifier("toxic_simple", tiny_model, store=store, engine_settings=EngineSettings())
    clf.prompt_config = dataclasses.replace(clf.prompt_config, identity="You are a judge.")
    assert clf.key(TEXT) != base
    # The same policy text scored over other labels.
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, labels in ((a, '["low", "high"]'), (b, '["low", "mid", "high"]')):
        folder.mkdir()
        (folder / "policy.md").write_text("Rate the text.\n", encoding="utf-8")
        (folder / "policy.toml").write_text(
            f'[output]\nkind = "labels"\nlabels = {labels}\nviolation = ["high"]\n',
            encoding="utf-8",
        )
    assert _key(tiny_model, store, policy=a) != _key(tiny_model, store, policy=b)
    vocab = Vocab.from_gguf(tiny_model)
    steer1 = ForcedTokens(harmony_script(vocab, "1", "x"))
    steer0 = ForcedTokens(harmony_script(vocab, "0", "x"))
    assert (
        len(
            {
                base,
                _key(tiny_model, store, processor=steer1),
                _key(tiny_model, store, processor=steer0),
            }
        )
        == 3
    )
    assert _key(tiny_model, store, processor=steer1) == _key(
        tiny_model, store, processor=ForcedTokens(harmony_script(vocab, "1", "x"))
    )


def test_numerics_of_the_local_backend(tiny_model: Path) -> None:
    if rt.supports_gpu():
        pytest.skip("this llama.cpp build has a GPU backend (auto: every layer, flash attention)")
    s = LocalBackend(tiny_model, settings=EngineSettings()).numerics()
    assert s == {"decode": "par", "flash_attn": "off", "n_batch": 512, "gpu_layers": "none"}
    one = LocalBackend(tiny_model, settings=EngineSettings(n_parallel=1, n_threads=3, n_ctx=2048))
    assert one.numerics() == {
        "decode": "seq",
        "flash_attn": "off",
        "n_batch": 512,
        "gpu_layers": "none",
    }


def test_server_batching_changes_the_key(tiny_model: Path, store: Store) -> None:
    from edge_guard.backends.server import ServerBackend, ServerInfo

    def backend(slots: int | None, concurrency: int | None = None) -> ServerBackend:
        b = ServerBackend("http://127.0.0.1:9", tiny_model, concurrency=concurrency)
        b._info = ServerInfo("llama-server", "m", "b1", "127.0.0.1:9", slots, 4096)  # no network
        return b

    assert backend(4).numerics() == {"decode": "par"}
    assert backend(4).numerics(1) == {"decode": "seq"}
    assert backend(4, concurrency=1).numerics(8) == {"decode": "seq"}
    assert backend(1).numerics(8) == {"decode": "seq"}  # one slot decodes one at a time

    def key(b: ServerBackend, parallel: int | None) -> str:
        return Classifier("toxic_simple", b, store=store, parallel=parallel).key(TEXT)

    assert key(backend(4), 1) != key(backend(4), None)
    assert key(backend(4), 1) == key(backend(1), None)


def test_a_replaced_gguf_is_never_served_the_old_files_rows(
    tmp_path: Path, synth_model: Any
) -> None:
    """A GGUF replaced at the same path (same size and mtime: `cp -p`) gets its own keys:
    a long-lived classifier, a new one and the Python API all recompute with the new
    weights, and the old file's row stays the old file's."""
    from edge_guard import classify
    from edge_guard.engine.sampling import SamplingConfig
    from tests.test_store import _replace_keeping_size_and_mtime

    old, new = synth_model("tiny"), synth_model("tiny", seed=7)
    assert old.stat().st_size == new.stat().st_size
    path = tmp_path / "model.gguf"
    path.write_bytes(old.read_bytes())
    store = Store(tmp_path / "db.sqlite")
    short = SamplingConfig(max_tokens=6)
    clf = Classifier("toxic_simple", path, store=store, sampling=short)
    before = clf.classify([TEXT])[0]
    assert clf.classify([TEXT])[0].cached  # the same file: a hit
    _replace_keeping_size_and_mtime(path, new.read_bytes())
    after = clf.classify([TEXT])[0]  # the same classifier object, the file swapped under it
    assert not after.cached and after.key != before.key
    assert store.get(before.key)["model"] == store.get(before.key)["model"]  # kept, untouched
    assert store.get(after.key)["model"] != store.get(before.key)["model"]
    fresh = Classifier("toxic_simple", path, store=store, sampling=short).classify([TEXT])[0]
    assert fresh.cached and fresh.key == after.key
    api = classify(TEXT, "toxic_simple", model=path, db=tmp_path / "db.sqlite", max_tokens=6)
    assert api.key == after.key
    # What the new weights say, from their own file: the swapped path answered with them.
    ref = Classifier("toxic_simple", new, store=Store(tmp_path / "ref.sqlite"), sampling=short)
    reference = ref.classify([TEXT])[0].model_response
    assert after.model_response.output_token_ids == reference.output_token_ids
    assert before.model_response.output_token_ids != reference.output_token_ids
