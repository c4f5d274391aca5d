"""The bytes of a hub file for `registry.download`: its metadata (one HEAD request through
huggingface_hub: commit, ETag, size, CDN location; `HF_ENDPOINT` and tokens honoured) and a
resumable transfer into a `.partial` file (Range requests, retries without progress
bounded, the token never sent to a CDN), each failure one line. Nothing here decides
trust or installs a file.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from edge_guard.registry import store
from edge_guard.registry.errors import DownloadError, DownloadInterrupted
from edge_guard.registry.manifests import Source

RETRIES = 5  # attempts without progress before giving up (the partial file is kept)
RETRY_WAIT = 1.0  # seconds before the first retry; doubles, capped at 8

__all__ = ["RETRIES", "RETRY_WAIT", "EntryMissing", "FileMeta", "head", "hub_endpoint", "transfer"]


class EntryMissing(DownloadError):
    """The repository exists but has no file of that name."""


@dataclass(frozen=True)
class FileMeta:
    """What the hub says about one file before any byte is fetched."""

    url: str
    etag: str
    commit: str
    size: int | None


def hub_endpoint() -> str | None:
    """`HF_ENDPOINT` without a trailing slash (None: the hub's default)."""
    ep = os.environ.get("HF_ENDPOINT")
    return ep.rstrip("/") if ep else None


def head(source: Source, pull_id: str) -> FileMeta:
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

    endpoint = hub_endpoint()
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
        raise EntryMissing(
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
    return FileMeta(meta.location or url, meta.etag, meta.commit_hash, meta.size)


def transfer(
    meta: FileMeta, partial: Path, have: int, label: str, pull_id: str, progress: bool
) -> tuple[str, int]:
    """Append the rest of the file to `partial` (Range requests); return (sha256, size)."""
    import httpx2
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status
    from huggingface_hub.utils import tqdm as hf_tqdm

    headers = build_hf_headers()
    endpoint = hub_endpoint() or constants.ENDPOINT
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
