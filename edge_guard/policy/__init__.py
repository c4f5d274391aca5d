"""Policies: loading (`core`), output parsers, golden cases, versions and policy tests."""

from __future__ import annotations

from edge_guard.lazy import lazy_exports

_EXPORTS = {
    "Policy": "edge_guard.policy.core",
    "load_policy": "edge_guard.policy.core",
    "OutputSpec": "edge_guard.policy.core",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
