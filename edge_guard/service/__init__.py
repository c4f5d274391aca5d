"""`edge-guard serve`: the local HTTP service (OpenAI Moderation-compatible) and its client.

- `core`: the model, store, policies and cancellable jobs (no HTTP);
- `app`: `create_app(core, ...)`, the FastAPI routes, auth and limits;
- `client`: `RemoteClassifier`, the `Classifier` surface over a running server.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "create_app": "edge_guard.service.app",
    "ServiceCore": "edge_guard.service.core",
    "Limits": "edge_guard.service.core",
    "RemoteClassifier": "edge_guard.service.client",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
