"""Backends execute token-id prompts: `local` (llama.cpp here) and `server` (llama-server, vLLM)."""

from __future__ import annotations

from edge_guard.lazy import lazy_exports

_EXPORTS = {
    "Backend": "edge_guard.backends.local",
    "EngineSettings": "edge_guard.backends.local",
    "LocalBackend": "edge_guard.backends.local",
    "ServerBackend": "edge_guard.backends.server",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
