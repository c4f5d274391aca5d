"""The adversarial suite: edge_guard classifies text written by adversaries and loads model
files from the internet; it must keep working and never lose a result.

What is attacked, and where:

- ``test_hostile_text.py``: control-token strings in every position, role spoofing, fake
  final answers, zero-width/bidi characters, NUL bytes, lone surrogates, empty and 1 MB
  texts, invalid UTF-8 in dataset files, ``--truncate``.
- ``test_hostile_policies.py``: empty / non-UTF-8 / NUL policy files, bad TOML, a
  ``parse.py`` that raises, returns the wrong type, never returns, swallows its time limit
  or calls ``sys.exit`` -- inside a batch, in the main thread and in a worker thread.
- ``test_hostile_models.py``: files the header check rejects (nested arrays, absurd
  hyperparameters) and files that pass it but make llama.cpp abort (SIGABRT at context
  creation or at the first decode), fail (wrong tensor shape) or compute NaN logits: the
  child-process load probe turns each into a one-line `BadModelFile`; memory-fit refusal
  and ``--force``.
- ``test_hostile_store.py``: damaged store files and ``cache repair``, concurrent first
  opens, threads + processes writing at once, the TUI and a CLI run on one store,
  ``kill -9`` during ``edge-guard run``.
- ``test_hostile_fuzz.py``: hypothesis fuzzing of ``gguf_check.read_header`` (mutated real
  headers), the harmony output parser (adversarial token orders) and the answer parsers.
- ``test_hostile_cli.py``: click usage errors as one ``error:`` line (exit 2).

Everything runs on the synthetic ``tiny`` model (byte-level vocabulary, < 1 MB) unless a
test needs the real o200k token ids. Crafted model files come from ``crafted_models.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.hostile.crafted_models import craft


@pytest.fixture(scope="session")
def crafted(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """crafted(kind) -> path of a hostile model file (built once per session)."""
    folder = tmp_path_factory.mktemp("crafted")
    made: dict[str, Path] = {}

    def make(kind: str) -> Path:
        if kind not in made:
            made[kind] = craft(kind, folder / f"{kind}.gguf")
        return made[kind]

    return make


@pytest.fixture
def fast_parser_limit(monkeypatch: pytest.MonkeyPatch) -> float:
    """Custom parse() functions get 0.5 s instead of 5 s (a hang costs the test 0.5 s)."""
    from edge_guard.policy import parsers

    monkeypatch.setitem(parsers.run_parser.__kwdefaults__, "time_limit", 0.5)
    return 0.5
