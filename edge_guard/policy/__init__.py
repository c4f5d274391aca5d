"""Policies: loading (`core`), output parsers, golden cases, versions and policy tests."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Policy": "edge_guard.policy.core",
    "load_policy": "edge_guard.policy.core",
    "OutputSpec": "edge_guard.policy.core",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
