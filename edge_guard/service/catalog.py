"""The policies and sets a server request may name, loaded once, errors by name only.

A request names a policy or a set, never a path. Names are what `edge-guard policies
list` and `edge-guard policies sets` show (a set file's own `name`, else its file name;
the file name also works, as for `--set`). A policy or set that fails to load is reported
to the client by its name only: the detail (file paths, parser tracebacks) goes to the
server's log. Inline policy text (only with --allow-inline-policies) is checked by the
checks a policy file gets (`edge_guard.policy.core`): text without NUL or lone surrogates,
an `[output]` table of the documented keys and types, distinct labels.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from edge_guard.errors import EdgeGuardError
from edge_guard.policy.core import (
    OutputError,
    OutputSpec,
    Policy,
    list_policies,
    load_policy,
    policy_text_problem,
)
from edge_guard.policy.sets import PolicySet, list_sets, load_set, set_file_names, set_index

log = logging.getLogger("edge_guard.service")

MAX_INLINE_POLICY_CHARS = 200_000


class UnknownPolicy(EdgeGuardError):
    """A request named a policy or set the server does not have (HTTP 404)."""


class PolicyUnavailable(EdgeGuardError):
    """A policy or set the server has but cannot load (HTTP 500; detail in the log)."""


class Forbidden(EdgeGuardError):
    """A request asked for something this server does not allow (HTTP 403)."""


class BadInlinePolicy(EdgeGuardError):
    """Inline policy text or output table that is not a valid policy (HTTP 400)."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


class Catalog:
    """Policies and sets by name (loaded once each; the files are re-listed per call)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._policies: dict[str, Policy] = {}
        self._sets: dict[str, PolicySet] = {}
        # (path, mtime) -> (shown name, aliases)
        self._set_names: dict[tuple[str, int], tuple[str, tuple[str, ...]]] = {}

    def policy_paths(self) -> dict[str, Path]:
        """Policy names a request may use: what `edge-guard policies list` shows."""
        out: dict[str, Path] = {}
        for p in list_policies():
            out.setdefault(p.stem if p.is_file() else p.name, p)
        return out

    def set_paths(self) -> dict[str, Path]:
        """Every name a set answers to -> its file (`sets.set_index`, the one lookup the
        CLI's --set uses too)."""
        return set_index(self._names)

    def set_names(self) -> list[str]:
        return sorted({self._names(p)[0] for p in list_sets()})

    def _names(self, path: Path) -> tuple[str, tuple[str, ...]]:
        """`sets.set_file_names`, cached per file and mtime."""
        try:
            stamp = (str(path), path.stat().st_mtime_ns)
        except OSError:
            return path.stem, ()
        with self._lock:
            if stamp in self._set_names:
                return self._set_names[stamp]
        names = set_file_names(path)
        with self._lock:
            self._set_names[stamp] = names
        return names

    def policy(self, name: str) -> Policy:
        """A policy by name (never a path from a request); loaded once."""
        return self._load_once(self._policies, name, self.policy_paths, load_policy, "policy")

    def policy_set(self, name: str) -> PolicySet:
        """A set by the name `policies sets` shows (or its file name); loaded once."""
        return self._load_once(self._sets, name, self.set_paths, load_set, "policy set")

    def _load_once(self, cache: dict[str, Any], name: str, paths: Any, load: Any, kind: str) -> Any:
        """`name` from `cache`, else found in `paths()` and loaded by `load` (one 404 line for
        an unknown name; a file that fails to load is reported by name only)."""
        with self._lock:
            if name in cache:
                return cache[name]
        path = paths().get(name)
        if path is None:
            what = "policy" if kind == "policy" else "policy or set"
            raise UnknownPolicy(f"{what} {name!r} not found (GET /v1/policies lists them)")
        try:
            loaded = load(path)
        except EdgeGuardError as exc:
            raise unavailable(kind, name, exc) from None
        with self._lock:
            return cache.setdefault(name, loaded)


def unavailable(what: str, name: str, exc: BaseException) -> PolicyUnavailable:
    """The client's error (the name only); the server log gets the detail."""
    log.error("%s %r failed to load: %s", what, name, exc)
    return PolicyUnavailable(
        f"{what} {name!r} failed to load on the server (the server log has the detail)"
    )


def inline_policy(text: str, output: dict[str, Any] | None, name: str = "inline") -> Policy:
    """Client-supplied policy text and `[output]` table, checked by the checks policy files
    get (`policy_text_problem`, `OutputSpec.from_dict`), errors naming the field."""
    why = policy_text_problem(text)
    if why:
        raise BadInlinePolicy(f"field 'policy_text': {why}", "policy_text")
    if len(text) > MAX_INLINE_POLICY_CHARS:
        raise BadInlinePolicy(
            f"field 'policy_text': {len(text)} characters, at most {MAX_INLINE_POLICY_CHARS}",
            "policy_text",
        )
    try:
        spec = OutputSpec.from_dict(output or {}, "policy_output")
    except OutputError as exc:
        param = f"policy_output.{exc.key}" if exc.key else "policy_output"
        raise BadInlinePolicy(f"field {param!r}: {exc.why}", param) from None
    return Policy(name=name, text=text, output=spec)
