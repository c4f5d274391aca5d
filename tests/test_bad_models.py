"""Broken model files: a one-line `BadModelFile` before llama.cpp sees them, never a crash."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edge_guard.engine.engine import Engine
from edge_guard.errors import BadModelFile
from edge_guard.gguf.check import check_model_file, read_header
from edge_guard.registry import synth
from edge_guard.registry.load_guard import check_load


def write_llama_gguf(path: Path) -> None:
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(128)
    w.add_embedding_length(8)
    w.add_block_count(1)
    w.add_head_count(2)
    w.add_tensor("token_embd.weight", np.zeros((16, 8), dtype=np.float32))
    w.add_tensor("output_norm.weight", np.ones((8,), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_tiny_with(
    path: Path, monkeypatch: pytest.MonkeyPatch, patch: Callable[[pytest.MonkeyPatch], None]
) -> None:
    """The tiny synthetic model, built with one building block altered."""
    with monkeypatch.context() as m:
        patch(m)
        synth.write_synthetic_model(path, "tiny")


def _no_expert_used_count(m: pytest.MonkeyPatch) -> None:
    import gguf

    m.setattr(gguf.GGUFWriter, "add_expert_used_count", lambda self, n: None)


def _too_many_experts_used(m: pytest.MonkeyPatch) -> None:
    import gguf

    original = gguf.GGUFWriter.add_expert_used_count
    m.setattr(gguf.GGUFWriter, "add_expert_used_count", lambda self, n: original(self, 99))


def _without_sinks(m: pytest.MonkeyPatch) -> None:
    plan = synth._tensor_plan
    m.setattr(
        synth,
        "_tensor_plan",
        lambda p, n: (t for t in plan(p, n) if t[0] != "blk.1.attn_sinks.weight"),
    )


@pytest.fixture
def bad_files(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, tuple[Path, str]]:
    """name -> (path, a phrase the one-line error must contain)."""
    files: dict[str, tuple[Path, str]] = {}

    def add(name: str, phrase: str) -> Path:
        path = tmp_path / f"{name}.gguf"
        files[name] = (path, phrase)
        return path

    add("not-gguf", "not a GGUF file (bad magic bytes)").write_bytes(
        b"<html>404 Not Found</html>\n" * 20
    )
    add("empty", "not a GGUF file (only 0 bytes)").write_bytes(b"")
    write_llama_gguf(add("llama-arch", "architecture is 'llama'"))
    write_tiny_with(
        add("no-expert-used-count", "lacks required key(s) gpt-oss.expert_used_count"),
        monkeypatch,
        _no_expert_used_count,
    )
    write_tiny_with(
        add("expert-counts", "invalid expert counts (99 used of 4)"),
        monkeypatch,
        _too_many_experts_used,
    )
    write_tiny_with(
        add("missing-tensor", "lacks tensor blk.1.attn_sinks.weight"), monkeypatch, _without_sinks
    )
    data = tiny_model.read_bytes()
    header = read_header(tiny_model)
    assert header.data_offset < len(data) // 2
    mid_data = (header.data_offset + len(data)) // 2
    add("truncated-data", "(truncated download?)").write_bytes(data[:mid_data])
    add("truncated-header", "GGUF header is truncated or corrupt").write_bytes(
        data[: header.data_offset // 2]
    )
    files["missing"] = (tmp_path / "does-not-exist.gguf", "cannot read model file")
    return files


CASES = [
    "not-gguf",
    "empty",
    "llama-arch",
    "no-expert-used-count",
    "expert-counts",
    "missing-tensor",
    "truncated-data",
    "truncated-header",
    "missing",
]


@pytest.mark.parametrize("case", CASES)
def test_check_model_file_rejects(case: str, bad_files: dict[str, tuple[Path, str]]) -> None:
    path, phrase = bad_files[case]
    with pytest.raises(BadModelFile) as info:
        check_model_file(path)
    message = str(info.value)
    assert "\n" not in message
    assert phrase in message
    assert message.startswith(str(path))


@pytest.mark.parametrize("case", CASES)
def test_engine_rejects_before_llama_cpp(case: str, bad_files: dict[str, tuple[Path, str]]) -> None:
    path, phrase = bad_files[case]
    with pytest.raises(BadModelFile) as info:
        Engine(path, load_check=check_load, n_ctx=256, n_threads=1)
    assert "\n" not in str(info.value) and phrase in str(info.value)
    # This process is alive and llama.cpp still works.


def test_good_model_still_loads_after_bad_ones(
    bad_files: dict[str, tuple[Path, str]], tiny_model: Path
) -> None:
    for path, _ in bad_files.values():
        with pytest.raises(BadModelFile):
            Engine(path, load_check=check_load, n_ctx=256, n_threads=1)
    header = check_model_file(tiny_model)
    assert header.architecture == "gpt-oss"
    with Engine(tiny_model, load_check=check_load, n_ctx=256, n_threads=1) as engine:
        assert engine.n_vocab == len(engine.vocab)


def test_llama_cpp_really_aborts_on_missing_expert_used_count(
    bad_files: dict[str, tuple[Path, str]],
) -> None:
    """Why the check exists: loading this file straight into llama.cpp kills the process."""
    path, _ = bad_files["no-expert-used-count"]
    code = (
        "import llama_cpp, sys\n"
        f"llama_cpp.Llama({str(path)!r}, n_ctx=64, verbose=False)\n"
        "print('survived')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode < 0 or proc.returncode == 134, proc.stdout + proc.stderr
    assert "survived" not in proc.stdout


def test_cli_reports_bad_model_in_one_line(
    bad_files: dict[str, tuple[Path, str]], tmp_path: Path
) -> None:
    path, phrase = bad_files["no-expert-used-count"]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_guard",
            "prompt",
            "--model",
            str(path),
            "-p",
            "toxic_simple",
            "hi",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and phrase in lines[0]
    assert proc.stdout == ""


def test_read_header_of_good_model(tiny_model: Path) -> None:
    header = read_header(tiny_model)
    assert header.version == 3
    assert header.arch_key("expert_used_count") == 2
    assert header.arch_key("attention.sliding_window") == 8
    assert len(header.metadata["tokenizer.ggml.tokens"]) > 256
    end = max(header.data_offset + t.offset + t.n_bytes for t in header.tensors)
    assert end <= header.file_size


def test_non_byte_level_tokenizer_is_a_bad_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token list that is not GPT-2 byte symbols (e.g. an SPM vocab) is reported, not crashed on."""
    path = tmp_path / "spm-like.gguf"
    build_vocab = synth.build_vocab

    def spm_like(kind: str):  # type: ignore[no-untyped-def]
        tokens, types, merges, special = build_vocab(kind)
        tokens = list(tokens)
        tokens[100] = "hello world"  # a space is not a byte-level BPE symbol
        return tokens, types, merges, special

    with monkeypatch.context() as m:
        m.setattr(synth, "build_vocab", spm_like)
        synth.write_synthetic_model(path, "tiny")
    with pytest.raises(BadModelFile) as info:
        Engine(path, load_check=check_load, n_ctx=256, n_threads=1)
    message = str(info.value)
    assert "\n" not in message
    assert "the tokenizer is not a byte-level BPE vocabulary" in message
    assert "'hello world'" in message
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_guard",
            "prompt",
            "--model",
            str(path),
            "-p",
            "toxic_simple",
            "hi",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: {message}"]
