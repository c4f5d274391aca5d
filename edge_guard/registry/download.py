"""`edge-guard models pull`: fetch a GGUF from the Hugging Face hub, resumably, and verify it.

The metadata request and the byte transfer are `registry.hub_fetch` (huggingface_hub's
`get_hf_file_metadata` and HTTP session). The bytes go to `<file>.partial` next to the
destination; an interrupted pull (network drop, Ctrl-C) keeps it, and the next pull
continues with a `Range` request.
(huggingface_hub 2.x's `hf_hub_download` writes process-unique temporary files and
deletes them on failure, so it can only resume within one call.)

Before any byte is fetched: the free disk space is checked, and an LFS ETag (the file's
sha256) is compared with the manifest's pin / the trust-on-first-use record. After the
transfer: sha256 and `check_model_file`; a mismatching file is deleted, never installed.

A manifest's file name can be wrong (hub names could not all be confirmed). When the hub has
no such file, `substitute.pick_quant_file` names the repository's one .gguf file for the
manifest's quant, and the pull says it took that one; the file is stored, recorded (with
its hub name) and trusted under the manifest's own name, so lookups find it as before.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edge_guard.errors import BadModelFile
from edge_guard.registry import store
from edge_guard.registry.errors import DiskSpaceError, DownloadError, HashMismatch, RegistryError
from edge_guard.registry.hub_fetch import EntryMissing, FileMeta, head, hub_endpoint, transfer
from edge_guard.registry.manifests import SHA256_RE, Source
from edge_guard.registry.substitute import pick_quant_file

DISK_MARGIN = 64 * 1024 * 1024  # keep this much free after the download

Echo = Callable[[str], Any]


@dataclass(frozen=True)
class PullResult:
    id: str
    path: Path
    sha256: str | None  # None when the file was already there (not re-hashed)
    size: int
    trust: str  # pinned | tofu-recorded | tofu-matched | present
    downloaded: bool
    resumed_from: int = 0
    remote_file: str | None = None  # the hub file taken when the manifest's name was missing


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def free_disk_bytes(path: Path) -> int:
    """Free bytes on the filesystem that holds `path` (or its nearest existing parent)."""
    for p in (path, *path.parents):
        if p.exists():
            return shutil.disk_usage(p).free
    return shutil.disk_usage(Path.cwd()).free


def _check_disk(dest: Path, need: int, pull_id: str) -> None:
    free = free_disk_bytes(dest.parent)
    if free < need + DISK_MARGIN:
        raise DiskSpaceError(
            f"not enough disk space to pull {pull_id}: needs {store.fmt_size(need)} but "
            f"{dest.parent} has {store.fmt_size(free)} free (free some space or set "
            "EDGE_GUARD_MODELS_DIR to another disk)"
        )


def _reject(partial: Path, meta_file: Path) -> None:
    partial.unlink(missing_ok=True)
    meta_file.unlink(missing_ok=True)


def pull(
    ref: str,
    *,
    echo: Echo | None = None,
    progress: bool | None = None,
    retrust: bool = False,
    force: bool = False,
) -> PullResult:
    """Download a manifest id or hf: reference into the models folder and verify it.

    `retrust` drops the trust-on-first-use record first (accept a changed upstream file);
    `force` downloads again even when a local copy exists.
    """
    from edge_guard.registry import is_offline, lookup

    say = echo or _stderr
    progress = sys.stderr.isatty() if progress is None else progress
    target = lookup(ref)
    if target.kind not in ("manifest", "hf") or target.source is None:
        raise RegistryError(
            f"{ref} is a {target.kind} model; only model ids and hf: references are pulled"
        )
    source, pid = target.source, target.id
    if target.path is not None and not force:
        say(f"{pid} is already downloaded: {target.path}")
        return PullResult(pid, target.path, None, target.path.stat().st_size, "present", False)
    if retrust and source.sha256:
        raise RegistryError(f"{pid} pins its sha256 in its manifest; --retrust does not apply")
    if is_offline():
        raise DownloadError(f"cannot pull {pid}: offline (HF_HUB_OFFLINE is set)")
    expected, origin = (None, "none") if retrust else store.expected_sha256(source)
    remote = None
    try:
        meta = head(source, pid)
    except EntryMissing as exc:
        if target.manifest is None:
            raise
        remote = pick_quant_file(target.manifest, str(exc), hub_endpoint())
        say(
            f"{source.filename} is not in {source.repo}@{source.revision}; taking {remote}, the "
            f"only .gguf file there named for quant {target.manifest.quant!r}"
        )
        meta = head(replace(source, filename=remote), pid)
    what, etag_sha = _what(origin), _etag_sha(meta)
    if expected and etag_sha and etag_sha != expected:
        raise HashMismatch(
            f"{pid}: the hub now serves sha256 {etag_sha[:16]}… but {what} is "
            f"{expected[:16]}…; refusing to download"
            + (
                " (if the publisher updated the file, pull with --retrust)"
                if origin == "tofu"
                else ""
            )
        )
    if source.sha256 and source.size and meta.size and meta.size != source.size:
        raise HashMismatch(
            f"{pid}: the hub announces {meta.size} bytes but the manifest pins {source.size}"
        )
    dest = store.download_path(source)
    dest.parent.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock, Timeout

    lock = FileLock(str(lock_path(dest)))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise RegistryError(f"another pull of {pid} is running (lock {lock.lock_file})") from None
    try:
        return _pull_locked(source, pid, dest, meta, expected, origin, say, progress, remote)
    finally:
        lock.release()


def _pull_locked(
    source: Source,
    pid: str,
    dest: Path,
    meta: FileMeta,
    expected: str | None,
    origin: str,
    say: Echo,
    progress: bool,
    remote: str | None = None,
) -> PullResult:
    """The download proper, holding the per-file lock (`remote`: the hub file, when it is not
    the manifest's)."""
    from edge_guard.gguf.check import check_model_file

    what, etag_sha = _what(origin), _etag_sha(meta)
    partial = dest.with_name(dest.name + ".partial")
    meta_file = dest.with_name(dest.name + ".partial.json")
    have = 0
    try:
        old = json.loads(meta_file.read_text(encoding="utf-8"))
        if old.get("etag") == meta.etag and partial.is_file():
            have = partial.stat().st_size
    except (OSError, ValueError):
        pass
    if have == 0 or (meta.size is not None and have > meta.size):
        _reject(partial, meta_file)
        have = 0
    need = (meta.size if meta.size is not None else (source.size or 0)) - have
    _check_disk(dest, need, pid)
    meta_file.write_text(
        json.dumps({"etag": meta.etag, "commit": meta.commit, "size": meta.size}),
        encoding="utf-8",
    )
    if have:
        say(f"resuming {pid} at {store.fmt_size(have)} of {store.fmt_size(meta.size)}")
    else:
        say(f"pulling {pid} ({store.fmt_size(meta.size)}) from {source.repo}@{meta.commit[:12]}")
    try:
        label = (remote or source.filename).split("/")[-1]
        sha, size = transfer(meta, partial, have, label, pid, progress)
    except KeyboardInterrupt:
        done = partial.stat().st_size if partial.exists() else 0
        say(f"interrupted at {store.fmt_size(done)}; run the same pull again to resume")
        raise
    if etag_sha and sha != etag_sha:
        _reject(partial, meta_file)
        raise HashMismatch(
            f"{pid}: downloaded bytes hash to {sha[:16]}… but the hub announced "
            f"{etag_sha[:16]}… (corrupt transfer); the file was deleted, pull again"
        )
    if expected and sha != expected:
        _reject(partial, meta_file)
        raise HashMismatch(
            f"{pid}: downloaded file has sha256 {sha[:16]}… but {what} is {expected[:16]}…; "
            "the file was deleted and not installed"
        )
    try:
        check_model_file(partial)
    except BadModelFile as exc:
        _reject(partial, meta_file)
        reason = str(exc).split(": ", 1)[-1]
        raise RegistryError(
            f"{pid}: downloaded file is not a usable gpt-oss GGUF ({reason}); deleted"
        ) from None
    os.replace(partial, dest)
    meta_file.unlink(missing_ok=True)
    if expected is None:
        store.record_tofu(source, sha, size, pid)
        say(
            f"recorded sha256 {sha} for {pid} — trust on first use: its manifest pins no "
            "hash, so later pulls and `edge-guard models verify` must match this one"
        )
        trust = "tofu-recorded"
    else:
        trust = "pinned" if origin == "pinned" else "tofu-matched"
        say(f"sha256 {sha[:16]}… matches {what}")
    with store.editing() as reg:
        reg["pulled"][source.key] = {
            "id": pid,
            "path": str(dest),
            "sha256": sha,
            "size": size,
            "commit": meta.commit,
            "etag": meta.etag,
            "pulled": store.now(),
            **({"file": remote} if remote else {}),
        }
    say(f"{pid} ready: {dest}")
    return PullResult(pid, dest, sha, size, trust, True, have, remote)


def lock_path(dest: Path) -> Path:
    """The lock that keeps two pulls of one file apart (left behind, hidden, when done)."""
    return dest.with_name(f".{dest.name}.lock")


def _what(origin: str) -> str:
    return "the manifest's pinned sha256" if origin == "pinned" else "the sha256 recorded"


def _etag_sha(meta: FileMeta) -> str | None:
    """An LFS file's ETag is its sha256; other ETags (git blob ids) say nothing about it."""
    etag = meta.etag.lower()
    return etag if SHA256_RE.match(etag) else None
