"""Writes synthetic, seeded, random-weight GGUFs of the real `gpt-oss` architecture.

They let tests, benchmarks and newcomers exercise the real llama.cpp decode path without
the 12 GB weights. Presets:

- ``tiny``: a byte-level vocabulary (256 byte tokens, a few merges) plus the harmony
  specials; 2 layers; < 1 MB. Unit tests.
- ``tiny-o200k``: the real 201,088-token o200k_harmony vocabulary (so token ids equal
  the real model's), 2 small layers, Q8_0 embeddings (~30 MB).
- ``mini``: the o200k vocabulary with more and wider layers, sized for `edge-guard bench`.
- ``20b-shape``: gpt-oss-20b's exact tensor shapes, MXFP4 experts, Q8_0 attention and
  embeddings (~11.3 GiB), written as raw random blocks; for GPU benchmarks.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_guard.errors import EdgeGuardError
from edge_guard.harmony import vocab as hv

if TYPE_CHECKING:
    from gguf import GGMLQuantizationType, GGUFWriter


@dataclass(frozen=True)
class SynthPreset:
    name: str
    description: str
    vocab: str  # "bytes" | "o200k"
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_expert: int
    n_expert_used: int
    n_ff: int
    sliding_window: int
    context_length: int
    expert_type: str = "F16"  # F32 | F16 | MXFP4
    matrix_type: str = "F16"  # attention matrices: F32 | F16 | Q8_0
    embd_type: str = "F16"  # token_embd / output: F32 | F16 | Q8_0
    raw_random: bool = False  # write random quantized blocks directly (fast for huge models)


PRESETS: dict[str, SynthPreset] = {
    p.name: p
    for p in (
        SynthPreset(
            "tiny",
            "byte-level vocab + harmony specials, 2 layers, < 1 MB (unit tests)",
            "bytes",
            2,
            64,
            4,
            2,
            16,
            4,
            2,
            64,
            8,
            4096,
        ),
        SynthPreset(
            "tiny-o200k",
            "real o200k_harmony vocab (real token ids), 2 small layers",
            "o200k",
            2,
            64,
            4,
            2,
            16,
            4,
            2,
            64,
            8,
            8192,
            embd_type="Q8_0",
        ),
        SynthPreset(
            "mini",
            "o200k vocab, 8 layers of width 512, 4 of 16 MXFP4 experts of 2048 (CPU bench)",
            "o200k",
            8,
            512,
            8,
            4,
            64,
            16,
            4,
            2048,
            128,
            8192,
            expert_type="MXFP4",
            matrix_type="Q8_0",
            embd_type="Q8_0",
        ),
        SynthPreset(
            "20b-shape",
            "gpt-oss-20b's exact shapes, MXFP4 experts (GPU benchmarks)",
            "o200k",
            24,
            2880,
            64,
            8,
            64,
            32,
            4,
            2880,
            128,
            131072,
            expert_type="MXFP4",
            matrix_type="Q8_0",
            embd_type="Q8_0",
            raw_random=True,
        ),
    )
}

HARMONY_SPECIAL_NAMES = (
    *hv.O200K_HARMONY_SPECIALS.values(),
    "<|reserved_200000|>",
    "<|reserved_200001|>",
)
# Merges for the byte-level vocab: common English pieces, so BPE is really exercised.
_TINY_PIECES = ("th", "he", "in", "er", "an", " t", " a", "re", "on", " th", "the", " the", "is")


def _gguf() -> ModuleType:
    import gguf

    return gguf


def _merges_for(token_bytes: list[bytes], ranks: dict[bytes, int]) -> list[str]:
    """BPE merges equivalent to tiktoken's rank order: every split of a token into two tokens."""
    merges: list[tuple[int, int, int, str]] = []
    for tok, rank in ranks.items():
        if len(tok) < 2:
            continue
        for cut in range(1, len(tok)):
            left, right = tok[:cut], tok[cut:]
            if left in ranks and right in ranks:
                merges.append(
                    (
                        rank,
                        ranks[left],
                        ranks[right],
                        f"{hv.bytes_to_gpt2_symbols(left)} {hv.bytes_to_gpt2_symbols(right)}",
                    )
                )
    merges.sort()
    return [m[3] for m in merges]


