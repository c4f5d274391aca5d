"""Backends execute token-id prompts: `local` (llama.cpp here) and `server` (llama-server, vLLM)."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Backend": "edge_guard.backends.local",
    "EngineSettings": "edge_guard.backends.local",
    "LocalBackend": "edge_guard.backends.local",
    "ServerBackend": "edge_guard.backends.server",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
