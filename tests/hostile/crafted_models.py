"""Hostile GGUF files: variations of the synthetic ``tiny`` model, each broken one way.

``HEADER_REJECTS`` must be refused by `gguf_check` (no llama.cpp involved);
``LLAMA_FAILURES`` pass that check but make llama.cpp abort, fail or compute NaNs, so
only the child-process load probe stands between them and the edge_guard process.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import numpy as np

from edge_guard.registry import synth

# kind -> a phrase of the one-line error
HEADER_REJECTS = {
    "nested-arrays": "arrays are nested too deeply",
    "merges-scalar": "tokenizer.ggml.merges is 5, not an array",
    "block-count-huge": "gpt-oss.block_count is 2147483648; expected an integer in 1..4096",
    "block-count-beyond-tensors": "but the file has only",
    "head-count-kv-zero": "gpt-oss.attention.head_count_kv is 0",
    "context-negative": "gpt-oss.context_length is -1",
    "epsilon-nan": "layer_norm_rms_epsilon is nan",
}
# kind -> a phrase of the one-line error raised after the child-process probe
LLAMA_FAILURES = {
    # ggml asserts the attention sinks are F32 while building the graph (context creation)
    "sinks-f16": "llama.cpp crashed loading",
    # the CPU backend has no F32 x F16 multiply for the norms: abort at the first decode
    "norms-f16": "llama.cpp crashed loading",
    # every output weight NaN: loads and decodes, but nothing can be sampled
    "output-nan": "computes NaN logits",
    # head_count 3 with tensors sized for 4 heads: llama.cpp refuses (no crash)
    "wrong-shape": "has wrong shape",
}


def _writer_override(method: str, key: str, kind: str, value: object) -> mock._patch:  # type: ignore[type-arg]
    import gguf

    def add(self, *_a: object) -> None:  # type: ignore[no-untyped-def]
        getattr(self, f"add_{kind}")(key, value)

    return mock.patch.object(gguf.GGUFWriter, method, add)


def _retype(predicate, qtype: str) -> mock._patch:  # type: ignore[no-untyped-def,type-arg]
    plan = synth._tensor_plan
    return mock.patch.object(
        synth,
        "_tensor_plan",
        lambda p, n: (
            (name, shape, qtype if predicate(name) else t) for name, shape, t in plan(p, n)
        ),
    )


@contextlib.contextmanager
def _patches(kind: str) -> Iterator[None]:
    ps: list[mock._patch] = []  # type: ignore[type-arg]
    if kind == "merges-scalar":
        ps.append(_writer_override("add_token_merges", "tokenizer.ggml.merges", "uint32", 5))
    elif kind == "block-count-huge":
        ps.append(_writer_override("add_block_count", "gpt-oss.block_count", "uint32", 2**31))
    elif kind == "block-count-beyond-tensors":
        ps.append(_writer_override("add_block_count", "gpt-oss.block_count", "uint32", 4000))
    elif kind == "head-count-kv-zero":
        ps.append(
            _writer_override("add_head_count_kv", "gpt-oss.attention.head_count_kv", "uint32", 0)
        )
    elif kind == "context-negative":
        ps.append(_writer_override("add_context_length", "gpt-oss.context_length", "int32", -1))
    elif kind == "epsilon-nan":
        ps.append(
            _writer_override(
                "add_layer_norm_rms_eps",
                "gpt-oss.attention.layer_norm_rms_epsilon",
                "float32",
                float("nan"),
            )
        )
    elif kind == "sinks-f16":
        ps.append(_retype(lambda n: n.endswith("attn_sinks.weight"), "F16"))
    elif kind == "norms-f16":
        ps.append(_retype(lambda n: n.endswith("norm.weight"), "F16"))
    elif kind == "output-nan":
        values = synth._random_values

        def nan_output(rng, name, shape):  # type: ignore[no-untyped-def]
            out = values(rng, name, shape)
            return np.full(shape, np.nan, dtype=np.float32) if name == "output.weight" else out

        ps.append(mock.patch.object(synth, "_random_values", nan_output))
    elif kind == "wrong-shape":
        ps.append(_writer_override("add_head_count", "gpt-oss.attention.head_count", "uint32", 3))
    else:
        raise ValueError(f"unknown crafted model {kind!r}")
    for p in ps:
        p.start()
    try:
        yield
    finally:
        for p in reversed(ps):
            p.stop()


def _nested_arrays(path: Path, depth: int = 5000) -> None:
    """A header whose one value is an array of an array of ... (5000 levels, 60 kB)."""

    def s(x: str) -> bytes:
        return struct.pack("<Q", len(x)) + x.encode()

    kv = s("deep") + struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * depth
    kv += struct.pack("<IQ", 4, 0)
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + kv)


def craft(kind: str, path: Path) -> Path:
    if kind == "nested-arrays":
        _nested_arrays(path)
        return path
    with _patches(kind):
        synth.write_synthetic_model(path, "tiny")
    return path
