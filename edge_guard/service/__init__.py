"""`edge-guard serve`: the local HTTP service (OpenAI Moderation-compatible) and its client.

- `core`: the model, store, policies and cancellable jobs (no HTTP);
- `app`: `create_app(core, ...)`, the FastAPI routes, auth and limits;
- `client`: `RemoteClassifier`, the `Classifier` surface over a running server.
"""

from __future__ import annotations

from edge_guard.lazy import lazy_exports

_EXPORTS = {
    "create_app": "edge_guard.service.app",
    "ServiceCore": "edge_guard.service.core",
    "Limits": "edge_guard.service.core",
    "RemoteClassifier": "edge_guard.backends.server_client",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
