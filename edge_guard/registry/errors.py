"""Registry error types: each message is the one line the CLI prints after `error:`."""

from __future__ import annotations

from edge_guard.errors import EdgeGuardError, ModelNotFound

__all__ = [
    "DiskSpaceError",
    "DoesNotFit",
    "DownloadError",
    "DownloadInterrupted",
    "HashMismatch",
    "ManifestError",
    "ModelNotFound",
    "RegistryError",
]


class RegistryError(EdgeGuardError):
    """A registry operation (pull, verify, add, rm) that cannot go on."""


class ManifestError(RegistryError):
    """A `models/*.toml` manifest that cannot be read or is inconsistent."""


class DownloadError(RegistryError):
    """The hub could not be reached, or refused the request."""


class DownloadInterrupted(DownloadError):
    """A download stopped part-way; the partial file is kept and the next pull resumes it."""


class DiskSpaceError(RegistryError):
    """Not enough free disk space for a download (checked before any byte is fetched)."""


class HashMismatch(RegistryError):
    """A file whose sha256 differs from the manifest's pin or the trust-on-first-use record."""


class DoesNotFit(RegistryError):
    """A model (weights + KV cache at the requested context) larger than RAM + VRAM."""
