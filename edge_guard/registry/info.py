"""`models info` and `models verify`: GGUF metadata summaries and sha256 checks.

`model_info(path)` reads only the GGUF header (fast on 12 GB files): architecture,
parameter count, tensor types grouped as attention / experts / router / embeddings /
norms, context length, sliding window, expert counts, vocabulary size, chat template.
`verify_model(ref)` checks the file with `check_model_file` and compares its sha256 with
the manifest's pin, the trust-on-first-use record, or the `models add` registration.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_guard.registry.errors import HashMismatch

GROUPS = ("attention", "experts", "router", "embeddings", "norms", "other")


def tensor_group(name: str) -> str:
    base = name.rsplit(".", 1)[0]
    if base in ("token_embd", "output"):
        return "embeddings"
    if "_exps" in base:
        return "experts"
    if "ffn_gate_inp" in base:
        return "router"
    if "norm" in base:
        return "norms"
    if "attn_" in base:
        return "attention"
    return "other"


def _file_type_name(value: Any) -> str | None:
    if not isinstance(value, int):
        return None
    try:
        import gguf

        return gguf.LlamaFileType(value).name
    except (ImportError, ValueError):
        return f"type{value}"


def model_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A JSON-ready summary of a GGUF's header (one-line `BadModelFile` if unreadable)."""
    from edge_guard.errors import BadModelFile
    from edge_guard.gguf.check import check_model_file, read_header

    header = read_header(path)
    md = header.metadata
    ak = header.arch_key
    groups: dict[str, dict[str, dict[str, int]]] = {}
    for t in header.tensors:
        g = groups.setdefault(tensor_group(t.name), {})
        row = g.setdefault(t.type_name, {"tensors": 0, "params": 0, "bytes": 0})
        row["tensors"] += 1
        row["params"] += t.n_elements
        row["bytes"] += t.n_bytes
    n_head, n_embd = ak("attention.head_count"), ak("embedding_length")
    head_dim = ak("attention.key_length")
    if head_dim is None and isinstance(n_head, int) and isinstance(n_embd, int) and n_head:
        head_dim = n_embd // n_head
    tokens = md.get("tokenizer.ggml.tokens")
    try:
        check_model_file(path)
        check = "ok"
    except BadModelFile as exc:
        check = str(exc).split(": ", 1)[-1]
    return {
        "path": str(Path(path)),
        "file_size": header.file_size,
        "gguf_version": header.version,
        "architecture": header.architecture,
        "name": md.get("general.name"),
        "file_type": _file_type_name(md.get("general.file_type")),
        "parameters": header.n_params,
        "tensor_data_bytes": sum(t.n_bytes for t in header.tensors),
        "n_tensors": len(header.tensors),
        "context_length": ak("context_length"),
        "embedding_length": n_embd,
        "block_count": ak("block_count"),
        "head_count": n_head,
        "head_count_kv": ak("attention.head_count_kv"),
        "head_dim": head_dim,
        "sliding_window": ak("attention.sliding_window"),
        "expert_count": ak("expert_count"),
        "expert_used_count": ak("expert_used_count"),
        "expert_feed_forward_length": ak("expert_feed_forward_length"),
        "rope_freq_base": ak("rope.freq_base"),
        "rope_scaling": ak("rope.scaling.type"),
        "vocab_size": len(tokens) if tokens is not None else None,
        "chat_template": isinstance(md.get("tokenizer.chat_template"), str),
        "tensor_types": {g: groups[g] for g in GROUPS if g in groups},
        "check": check,
    }


def _hash_with_bar(path: Path, progress: bool) -> str:
    from edge_guard.registry.store import sha256_file

    if not progress:
        return sha256_file(path)
    from tqdm import tqdm

    with tqdm(
        total=path.stat().st_size, unit="B", unit_scale=True, desc="sha256", file=sys.stderr
    ) as bar:
        return sha256_file(path, bar.update)


def verify_model(
    ref: str | os.PathLike[str],
    *,
    progress: bool | None = None,
    echo: Callable[[str], Any] | None = None,
) -> dict[str, Any]:
    """Check a model file; raise `BadModelFile` / `HashMismatch` (one line) on failure.

    A manifest or hf: model with no hash on record gets one now (trust on first use).
    """
    from edge_guard.gguf.check import check_model_file
    from edge_guard.registry import lookup, resolve, store

    say = echo or (lambda s: print(s, file=sys.stderr))
    progress = sys.stderr.isatty() if progress is None else progress
    target = lookup(ref)
    path = resolve(ref).path
    check_model_file(path)
    sha = _hash_with_bar(path, progress)
    size = path.stat().st_size
    expected, trust = None, "none"
    if target.source is not None:
        expected, trust = store.expected_sha256(target.source)
    elif target.kind == "local":
        expected = store.local_models()[target.id].get("sha256")
        trust = "registered" if expected else "none"
    if expected and sha != expected:
        what = {
            "pinned": "the manifest's pin",
            "tofu": "the hash recorded on first use",
            "registered": "the hash recorded by `models add`",
        }[trust]
        raise HashMismatch(
            f"{path}: sha256 {sha[:16]}… does not match {what} ({expected[:16]}…); the file is "
            "corrupt or was replaced — delete it and pull again"
        )
    if expected is None and target.source is not None:
        store.record_tofu(target.source, sha, size, target.id)
        say(f"recorded sha256 for {target.id} (trust on first use: no hash was on record)")
        trust = "tofu-recorded"
    return {
        "id": target.id,
        "path": str(path),
        "size": size,
        "sha256": sha,
        "expected": expected,
        "trust": trust,
        "check": "ok",
    }
