"""Engines of one process (issue 31 item 2): the cache key's numerics are the engine's own
decisions, and engines with other settings live side by side, never closed under a request.

- The numerics class is what `engine.choices.decide` decides, the function the `Engine`
  loads by: the same dict as the backend's own copy of those rules gave before (every
  store keeps hitting), before and after the engine is loaded, read from the loaded engine.
- Two classifiers with other engine settings answer, interleaved and at once, exactly what
  each answers alone; a request running on one engine is never closed under by another
  engine's load; a model file replaced at the same path is loaded afresh (never answered by
  the old weights), the old engine closed once no request runs on it.
- Memory stays bounded: a load is checked with the engines already loaded counted (another
  file's mapped weights); engines no request runs on make way, one that runs requests
  never does, and then the load is refused in one line.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import edge_guard.engine.llama_runtime as rt
from edge_guard.backends import local
from edge_guard.backends.local import EngineSettings, LocalBackend, engine_options
from edge_guard.classification.classifier import Classifier
from edge_guard.classification.keys import cache_key
from edge_guard.engine.choices import decide_for
from edge_guard.engine.sampling import SamplingConfig
from edge_guard.gguf.check import check_model_file
from edge_guard.registry.errors import DoesNotFit

SHORT = SamplingConfig(max_tokens=12)
TEXTS = ["message number 1", "a second message", "and a third one"]
GATE_S = 60  # a safety net only: every wait below is released by an event


@pytest.fixture(autouse=True)
def _no_engine_outlives_the_test() -> Iterator[None]:
    local.release_engine()  # an earlier test on this worker may have left one loaded
    yield
    local.release_engine()


def numerics_before(path: Path, s: EngineSettings, n_parallel: int | None = None) -> dict[str, Any]:
    """`LocalBackend.numerics` as it was before the engine reported its own (a second copy
    of the engine's rules): the dict every stored key holds."""
    slots = 1 if not s.swa_full else max(1, int(s.n_parallel))
    width = min(max(1, int(n_parallel or slots)), slots)
    prefixes = s.extra.get("max_prefixes") or (1 if slots == 1 else 8)
    if not s.swa_full or s.extra.get("prefix_cache") is False:
        prefixes = 1
    gpu: int | str = "none"
    if rt.supports_gpu():
        n = rt.resolve_gpu_layers(s.n_gpu_layers)
        n_layer = int(check_model_file(path).arch_key("block_count") or 0)
        gpu = "all" if n < 0 or n > n_layer else n
    fa = s.flash_attn
    if fa == "auto" and gpu in ("none", 0):
        fa = False
    return {
        "decode": "seq" if width == 1 and prefixes == 1 else "par",
        "flash_attn": {True: "on", False: "off"}.get(fa, str(fa)),  # type: ignore[call-overload]
        "n_batch": max(32, int(s.extra.get("n_batch", 512))),
        "gpu_layers": gpu,
    }


SETTINGS = [
    EngineSettings(),
    EngineSettings(n_parallel=1),
    EngineSettings(n_parallel=1, extra={"max_prefixes": 4}),
    EngineSettings(n_parallel=3, n_threads=2, n_ctx=2048),
    EngineSettings(swa_full=False),
    EngineSettings(flash_attn=True),
    EngineSettings(flash_attn=False),
    EngineSettings(extra={"n_batch": 256}),
    EngineSettings(extra={"n_batch": 16}),
    EngineSettings(extra={"prefix_cache": False}),
    EngineSettings(n_parallel=1, extra={"prefix_cache": False, "max_prefixes": 4}),
]
GPU_LAYERS: list[int | str] = [0, 1, 2, 99, -1, "auto"]
WIDTHS = [None, 1, 2, 8]


# -- the numerics class: the engine's own -----------------------------------------------------
@pytest.mark.parametrize("gpu", [False, True], ids=["cpu-build", "gpu-build"])
def test_the_numerics_class_is_what_it_was_for_every_setting(
    tiny_model: Path, gpu: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if gpu:  # a GPU build's rules, asked of the settings alone (nothing is loaded)
        monkeypatch.setattr(rt, "supports_gpu", lambda: True)
    elif rt.supports_gpu():
        pytest.skip("this llama.cpp build has a GPU backend")
    settings = SETTINGS + [EngineSettings(n_gpu_layers=n) for n in GPU_LAYERS]
    settings += [EngineSettings(n_gpu_layers=n, flash_attn=True) for n in (0, 1)]
    for s in settings:
        backend = LocalBackend(tiny_model, settings=s)
        for width in WIDTHS:
            assert backend.numerics(width) == numerics_before(tiny_model, s, width), (s, width)
    assert not local.loaded_engines()  # a key never loads the model


def test_store_keys_are_the_ones_written_before(tiny_model: Path, tmp_path: Path) -> None:
    for s, parallel in [(SETTINGS[0], None), (SETTINGS[1], None), (SETTINGS[7], 2)]:
        clf = Classifier(
            "toxic_simple", tiny_model, db=tmp_path / "s.db", parallel=parallel, engine_settings=s
        )
        fields = clf.key_fields(TEXTS[0])
        assert fields["numerics"] == numerics_before(tiny_model, s, parallel)
        assert clf.key(TEXTS[0]) == cache_key(fields)


@pytest.mark.parametrize("settings", SETTINGS[:8], ids=lambda s: repr(s)[14:60])
def test_a_loaded_engine_reports_the_numerics_it_loaded_with(
    tiny_model: Path, settings: EngineSettings
) -> None:
    backend = LocalBackend(tiny_model, settings=settings)
    before = {w: backend.numerics(w) for w in WIDTHS}
    engine = backend.engine()
    assert engine.choices == decide_for(str(tiny_model), engine_options(settings))
    c = engine.choices  # what it loaded with is what it decided
    assert (engine.n_parallel, engine.max_prefixes, engine.n_batch) == (
        c.n_parallel,
        c.max_prefixes,
        c.n_batch,
    )
    assert (engine.gpu_layers, engine.flash_attn) == (c.gpu_layers, c.flash_attn)
    for w in WIDTHS:
        assert engine.numerics(w) == backend.numerics(w) == before[w]


def test_the_key_reads_the_loaded_engine(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = LocalBackend(tiny_model)
    engine = backend.engine()
    monkeypatch.setattr(engine, "choices", dataclasses.replace(engine.choices, n_batch=64))
    assert backend.numerics()["n_batch"] == 64  # no second copy of the engine's rules
    assert LocalBackend(tiny_model).numerics()["n_batch"] == 512  # not loaded: decide()


# -- engines side by side -------------------------------------------------------------------------
A = EngineSettings(n_ctx=2048, n_parallel=1)
B = EngineSettings(n_ctx=4096, n_parallel=4, extra={"n_batch": 256})


def _clf(model: Path, settings: EngineSettings, db: Path) -> Classifier:
    return Classifier(
        "toxic_simple", model, db=db, sampling=SHORT, use_cache=False, engine_settings=settings
    )


def _ids(clf: Classifier, texts: list[str], **kw: Any) -> list[list[int]]:
    out = []
    for res in clf.classify(texts, **kw):
        assert res.error is None, res.error
        out.append(list(res.model_response.output_token_ids))  # type: ignore[union-attr]
    return out


class Gate:
    """A logits processor that holds its request at its first token until `release` (set
    from the test): a request running on its engine for as long as the test needs. It
    leaves the logits as they are (the answer is the ungated one)."""

    cache_id = "gate"

    def __init__(self) -> None:
        self.running, self.go = threading.Event(), threading.Event()

    def __call__(self, _output: Any, _logits: Any) -> None:
        self.running.set()
        self.go.wait(GATE_S)

    def release(self) -> None:
        self.go.set()


def _in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as exc:
            out.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def test_engines_with_other_settings_answer_side_by_side(tiny_model: Path, tmp_path: Path) -> None:
    a, b = _clf(tiny_model, A, tmp_path / "a.db"), _clf(tiny_model, B, tmp_path / "b.db")
    want_a = _ids(a, TEXTS)
    engine_a = a.backend.engine()  # type: ignore[attr-defined]
    want_b = _ids(b, TEXTS)  # loads the second engine: the first stays
    engine_b = b.backend.engine()  # type: ignore[attr-defined]
    assert engine_a is not engine_b and not engine_a.closed
    assert engine_a.n_parallel == 1 and engine_b.n_parallel == 4
    for _ in range(2):  # interleaved
        assert _ids(a, TEXTS) == want_a
        assert _ids(b, TEXTS) == want_b
    # at once, from two threads
    runs = [_in_thread(lambda c=c: [_ids(c, TEXTS) for _ in range(3)]) for c in (a, b)]
    for thread, _out in runs:
        thread.join(GATE_S)
    assert runs[0][1] == [[want_a] * 3] and runs[1][1] == [[want_b] * 3]
    assert a.backend.engine() is engine_a and b.backend.engine() is engine_b  # type: ignore[attr-defined]
    assert not engine_a.closed and not engine_b.closed


def test_a_request_running_is_never_closed_under_by_another_engines_load(
    tiny_model: Path, tmp_path: Path
) -> None:
    a, b = _clf(tiny_model, A, tmp_path / "a.db"), _clf(tiny_model, B, tmp_path / "b.db")
    want_a = _ids(a, TEXTS[:1])
    engine_a = a.backend.engine()  # type: ignore[attr-defined]
    gate = Gate()
    thread, out = _in_thread(lambda: _ids(a, TEXTS[:1], logits_processors=gate))
    try:
        assert gate.running.wait(GATE_S)  # a's request is on its engine now
        assert len(_ids(b, TEXTS)) == 3  # b loads its own engine and answers meanwhile
        assert not engine_a.closed
    finally:
        gate.release()
        thread.join(GATE_S)
    assert out == [want_a]


def test_backends_of_the_same_settings_share_one_engine_closed_with_the_last(
    tiny_model: Path,
) -> None:
    one, two = LocalBackend(tiny_model, settings=A), LocalBackend(tiny_model, settings=A)
    engine = one.engine()
    assert two.engine() is engine
    one.close()
    assert not engine.closed  # `two` still holds it
    two.close()
    assert engine.closed and engine not in local.loaded_engines()


# -- a replaced model file -------------------------------------------------------------------------
def _replace(path: Path, new: Path) -> None:
    """`new` moved over `path` (as a download writes it), mtime later."""
    mtime = path.stat().st_mtime_ns
    shutil.copyfile(new, path.with_suffix(".partial"))
    os.replace(path.with_suffix(".partial"), path)
    os.utime(path, ns=(mtime + 10**10, mtime + 10**10))


@pytest.fixture
def two_models(synth_model: Callable[..., Path]) -> tuple[Path, Path]:
    old, new = synth_model("tiny", seed=11), synth_model("tiny", seed=12)
    assert old.stat().st_size == new.stat().st_size  # only the content tells them apart
    return old, new


def test_a_replaced_file_is_answered_by_its_new_weights_never_closing_a_running_request(
    tmp_path: Path, two_models: tuple[Path, Path]
) -> None:
    old, new = two_models
    path, other = tmp_path / "model.gguf", tmp_path / "other.gguf"
    shutil.copyfile(old, path)
    shutil.copyfile(new, other)
    truth = _ids(_clf(other, A, tmp_path / "t.db"), TEXTS[:1])
    clf = _clf(path, A, tmp_path / "a.db")
    first = _ids(clf, TEXTS[:1])
    assert first != truth
    old_engine = clf.backend.engine()  # type: ignore[attr-defined]
    gate = Gate()  # a request of the old file running while the file is replaced
    thread, out = _in_thread(lambda: _ids(clf, TEXTS[:1], logits_processors=gate))
    try:
        assert gate.running.wait(GATE_S)
        _replace(path, new)
        assert _ids(clf, TEXTS[:1]) == truth  # the same classifier: the new weights
        assert not old_engine.closed  # the running request keeps it
    finally:
        gate.release()
        thread.join(GATE_S)
    assert out == [first]  # it started on the old file, and finished on it
    assert old_engine.closed  # then it went: no backend holds it, no request runs on it
    assert _ids(clf, TEXTS[:1]) == truth


# -- memory stays bounded ------------------------------------------------------------------------
def test_engines_make_way_unless_a_request_runs_then_the_load_is_refused_in_one_line(
    tmp_path: Path, two_models: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge_guard.registry import fit

    old, new = two_models
    a, b = _clf(old, A, tmp_path / "a.db"), _clf(new, A, tmp_path / "b.db")
    want_a, want_b = _ids(a, TEXTS[:1]), _ids(b, TEXTS[:1])  # (each alone has room)
    local.release_engine()
    need_a, need_b = (
        fit.fit_report(m, 2048, n_gpu_layers=0, ram_bytes=1 << 50)["ram_needed"] for m in (old, new)
    )
    # Either model fits alone; not beside the other's mapped weights (counted as free).
    room = max(need_a, need_b) + old.stat().st_size // 2
    assert room - old.stat().st_size < need_b
    monkeypatch.setattr(fit, "ram_info", lambda: {"total": room, "available": room, "source": "t"})
    gate = Gate()
    thread, out = _in_thread(lambda: _ids(a, TEXTS[:1], logits_processors=gate))
    try:
        assert gate.running.wait(GATE_S)
        engine_a = a.backend.engine()  # type: ignore[attr-defined]
        with pytest.raises(DoesNotFit) as refused:
            b.classify(TEXTS[:1])
        assert not engine_a.closed
    finally:
        gate.release()
        thread.join(GATE_S)
    assert out == [want_a]
    message = str(refused.value)
    assert (
        "\n" not in message
        and f"beside 1 engine(s) of this process running requests now: {old.name}" in message
    )
    # No request runs on a's engine now: it makes way (a loads again on its next call).
    assert _ids(b, TEXTS[:1]) == want_b
    assert engine_a.closed
    assert _ids(a, TEXTS[:1]) == want_a
