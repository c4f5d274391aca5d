"""Model references: manifest ids (`name:tag`), `.gguf` paths, `hf:REPO/FILE.gguf[@REV]`, `synth:PRESET`.

`resolve(ref)` turns any reference into a local file, never touching the network (a
manifest or hf: reference that is not on disk raises `ModelNotFound` naming the exact
`edge-guard models pull ...` command). `ensure_model(ref, yes=..., interactive=...)` is
what classify/run/TUI call: it offers to pull a missing model (like `ollama run`) when
online and interactive. Sibling modules: `manifests` (the TOML builds), `store` (local
files and hash records), `download` (pull), `info` (info/verify), `fit` (RAM/VRAM).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_guard.defaults import DEFAULT_MODEL, env
from edge_guard.errors import ModelNotFound
from edge_guard.registry.manifests import (
    Manifest,
    Source,
    find_manifest,
    load_manifests,
    parse_hf_ref,
)

__all__ = [
    "DEFAULT_MODEL",
    "ResolvedModel",
    "Target",
    "check_fit",
    "default_model_ref",
    "ensure_model",
    "fit_report",
    "is_offline",
    "lookup",
    "model_info",
    "pull",
    "resolve",
    "verify_model",
]


@dataclass(frozen=True)
class ResolvedModel:
    ref: str  # what the user wrote
    path: Path  # the local GGUF
    id: str  # manifest id, or the path for plain files


@dataclass(frozen=True)
class Target:
    """What a reference names, before anything is downloaded or hashed."""

    ref: str
    kind: str  # synth | path | local | manifest | hf
    id: str
    manifest: Manifest | None = None
    source: Source | None = None
    path: Path | None = None  # the local file, if there is one

    @property
    def pull_command(self) -> str:
        return f"edge-guard models pull {self.id}"


def default_model_ref() -> str:
    return env("EDGE_GUARD_MODEL") or DEFAULT_MODEL


def is_offline() -> bool:
    """`HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`) set to a true value."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return True
    return False


def lookup(ref: str | os.PathLike[str] | None = None) -> Target:
    """Classify a reference and find its local file (no network, no hashing)."""
    from edge_guard.registry import store

    ref = os.fspath(ref) if ref is not None else default_model_ref()
    if ref.startswith("synth:"):
        from edge_guard.paths import synth_dir

        path = synth_dir() / f"{ref.split(':', 1)[1]}.gguf"
        return Target(ref, "synth", ref, path=path if path.exists() else None)
    path = Path(ref).expanduser()
    if not ref.startswith("hf:") and path.exists():  # a file needs no manifest to be read
        if path.is_dir():
            raise ModelNotFound(f"{ref} is a folder, not a .gguf file")
        if not path.is_file():  # a FIFO would block, /dev/zero never end
            raise ModelNotFound(f"{ref} is not a regular file, so not a .gguf model")
        return Target(ref, "path", str(path.resolve()), path=path)
    manifests = load_manifests()
    if ref.startswith("hf:"):
        source = parse_hf_ref(ref, manifests)
        return Target(ref, "hf", source.hf_ref, source=source, path=store.find_local(source))
    local = store.local_models().get(ref)
    if local is not None:
        p = Path(local["path"])
        return Target(ref, "local", ref, path=p if p.is_file() else None)
    manifest = find_manifest(ref, manifests)
    if manifest is not None:
        found = store.find_local(manifest.source)
        return Target(ref, "manifest", manifest.id, manifest, manifest.source, found)
    if ref.endswith(".gguf") or os.sep in ref or "/" in ref:
        raise ModelNotFound(f"no such model file: {ref}")
    raise ModelNotFound(
        f"unknown model {ref!r}: give a model id (see `edge-guard models list`), "
        "a .gguf path, hf:REPO/FILE.gguf or synth:PRESET"
    )


def _not_found(target: Target, extra: str = "") -> ModelNotFound:
    if target.kind == "local":
        return ModelNotFound(
            f"model {target.id} is registered but its file is gone; "
            f"run `edge-guard models rm {target.id}` or add it again"
        )
    return ModelNotFound(f"model {target.id} is not downloaded{extra}: run `{target.pull_command}`")


def resolve(ref: str | os.PathLike[str] | None = None) -> ResolvedModel:
    """The local file for `ref`; never downloads (see `ensure_model`)."""
    target = lookup(ref)
    if target.kind == "synth":
        if target.path is not None:
            return ResolvedModel(target.ref, target.path, target.id)
        from edge_guard.paths import synth_dir
        from edge_guard.registry.synth import write_synthetic_model

        preset = target.ref.split(":", 1)[1]
        path = synth_dir() / f"{preset}.gguf"
        write_synthetic_model(path, preset)
        return ResolvedModel(target.ref, path, target.id)
    if target.path is None:
        raise _not_found(target)
    return ResolvedModel(target.ref, target.path, target.id)


def _tty_confirm(question: str) -> bool:
    import click

    return bool(click.confirm(question, default=False, err=True))


def ensure_model(
    ref: str | os.PathLike[str] | None = None,
    *,
    yes: bool,
    interactive: bool,
    confirm: Callable[[str], bool] | None = None,
    echo: Callable[[str], Any] | None = None,
) -> ResolvedModel:
    """`resolve(ref)`, pulling a missing manifest/hf: model first when allowed.

    Offline (`HF_HUB_OFFLINE=1`): the one-line `ModelNotFound`. Online: `yes=True` pulls
    without asking; `interactive=True` asks "pull ID (SIZE)? [y/N]" through `confirm`
    (default: a click prompt, only when stdin is a TTY); otherwise the one-line error.
    """
    try:
        return resolve(ref)
    except ModelNotFound:
        target = lookup(ref)
        if target.kind not in ("manifest", "hf"):
            raise
    if is_offline():
        raise _not_found(target, " (offline: HF_HUB_OFFLINE is set)")
    if not yes:
        asker = confirm
        if asker is None and interactive and sys.stdin.isatty():
            asker = _tty_confirm
        if not interactive or asker is None:
            raise _not_found(target)
        from edge_guard.registry.store import fmt_size

        assert target.source is not None
        size = fmt_size(target.source.size) if target.source.size else "size unknown"
        if not asker(f"pull {target.id} ({size})?"):
            raise _not_found(target)
    from edge_guard.registry.download import pull as _pull

    result = _pull(target.id, echo=echo)
    return ResolvedModel(target.ref, result.path, target.id)


def __getattr__(name: str) -> Any:
    """Lazy re-exports, so `import edge_guard.registry` stays light."""
    lazy = {
        "pull": "edge_guard.registry.download",
        "model_info": "edge_guard.registry.info",
        "verify_model": "edge_guard.registry.info",
        "check_fit": "edge_guard.registry.fit",
        "fit_report": "edge_guard.registry.fit",
    }
    if name in lazy:
        import importlib

        return getattr(importlib.import_module(lazy[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
