"""The local engine: a gpt-oss GGUF on llama.cpp, from token-id prompts to `ModelResponse`s.

- `engine`: the batch decoder (prefix state, parallel sequences, label scores);
- `llama_runtime`: the thin layer over llama-cpp-python's low-level bindings;
- `prefix_state` / `prefix_store`: the shared prompt prefix in KV cells and on disk;
- `sampling`: sampling on raw logits; `gguf_check`: the bounds-checked GGUF header reader;
- `safety`: load guards (memory fit, test-load in a child process) and text checks."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Engine": "edge_guard.engine.engine",
    "GenerationRequest": "edge_guard.engine.engine",
    "DEFAULT_N_CTX": "edge_guard.engine.engine",
    "SamplingConfig": "edge_guard.engine.sampling",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