def build_vocab(kind: str) -> tuple[list[str], list[int], list[str], dict[str, int]]:
    """Token strings, token types, merges and special ids for a preset's vocabulary."""
    if kind == "o200k":
        v = hv.o200k_harmony_vocab()
        tokens = [
            hv.bytes_to_gpt2_symbols(b) if i not in v.control_ids else b.decode()
            for i, b in enumerate(v.token_bytes)
        ]
        types = [
            hv.TOKEN_TYPE_CONTROL if i in v.control_ids else hv.TOKEN_TYPE_NORMAL
            for i in range(len(tokens))
        ]
        ranks = {b: i for i, b in enumerate(v.token_bytes[: hv.O200K_N_NORMAL])}
        merges = _merges_for(v.token_bytes, ranks)
    elif kind == "bytes":
        token_bytes = [bytes([b]) for b in range(256)] + [p.encode() for p in _TINY_PIECES]
        ranks = {b: i for i, b in enumerate(token_bytes)}
        merges = _merges_for(token_bytes, ranks)
        tokens = [hv.bytes_to_gpt2_symbols(b) for b in token_bytes] + list(HARMONY_SPECIAL_NAMES)
        types = [hv.TOKEN_TYPE_NORMAL] * len(token_bytes)
        types += [hv.TOKEN_TYPE_CONTROL] * len(HARMONY_SPECIAL_NAMES)
    else:
        raise EdgeGuardError(f"unknown synthetic vocabulary {kind!r}")
    special = {t: i for i, t in enumerate(tokens) if types[i] == hv.TOKEN_TYPE_CONTROL}
    return tokens, types, merges, special


def _tensor_plan(p: SynthPreset, n_vocab: int) -> Iterator[tuple[str, tuple[int, ...], str]]:
    """(name, numpy shape, type) for every tensor; numpy shapes are ggml's reversed."""
    E, H, Hkv, D, X, F = p.n_embd, p.n_head, p.n_head_kv, p.head_dim, p.n_expert, p.n_ff
    yield "token_embd.weight", (n_vocab, E), p.embd_type
    yield "output_norm.weight", (E,), "F32"
    yield "output.weight", (n_vocab, E), p.embd_type
    for i in range(p.n_layer):
        b = f"blk.{i}."
        yield b + "attn_norm.weight", (E,), "F32"
        yield b + "post_attention_norm.weight", (E,), "F32"
        yield b + "attn_q.weight", (H * D, E), p.matrix_type
        yield b + "attn_q.bias", (H * D,), "F32"
        yield b + "attn_k.weight", (Hkv * D, E), p.matrix_type
        yield b + "attn_k.bias", (Hkv * D,), "F32"
        yield b + "attn_v.weight", (Hkv * D, E), p.matrix_type
        yield b + "attn_v.bias", (Hkv * D,), "F32"
        yield b + "attn_output.weight", (E, H * D), p.matrix_type
        yield b + "attn_output.bias", (E,), "F32"
        yield b + "attn_sinks.weight", (H,), "F32"
        yield b + "ffn_gate_inp.weight", (X, E), "F32"
        yield b + "ffn_gate_inp.bias", (X,), "F32"
        yield b + "ffn_gate_exps.weight", (X, F, E), p.expert_type
        yield b + "ffn_gate_exps.bias", (X, F), "F32"
        yield b + "ffn_up_exps.weight", (X, F, E), p.expert_type
        yield b + "ffn_up_exps.bias", (X, F), "F32"
        yield b + "ffn_down_exps.weight", (X, E, F), p.expert_type
        yield b + "ffn_down_exps.bias", (X, E), "F32"


