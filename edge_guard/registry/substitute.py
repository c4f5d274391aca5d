"""Picks the hub file to pull when a manifest's file name is not in its repository.

Manifest file names could not all be confirmed (the MXFP4 name is a guess). On a 404, the
repository's files are listed and the one .gguf whose name carries the manifest's quant is
taken; several candidates are refused, with their names, and so is none.
"""

from __future__ import annotations

import re

from edge_guard.registry.errors import DownloadError
from edge_guard.registry.manifests import Manifest

_SHARD_RE = re.compile(r"-\d{5}-of-\d{5}\.gguf$", re.IGNORECASE)


def quant_files(filenames: list[str], quant: str) -> list[str]:
    """The .gguf files in `filenames` whose base name carries `quant` (case-insensitive).

    The quant must stand as its own token: `Q8_0` matches `model-Q8_0.gguf` and `model.q8_0.gguf`
    but `F16` does not match `model-BF16.gguf`. Split shards (`-00001-of-00003.gguf`) are left
    out: one shard is no model.
    """
    token = re.compile(rf"(?<![a-z0-9]){re.escape(quant.lower())}(?![a-z0-9])")
    out = []
    for name in filenames:
        base = name.rsplit("/", 1)[-1].lower()
        if base.endswith(".gguf") and not _SHARD_RE.search(base) and token.search(base[:-5]):
            out.append(name)
    return sorted(out)


def pick_quant_file(manifest: Manifest, missing: str, endpoint: str | None) -> str:
    """The one .gguf file of the manifest's repository named for its quant, else DownloadError.

    `missing` is the not-found message (kept when the listing itself fails).
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    source = manifest.source
    try:
        names = HfApi(endpoint=endpoint).list_repo_files(source.repo, revision=source.revision)
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise DownloadError(
            f"{missing} (listing the repository's files failed: {type(exc).__name__})"
        ) from None
    found = quant_files(names, manifest.quant)
    if len(found) == 1:
        return found[0]
    where = f"{source.filename} is not in {source.repo}@{source.revision}"
    hint = f"pull one with `edge-guard models pull hf:{source.repo}/FILE.gguf`"
    if found:
        raise DownloadError(
            f"{where} and {len(found)} .gguf files there are named for quant "
            f"{manifest.quant!r}: {', '.join(found)}; {hint}"
        )
    ggufs = sorted(n for n in names if n.lower().endswith(".gguf"))
    shown = ", ".join(ggufs[:12]) + (f" and {len(ggufs) - 12} more" if len(ggufs) > 12 else "")
    raise DownloadError(
        f"{where} and no .gguf file there is named for quant {manifest.quant!r} "
        f"(it has: {shown or 'no .gguf file'}); {hint}"
    )
