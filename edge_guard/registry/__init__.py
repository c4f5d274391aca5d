"""Model references: manifest ids (`name:tag`), `.gguf` paths, `hf:REPO/FILE.gguf[@REV]`, `synth:PRESET`.

`resolve(ref)` turns any reference into a local file (or a clear error naming the
`edge-guard models pull` command). Manifests, downloads and verification live in the
sibling modules.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from edge_guard.errors import ModelNotFound

DEFAULT_MODEL = "gpt-oss-safeguard-20b:mxfp4"


@dataclass(frozen=True)
class ResolvedModel:
    ref: str  # what the user wrote
    path: Path  # the local GGUF
    id: str  # manifest id, or the path for plain files


def default_model_ref() -> str:
    return os.environ.get("EDGE_GUARD_MODEL") or DEFAULT_MODEL


def resolve(ref: str | os.PathLike[str] | None = None) -> ResolvedModel:
    ref = os.fspath(ref) if ref is not None else default_model_ref()
    if ref.startswith("synth:"):
        from edge_guard.paths import synth_dir
        from edge_guard.synth import write_synthetic_model

        preset = ref.split(":", 1)[1]
        path = synth_dir() / f"{preset}.gguf"
        if not path.exists():
            write_synthetic_model(path, preset)
        return ResolvedModel(ref, path, ref)
    path = Path(ref).expanduser()
    if path.exists():
        return ResolvedModel(ref, path, str(path.resolve()))
    raise ModelNotFound(f"model {ref!r} not found: give a .gguf path, synth:PRESET, or a pulled model id")