def _random_values(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> np.ndarray:
    if name.endswith("norm.weight"):
        return np.ones(shape, dtype=np.float32)
    if name.endswith("attn_sinks.weight") or name.endswith(".bias"):
        return rng.normal(0.0, 0.1, size=shape).astype(np.float32)
    fan_in = shape[-1]
    scale = 16.0 if name == "output.weight" else 1.0
    return (rng.standard_normal(size=shape, dtype=np.float32) * (scale / np.sqrt(fan_in))).astype(
        np.float32
    )


def _raw_blocks(rng: np.random.Generator, qtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """Random but sane quantized blocks as bytes (no inf/NaN scales)."""
    g = _gguf()
    t = g.GGMLQuantizationType[qtype]
    block, size = g.GGML_QUANT_SIZES[t]
    n_blocks = int(np.prod(shape)) // block
    out = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    if qtype == "MXFP4":
        out[:, 0] = rng.integers(118, 122, size=n_blocks, dtype=np.uint8)  # E8M0 scale
    elif qtype == "Q8_0":
        scales = rng.uniform(0.002, 0.01, size=n_blocks).astype(np.float16)
        out[:, 0:2] = scales.view(np.uint8).reshape(n_blocks, 2)
    else:
        raise EdgeGuardError(f"raw random blocks are not implemented for {qtype}")
    return out.reshape(*shape[:-1], shape[-1] // block * size)


def _encode_tensor(
    rng: np.random.Generator, name: str, shape: tuple[int, ...], qtype: str, raw: bool
) -> tuple[np.ndarray, GGMLQuantizationType | None]:
    g = _gguf()
    if raw and qtype in ("MXFP4", "Q8_0"):
        return _raw_blocks(rng, qtype, shape), g.GGMLQuantizationType[qtype]
    values = _random_values(rng, name, shape)
    if qtype == "F32":
        return values, None
    if qtype == "F16":
        return values.astype(np.float16), None
    t = g.GGMLQuantizationType[qtype]
    return g.quants.quantize(values, t), t


def write_synthetic_model(
    out: str | os.PathLike[str],
    preset: str | SynthPreset = "tiny",
    *,
    seed: int = 0,
    **overrides: Any,
) -> str:
    """Write a synthetic gpt-oss GGUF; returns its path. Same preset + seed → same bytes."""
    g = _gguf()
    p = PRESETS.get(preset) if isinstance(preset, str) else preset
    if p is None:
        raise EdgeGuardError(f"unknown synthetic preset {preset!r} (choose {', '.join(PRESETS)})")
    if overrides:
        p = replace(p, **overrides)
    out = os.fspath(out)
    tokens, types, merges, special = build_vocab(p.vocab)
    tmp = out + ".partial"
    try:
        open(tmp, "wb").close()  # fail early, as one line, on a missing or read-only folder
    except OSError as exc:
        raise EdgeGuardError(f"cannot write {out}: {exc.strerror or exc}") from None
    w = g.GGUFWriter(tmp, "gpt-oss")
    w.add_name(f"edge_guard synthetic {p.name}")
    w.add_description(f"random weights, seed {seed}: {p.description}")
    file_type = {"MXFP4": 38, "F16": 1, "F32": 0}[p.expert_type]
    w.add_file_type(file_type)
    w.add_context_length(p.context_length)
    w.add_embedding_length(p.n_embd)
    w.add_block_count(p.n_layer)
    w.add_head_count(p.n_head)
    w.add_head_count_kv(p.n_head_kv)
    w.add_key_length(p.head_dim)
    w.add_value_length(p.head_dim)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_expert_feed_forward_length(p.n_ff)
    w.add_sliding_window(p.sliding_window)
    w.add_expert_count(p.n_expert)
    w.add_expert_used_count(p.n_expert_used)
    w.add_rope_freq_base(150000.0)
    w.add_rope_scaling_type(g.RopeScalingType.YARN)
    w.add_rope_scaling_factor(32.0)
    w.add_rope_scaling_orig_ctx_len(4096)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-4o")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(special["<|startoftext|>"])
    w.add_eos_token_id(special["<|return|>"])
    w.add_pad_token_id(special["<|endoftext|>"])
    w.add_add_bos_token(False)
    rng = np.random.default_rng(seed)
    plan = list(_tensor_plan(p, len(tokens)))
    if p.raw_random:
        # Stream tensors: declare them all, then generate and write one at a time.
        _write_streaming(w, rng, plan)
    else:
        for name, shape, qtype in plan:
            data, raw_type = _encode_tensor(rng, name, shape, qtype, False)
            w.add_tensor(name, data, raw_dtype=raw_type)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
    w.close()
    os.replace(tmp, out)
    return out


def _write_streaming(
    w: GGUFWriter, rng: np.random.Generator, plan: list[tuple[str, tuple[int, ...], str]]
) -> None:
    g = _gguf()
    for name, shape, qtype in plan:
        if qtype in ("MXFP4", "Q8_0"):
            t = g.GGMLQuantizationType[qtype]
            block, size = g.GGML_QUANT_SIZES[t]
            n_bytes = int(np.prod(shape)) // block * size
            byte_shape = (*shape[:-1], shape[-1] // block * size)
            w.add_tensor_info(name, byte_shape, np.dtype(np.uint8), n_bytes, raw_dtype=t)
        else:
            dtype = np.dtype(np.float16 if qtype == "F16" else np.float32)
            w.add_tensor_info(name, shape, dtype, int(np.prod(shape)) * dtype.itemsize)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for name, shape, qtype in plan:
        data, _ = _encode_tensor(rng, name, shape, qtype, True)
        w.write_tensor_data(data)
