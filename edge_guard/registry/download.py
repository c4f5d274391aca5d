"""`edge-guard models pull`: fetch a GGUF from the Hugging Face hub, resumably, and verify it.

Uses huggingface_hub for the metadata request (`get_hf_file_metadata`: commit, ETag,
size, CDN location; `HF_ENDPOINT` and tokens honoured) and its HTTP session for the
transfer. The bytes go to `<file>.partial` next to the destination; an interrupted pull
(network drop, Ctrl-C) keeps it, and the next pull continues with a `Range` request.
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

import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

from edge_guard.errors import BadModelFile
from edge_guard.registry import store
from edge_guard.registry.errors import (
    DiskSpaceError,
    DownloadError,
    DownloadInterrupted,
    HashMismatch,
    RegistryError,
)
from edge_guard.registry.manifests import SHA256_RE, Source
from edge_guard.registry.substitute import pick_quant_file

RETRIES = 5  # attempts without progress before giving up (the partial file is kept)
RETRY_WAIT = 1.0  # seconds before the first retry; doubles, capped at 8
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


class _EntryMissing(DownloadError):
    """The repository exists but has no file of that name."""


@dataclass(frozen=True)
class _Meta:
    url: str
    etag: str
    commit: str
    size: int | None


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def free_disk_bytes(path: Path) -> int:
    """Free bytes on the filesystem that holds `path` (or its nearest existing parent)."""
    for p in (path, *path.parents):
        if p.exists():
            return shutil.disk_usage(p).free
    return shutil.disk_usage(Path.cwd()).free


def _endpoint() -> str | None:
    ep = os.environ.get("HF_ENDPOINT")
    return ep.rstrip("/") if ep else None


def _head(source: Source, pull_id: str) -> _Meta:
    """The hub's metadata for the file (one HEAD request), or a one-line DownloadError."""
    import httpx2
    from huggingface_hub import constants, get_hf_file_metadata
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    endpoint = _endpoint()
    where = endpoint or constants.ENDPOINT
    url = (  # what hf_hub_url builds, without its import-time endpoint template
        f"{where}/{source.repo}/resolve/{quote(source.revision, safe='')}/{quote(source.filename)}"
    )
    try:
        meta = get_hf_file_metadata(url, endpoint=endpoint, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except GatedRepoError:
        raise DownloadError(
            f"{source.repo} is gated: accept its terms on the hub and log in (`hf auth login`)"
        ) from None
    except RepositoryNotFoundError:
        raise DownloadError(
            f"repository {source.repo} not found on {where} (private, renamed or a typo?)"
        ) from None
    except RevisionNotFoundError:
        raise DownloadError(f"revision {source.revision!r} not found in {source.repo}") from None
    except RemoteEntryNotFoundError:
        raise _EntryMissing(
            f"{source.filename} not found in {source.repo}@{source.revision}: the manifest may be "
            f"out of date; see https://huggingface.co/{source.repo}/tree/main and use "
            "hf:REPO/FILE.gguf"
        ) from None
    except OfflineModeIsEnabled:
        raise DownloadError(f"cannot pull {pull_id}: offline mode (HF_HUB_OFFLINE) is on") from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise DownloadError(f"{where} answered HTTP {status} for {source.hf_ref}") from None
    except (httpx2.TransportError, OSError) as exc:
        raise DownloadError(
            f"cannot reach {where} ({type(exc).__name__}); {pull_id} needs a network "
            "connection once, then works offline"
        ) from None
    if not meta.etag or not meta.commit_hash:
        raise DownloadError(f"{where} did not send an ETag and commit for {source.hf_ref}")
    return _Meta(meta.location or url, meta.etag, meta.commit_hash, meta.size)


def _check_disk(dest: Path, need: int, pull_id: str) -> None:
    free = free_disk_bytes(dest.parent)
    if free < need + DISK_MARGIN:
        raise DiskSpaceError(
            f"not enough disk space to pull {pull_id}: needs {store.fmt_size(need)} but "
            f"{dest.parent} has {store.fmt_size(free)} free (free some space or set "
            "EDGE_GUARD_MODELS_DIR to another disk)"
        )


def _transfer(
    meta: _Meta, partial: Path, have: int, label: str, pull_id: str, progress: bool
) -> tuple[str, int]:
    """Append the rest of the file to `partial` (Range requests); return (sha256, size)."""
    import httpx2
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status
    from huggingface_hub.utils import tqdm as hf_tqdm

    headers = build_hf_headers()
    endpoint = _endpoint() or constants.ENDPOINT
    if meta.url.split("/")[2:3] != endpoint.split("/")[2:3]:
        headers.pop("authorization", None)  # never send the token to a CDN
    digest = hashlib.sha256()
    if have:
        with open(partial, "rb") as fh:
            while chunk := fh.read(store.HASH_CHUNK):
                digest.update(chunk)
    failures, size = 0, meta.size
    bar = hf_tqdm(
        total=size, initial=have, unit="B", unit_scale=True, desc=label, disable=not progress
    )
    with open(partial, "ab") as fh, bar:
        while True:
            hdrs = dict(headers, **({"Range": f"bytes={have}-"} if have else {}))
            before = have
            try:
                with get_session().stream(
                    "GET",
                    meta.url,
                    headers=hdrs,
                    timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT,
                    follow_redirects=True,
                ) as resp:
                    if resp.status_code == 416 and size is not None and have == size:
                        break
                    hf_raise_for_status(resp)
                    if have and resp.status_code == 206:
                        got = resp.headers.get("Content-Range", "")
                        if not got.startswith(f"bytes {have}-"):
                            raise DownloadError(
                                f"download of {pull_id}: asked for byte {have} onwards, the "
                                f"server sent {got or 'no Content-Range'}; pull again"
                            )
                    elif have:  # the server ignored the Range: start over
                        fh.seek(0)
                        fh.truncate()
                        digest, have = hashlib.sha256(), 0
                        bar.reset(total=size)
                    for chunk in resp.iter_bytes():  # as received: a drop loses nothing
                        fh.write(chunk)
                        digest.update(chunk)
                        have += len(chunk)
                        bar.update(len(chunk))
                if size is None or have >= size:
                    break
                raise httpx2.RemoteProtocolError("the server closed the transfer early")
            except (httpx2.TransportError, httpx2.StreamError) as exc:
                fh.flush()
                failures = 1 if have > before else failures + 1
                if failures > RETRIES:
                    raise DownloadInterrupted(
                        f"download of {pull_id} stopped at {store.fmt_size(have)} of "
                        f"{store.fmt_size(size)} ({type(exc).__name__}); run "
                        f"`edge-guard models pull {pull_id}` again to resume"
                    ) from None
                time.sleep(min(RETRY_WAIT * 2 ** (failures - 1), 8.0))
            except HfHubHTTPError as exc:
                status = exc.response.status_code if exc.response is not None else "?"
                raise DownloadError(
                    f"download of {pull_id} failed: HTTP {status} at byte {have}; run "
                    "the pull again to resume"
                ) from None
    if size is not None and have != size:
        partial.unlink(missing_ok=True)
        raise DownloadError(
            f"download of {pull_id} got {have} bytes but the hub announced {size}; the "
            "partial file was deleted, pull again"
        )
    return digest.hexdigest(), have


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
        meta = _head(source, pid)
    except _EntryMissing as exc:
        if target.manifest is None:
            raise
        remote = pick_quant_file(target.manifest, str(exc), _endpoint())
        say(
            f"{source.filename} is not in {source.repo}@{source.revision}; taking {remote}, the "
            f"only .gguf file there named for quant {target.manifest.quant!r}"
        )
        meta = _head(replace(source, filename=remote), pid)
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
    meta: _Meta,
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
        sha, size = _transfer(meta, partial, have, label, pid, progress)
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


def _etag_sha(meta: _Meta) -> str | None:
    """An LFS file's ETag is its sha256; other ETags (git blob ids) say nothing about it."""
    etag = meta.etag.lower()
    return etag if SHA256_RE.match(etag) else None
