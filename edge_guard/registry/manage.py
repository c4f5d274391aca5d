"""Catalog management: `models list`, `models add` (register a local file), `models rm`.

Registrations and download records live in the registry file (`store.py`); removing a
downloaded model deletes its file but keeps its trust-on-first-use hash, so a later pull
must still match it.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from edge_guard.registry import store
from edge_guard.registry.download import lock_path
from edge_guard.registry.errors import ModelNotFound, RegistryError
from edge_guard.registry.manifests import ID_RE, load_manifests


def add_local(path: str | Path, model_id: str, *, force: bool = False) -> dict[str, Any]:
    """Register an existing GGUF under `model_id` (checked and hashed now)."""
    from edge_guard.gguf.check import check_model_file

    if not ID_RE.match(model_id):
        raise RegistryError(f"id {model_id!r} must look like name:tag (lowercase, e.g. mine:q8_0)")
    if model_id in load_manifests():
        raise RegistryError(f"{model_id} is a manifest id; choose another id")
    if model_id in store.local_models() and not force:
        raise RegistryError(f"{model_id} is already registered (use --force to replace it)")
    p = Path(path).expanduser().resolve()
    if not p.is_file():
        raise ModelNotFound(f"no such model file: {path}")
    check_model_file(p)
    rec = {
        "path": str(p),
        "sha256": store.sha256_file(p),
        "size": p.stat().st_size,
        "added": store.now(),
    }
    with store.editing() as reg:
        reg["local"][model_id] = rec
    return rec


def removal_plan(ref: str) -> dict[str, Any]:
    """What `models rm REF` would delete, and the question to ask first."""
    from edge_guard.registry import lookup

    target = lookup(ref)
    if target.kind == "local":
        path = store.local_models()[target.id]["path"]
        return {
            "kind": "local",
            "id": target.id,
            "files": [],
            "question": f"unregister {target.id} (its file {path} is kept)?",
        }
    if target.kind == "synth":
        if target.path is None:
            raise ModelNotFound(f"{target.id} has not been built")
        return {
            "kind": "synth",
            "id": target.id,
            "files": [str(target.path)],
            "question": f"delete the synthetic model {target.path}?",
        }
    if target.source is None:
        raise RegistryError(f"{ref} is a plain file, not a registered model; delete it yourself")
    mine = store.download_path(target.source)
    partials = [mine.with_name(mine.name + s) for s in (".partial", ".partial.json")]
    leftovers = [str(p) for p in partials if p.exists()]
    lock = [str(lock_path(mine))] if lock_path(mine).exists() else []
    if mine.is_file():
        size = store.fmt_size(mine.stat().st_size)
        return {
            "kind": "download",
            "id": target.id,
            "key": target.source.key,
            "files": [str(mine), *leftovers, *lock],
            "question": f"delete {target.id} ({size}) at {mine}?",
        }
    if target.path is not None:
        raise RegistryError(
            f"{target.id} is in the Hugging Face cache ({target.path}); remove it with "
            "`hf cache rm` (edge-guard only deletes its own downloads)"
        )
    if leftovers:
        return {
            "kind": "download",
            "id": target.id,
            "key": target.source.key,
            "files": leftovers + lock,
            "question": f"delete the partial download of {target.id}?",
        }
    raise ModelNotFound(f"model {target.id} is not downloaded; nothing to remove")


def remove_model(plan: dict[str, Any]) -> str:
    """Carry out a `removal_plan`; returns what was done, in one line."""
    for f in plan["files"]:
        with contextlib.suppress(FileNotFoundError):
            Path(f).unlink()
    if plan["kind"] == "local":
        with store.editing() as reg:
            reg["local"].pop(plan["id"], None)
        return f"unregistered {plan['id']}"
    if plan["kind"] == "download":
        with store.editing() as reg:
            reg["pulled"].pop(plan["key"], None)
            kept = plan["key"] in reg["tofu"]
        note = " (its sha256 record is kept: a new pull must match it)" if kept else ""
        return f"removed {plan['id']}{note}"
    return f"removed {plan['id']}"


def list_models() -> list[dict[str, Any]]:
    """Every known model: manifests, `models add` registrations, pulled hf: files."""
    from edge_guard.registry import default_model_ref, store
    from edge_guard.registry.manifests import find_manifest, load_manifests

    manifests = load_manifests()
    reg = store.load_registry()
    default = find_manifest(default_model_ref(), manifests)
    default_id = default.id if default else default_model_ref()
    rows: list[dict[str, Any]] = []

    def source_row(mid: str, source: Any, **extra: Any) -> dict[str, Any]:
        mine = store.download_path(source)
        path = store.find_local(source)
        trust = "pinned" if source.sha256 else "tofu" if source.key in reg["tofu"] else "unverified"
        return {
            "id": mid,
            **extra,
            "repo": source.repo,
            "filename": source.filename,
            "revision": source.revision,
            "size": path.stat().st_size if path else source.size,
            "size_exact": bool(path) or bool(source.sha256),
            "installed": path is not None,
            "location": None if path is None else "edge-guard" if path == mine else "hf-cache",
            "path": str(path) if path else None,
            "partial": mine.with_name(mine.name + ".partial").exists(),
            "trust": trust,
            "sha256": source.sha256 or reg["tofu"].get(source.key, {}).get("sha256"),
            "default": mid == default_id,
        }

    seen = set()
    for m in sorted(manifests.values(), key=lambda m: (m.family != "safeguard", m.id)):
        seen.add(m.source.key)
        rows.append(
            source_row(
                m.id, m.source, kind="manifest", family=m.family, quant=m.quant, verified=m.verified
            )
        )
    for key, rec in sorted(reg["pulled"].items()):
        if key not in seen and str(rec.get("id", "")).startswith("hf:"):
            from edge_guard.registry.manifests import parse_hf_ref

            src = parse_hf_ref(rec["id"], manifests)
            rows.append(
                source_row(rec["id"], src, kind="hf", family=None, quant=None, verified=False)
            )
    for mid, rec in sorted(reg["local"].items()):
        p = Path(rec["path"])
        rows.append(
            {
                "id": mid,
                "kind": "local",
                "family": None,
                "quant": None,
                "verified": False,
                "repo": None,
                "filename": p.name,
                "revision": None,
                "size": p.stat().st_size if p.is_file() else rec.get("size"),
                "size_exact": True,
                "installed": p.is_file(),
                "location": "local",
                "path": str(p),
                "partial": False,
                "trust": "registered",
                "sha256": rec.get("sha256"),
                "default": mid == default_id,
            }
        )
    return rows
