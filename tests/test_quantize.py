"""`edge-guard models quantize`: llama.cpp's quantizer on synthetic F16 gpt-oss models.

The outputs load and decode, are smaller and carry the requested file type; unknown types,
existing outputs and bad sources are refused in one line; a failing quantization leaves
no partial file behind.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_guard.classification.classifier import Classifier
from edge_guard.cli import main
from edge_guard.engine.sampling import ForcedTokens, SamplingConfig, harmony_script
from edge_guard.gguf.check import read_header
from edge_guard.harmony.vocab import Vocab
from edge_guard.registry.quantize import file_type_name, quantize_model
from tests.compare_helpers import one_line_error


@pytest.fixture(scope="module")
def f16_o200k(synth_model) -> Path:  # type: ignore[no-untyped-def]
    """tiny-o200k with F16 embeddings too: every matrix and expert is F16."""
    return synth_model("tiny-o200k", embd_type="F16")


def test_f16_model_quantized_to_q8_0_and_q4_0_is_smaller_typed_and_loads(
    tmp_path: Path, f16_o200k: Path
) -> None:
    from edge_guard.engine import llama_runtime as rt

    assert file_type_name(f16_o200k) == "MOSTLY_F16"
    (tmp_path / "out").mkdir()
    sizes = {}
    for qtype, ggml in (("q8_0", "Q8_0"), ("Q4_0", "Q4_0")):
        out = tmp_path / "out" / f"m-{qtype}.gguf"
        res = quantize_model(f16_o200k, out, qtype)
        assert res.out == out and out.is_file() and res.qtype == qtype.lower()
        assert res.src_bytes == f16_o200k.stat().st_size and res.out_bytes == out.stat().st_size
        assert res.out_bytes < res.src_bytes
        assert res.file_type == file_type_name(out) == f"MOSTLY_{ggml}"
        types = {t.name: t.type_name for t in read_header(out).tensors}
        assert types["blk.0.attn_q.weight"] == types["blk.1.ffn_down_exps.weight"] == ggml
        assert types["output_norm.weight"] == "F32"
        model, ctx = rt.load(
            str(out),
            n_gpu_layers=0,
            n_ctx=64,
            n_batch=64,
            n_seq_max=1,
            n_threads=1,
            flash_attn="auto",
            swa_full=True,
            verbose=False,
        )
        assert rt.n_vocab(model) == 201088
        ctx.close()
        model.close()
        sizes[ggml] = res.out_bytes
    assert sizes["Q4_0"] < sizes["Q8_0"]
    # (tmp_path also holds the test's data dir: the outputs have a folder of their own)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["m-Q4_0.gguf", "m-q8_0.gguf"]


def test_quantized_tiny_model_classifies(tmp_path: Path, tiny_model: Path) -> None:
    out = quantize_model(tiny_model, tmp_path / "q4.gguf", "q4_0").out
    vocab = Vocab.from_gguf(out)
    clf = Classifier("toxic_simple", out, sampling=SamplingConfig(max_tokens=32))
    [result] = clf.classify(["hello"], logits_processors=ForcedTokens(harmony_script(vocab, "1")))
    assert result.verdict.value == "violation" and result.error is None


def test_cli_reports_sizes_and_refuses_existing_output_unless_force(
    tmp_path: Path, tiny_model: Path
) -> None:
    out = tmp_path / "q.gguf"
    res = CliRunner().invoke(main, ["models", "quantize", str(tiny_model), str(out), "-t", "q8_0"])
    assert res.exit_code == 0, res.output
    size_src, size_out = tiny_model.stat().st_size, out.stat().st_size
    assert "MOSTLY_Q8_0" in res.stdout
    assert f"{size_src / 1e3:.1f} kB -> {size_out / 1e3:.1f} kB" in res.stdout
    out.write_bytes(b"keep me")
    again = CliRunner().invoke(
        main, ["models", "quantize", str(tiny_model), str(out), "-t", "q4_0"]
    )
    assert "exists (use --force to overwrite)" in one_line_error(again)
    assert out.read_bytes() == b"keep me"
    forced = CliRunner().invoke(
        main, ["models", "quantize", str(tiny_model), str(out), "-t", "q4_0", "--force", "--json"]
    )
    assert forced.exit_code == 0, forced.output
    assert file_type_name(out) == "MOSTLY_Q4_0"


def test_unknown_type_lists_the_valid_ones(tmp_path: Path, tiny_model: Path) -> None:
    res = CliRunner().invoke(
        main, ["models", "quantize", str(tiny_model), str(tmp_path / "o.gguf"), "-t", "q4_x"]
    )
    line = one_line_error(res)
    assert "unknown quantization type 'q4_x'" in line
    for valid in ("q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0"):
        assert valid in line
    assert not (tmp_path / "o.gguf").exists()


def test_failing_quantization_leaves_no_partial_output(tmp_path: Path, synth_model) -> None:  # type: ignore[no-untyped-def]
    # Attention matrices already Q8_0: llama.cpp refuses to requantize them to Q4_0.
    src = synth_model("tiny", matrix_type="Q8_0")
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "out.gguf"
    res = CliRunner().invoke(main, ["models", "quantize", str(src), str(out), "-t", "q4_0"])
    line = one_line_error(res)
    assert "requantizing from type q8_0 is disabled" in line and "--allow-requantize" in line
    assert list(out.parent.iterdir()) == []


def test_bad_source_is_refused_before_llama_cpp(tmp_path: Path, edge_guard_home: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 20)
    res = CliRunner().invoke(
        main, ["models", "quantize", str(bad), str(tmp_path / "o.gguf"), "-t", "q8_0"]
    )
    one_line_error(res)
    # nothing written beside it (tmp_path also holds the test's data dir)
    assert sorted(p.name for p in tmp_path.iterdir() if p != edge_guard_home) == ["bad.gguf"]
    missing = CliRunner().invoke(
        main,
        ["models", "quantize", str(tmp_path / "nope.gguf"), str(tmp_path / "o.gguf"), "-t", "q8_0"],
    )
    assert "no such model file" in one_line_error(missing)
