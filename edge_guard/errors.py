"""Error types whose message is the one line a user sees (the CLI prints it and exits non-zero)."""

from __future__ import annotations


class EdgeGuardError(Exception):
    """A problem the user can act on; `str(exc)` is a complete one-line explanation."""

    exit_code = 1


class BadModelFile(EdgeGuardError):
    """A model file that is not a usable gpt-oss GGUF (checked before llama.cpp sees it)."""


class ModelNotFound(EdgeGuardError):
    """A model reference that names nothing on disk."""


class PolicyError(EdgeGuardError):
    """A policy that cannot be loaded or used."""


class StoreError(EdgeGuardError):
    """The result store cannot be opened or written."""
