"""The local engine: a gpt-oss GGUF on llama.cpp, from token-id prompts to `ModelResponse`s.

- `engine`: the batch decoder (prefix state, parallel sequences, label scores);
- `llama_runtime`: the thin layer over llama-cpp-python's low-level bindings;
- `prefix_state` / `prefix_store`: the shared prompt prefix in KV cells and on disk;
- `sampling`: sampling on raw logits; `gguf_check`: the bounds-checked GGUF header reader;
- `safety`: load guards (memory fit, test-load in a child process) and text checks."""

from __future__ import annotations

from edge_guard.lazy import lazy_exports

_EXPORTS = {
    "Engine": "edge_guard.engine.engine",
    "GenerationRequest": "edge_guard.engine.engine",
    "DEFAULT_N_CTX": "edge_guard.engine.engine",
    "SamplingConfig": "edge_guard.engine.sampling",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
