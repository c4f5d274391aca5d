"""Real downloads against a loopback server standing in for the Hugging Face hub."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from fake_hub import FILE, PINNED, REPO, UNPINNED, FakeHub, setup_manifests, write_manifest

from edge_guard.cli import main
from edge_guard.errors import ModelNotFound
from edge_guard.registry import download, ensure_model, hub_fetch, resolve
from edge_guard.registry.download import pull
from edge_guard.registry.errors import (
    DiskSpaceError,
    DownloadError,
    DownloadInterrupted,
    HashMismatch,
    RegistryError,
)
from edge_guard.registry.info import verify_model
from edge_guard.registry.store import download_path, load_registry


@pytest.fixture
def data(tiny_model: Path) -> bytes:
    return tiny_model.read_bytes()


@pytest.fixture
def other(synth_model) -> bytes:  # type: ignore[no-untyped-def]
    """A different valid GGUF (another seed): what a changed upstream file looks like."""
    return synth_model("tiny", seed=7).read_bytes()


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: bytes) -> Iterator[FakeHub]:
    """The fake hub serving the tiny model, with the environment pointed at it."""
    import huggingface_hub.constants as hf_constants

    setup_manifests(tmp_path / "manifests", monkeypatch, data)
    with FakeHub() as h:
        h.add(REPO, FILE, data)
        h.add(REPO, "tiny-pinned.gguf", data)
        monkeypatch.setenv("HF_ENDPOINT", h.url)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
        # huggingface_hub reads these once, at import time
        monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_TELEMETRY", True)
        monkeypatch.setattr(hub_fetch, "RETRY_WAIT", 0.0)
        yield h


def cli(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, list(args))


def resolve_gets(hub: FakeHub) -> list[dict]:
    return [r for r in hub.gets() if "/resolve/" in r["path"] or r["path"].startswith("/cdn/")]


def test_clean_pull_then_verify_path_list_and_offline_resolve(
    hub: FakeHub, data: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    res = cli("models", "pull", UNPINNED)
    assert res.exit_code == 0, res.output
    assert "trust on first use" in res.output and hashlib.sha256(data).hexdigest() in res.output
    dest = download_path(load_manifest_source())
    assert dest.read_bytes() == data
    assert not dest.with_name(dest.name + ".partial").exists()
    assert cli("models", "path", UNPINNED).output.strip() == str(dest)
    res = cli("models", "verify", UNPINNED)
    assert res.exit_code == 0 and "matches the sha256 recorded on first use" in res.output
    rows = {r["id"]: r for r in json.loads(cli("models", "list", "--json").output)}
    row = rows[UNPINNED]
    assert row["installed"] and row["trust"] == "tofu" and row["location"] == "edge-guard"
    assert row["size"] == len(data) and row["path"] == str(dest)
    pulled = load_registry()["pulled"][f"{REPO}/{FILE}@main"]
    assert pulled["commit"] and pulled["sha256"] == hashlib.sha256(data).hexdigest()
    # offline afterwards: no request reaches the hub
    n = len(hub.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve(UNPINNED).path == dest
    assert ensure_model(UNPINNED, yes=False, interactive=False).path == dest
    assert pull(UNPINNED).downloaded is False  # already there: no network
    assert len(hub.requests) == n


def load_manifest_source():  # type: ignore[no-untyped-def]
    from edge_guard.registry.manifests import load_manifests

    return load_manifests()[UNPINNED].source


def test_dropped_connection_resumes_with_range(hub: FakeHub, data: bytes) -> None:
    hub.files[(REPO, FILE)].drop_after, hub.files[(REPO, FILE)].drops = 100_000, 1
    result = pull(UNPINNED)
    gets = resolve_gets(hub)
    assert len(gets) == 2
    assert "Range" not in gets[0]["headers"]
    assert gets[1]["headers"]["Range"] == "bytes=100000-"
    assert result.path.read_bytes() == data


def test_repeated_drops_keep_resuming_while_progressing(hub: FakeHub, data: bytes) -> None:
    f = hub.files[(REPO, FILE)]
    f.drop_after, f.drops = 50_000, hub_fetch.RETRIES + 3  # more drops than retries
    result = pull(UNPINNED)
    ranges = [g["headers"].get("Range") for g in resolve_gets(hub)]
    assert ranges[:3] == [None, "bytes=50000-", "bytes=100000-"]
    assert len(ranges) == 7 and result.path.read_bytes() == data


def download_retries_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub_fetch, "RETRIES", 0)


def test_pull_stopped_then_resumed_by_next_pull(
    hub: FakeHub, data: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = hub.files[(REPO, FILE)]
    f.drop_after, f.drops = 120_000, 1
    download_retries_zero(monkeypatch)  # give up at the first drop, keeping the partial
    with pytest.raises(DownloadInterrupted) as exc:
        pull(UNPINNED)
    msg = str(exc.value)
    assert "\n" not in msg and f"edge-guard models pull {UNPINNED}` again to resume" in msg
    dest = download_path(load_manifest_source())
    partial = dest.with_name(dest.name + ".partial")
    assert partial.stat().st_size == 120_000 and not dest.exists()
    with pytest.raises(ModelNotFound):
        resolve(UNPINNED)
    rows = {r["id"]: r for r in json.loads(cli("models", "list", "--json").output)}
    assert rows[UNPINNED]["partial"] and not rows[UNPINNED]["installed"]
    lines: list[str] = []
    result = pull(UNPINNED, echo=lines.append)
    assert result.resumed_from == 120_000 and any("resuming" in s for s in lines)
    assert resolve_gets(hub)[-1]["headers"]["Range"] == "bytes=120000-"
    assert result.path.read_bytes() == data and not partial.exists()
    assert result.sha256 == hashlib.sha256(data).hexdigest()


def test_partial_of_a_changed_file_is_discarded(
    hub: FakeHub, other: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = hub.files[(REPO, FILE)]
    f.drop_after, f.drops = 120_000, 1
    download_retries_zero(monkeypatch)
    with pytest.raises(DownloadInterrupted):
        pull(UNPINNED)
    hub.add(REPO, FILE, other)  # upstream changed meanwhile (new ETag)
    result = pull(UNPINNED)
    assert "Range" not in resolve_gets(hub)[-1]["headers"]
    assert result.path.read_bytes() == other


def test_pinned_hash_mismatch_rejected_before_download(hub: FakeHub, other: bytes) -> None:
    hub.add(REPO, "tiny-pinned.gguf", other)  # honest ETag: the hub says it is another file
    with pytest.raises(HashMismatch, match="refusing to download") as exc:
        pull(PINNED)
    assert "\n" not in str(exc.value)
    assert not any("tiny-pinned" in r["path"] for r in resolve_gets(hub))


def test_pinned_hash_mismatch_rejected_after_download(hub: FakeHub, other: bytes) -> None:
    # a server whose ETag is no sha256 (a git blob id): only the bytes can tell
    hub.add(REPO, "tiny-pinned.gguf", other, etag="a" * 40)
    res = cli("models", "pull", PINNED)
    assert res.exit_code == 1
    assert "manifest's pinned sha256" in res.output and "not installed" in res.output
    dest = download_path(load_pinned_source())
    assert not dest.exists() and not dest.with_name(dest.name + ".partial").exists()
    with pytest.raises(ModelNotFound):
        resolve(PINNED)


def test_lying_etag_is_a_corrupt_transfer(hub: FakeHub, data: bytes, other: bytes) -> None:
    hub.add(REPO, FILE, other, etag=hashlib.sha256(data).hexdigest())
    with pytest.raises(HashMismatch, match="corrupt transfer"):
        pull(UNPINNED)
    assert not download_path(load_manifest_source()).exists()


def load_pinned_source():  # type: ignore[no-untyped-def]
    from edge_guard.registry.manifests import load_manifests

    return load_manifests()[PINNED].source


def test_pinned_pull_ok(hub: FakeHub, data: bytes) -> None:
    lines: list[str] = []
    result = pull(PINNED, echo=lines.append)
    assert result.trust == "pinned" and result.path.read_bytes() == data
    assert not any("trust on first use" in s for s in lines)
    assert f"{REPO}/tiny-pinned.gguf@main" not in load_registry()["tofu"]
    assert verify_model(PINNED)["trust"] == "pinned"


def test_tofu_later_different_file_rejected(hub: FakeHub, data: bytes, other: bytes) -> None:
    first = pull(UNPINNED)
    assert first.trust == "tofu-recorded"
    hub.add(REPO, FILE, other)
    res = cli("models", "pull", UNPINNED, "--force")
    assert res.exit_code == 1 and "--retrust" in res.output and "refusing" in res.output
    hub.add(REPO, FILE, other, etag="b" * 40)  # no sha in the ETag: caught after download
    with pytest.raises(HashMismatch, match="recorded"):
        pull(UNPINNED, force=True)
    assert first.path.read_bytes() == data  # the good copy is untouched
    assert verify_model(UNPINNED)["trust"] == "tofu"
    # removing the file keeps the record: a re-pull of the changed file is still refused
    assert cli("models", "rm", UNPINNED, "--yes").exit_code == 0
    assert not first.path.exists()
    with pytest.raises(HashMismatch):
        pull(UNPINNED)
    again = pull(UNPINNED, retrust=True)  # accepted on purpose
    assert again.trust == "tofu-recorded" and again.path.read_bytes() == other
    with pytest.raises(RegistryError, match="pins its sha256"):
        pull(PINNED, retrust=True)


def test_full_disk_is_refused_before_downloading(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(download, "free_disk_bytes", lambda _p: 10_000)
    res = cli("models", "pull", UNPINNED)
    assert res.exit_code == 1 and "not enough disk space" in res.output
    assert res.output.strip().count("\n") == 0
    assert resolve_gets(hub) == []
    with pytest.raises(DiskSpaceError):
        pull(UNPINNED)


def test_hub_errors_are_one_line(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DownloadError, match="not found in") as exc:
        pull("hf:test-org/tiny-GGUF/missing.gguf")
    assert "\n" not in str(exc.value)
    with pytest.raises(DownloadError, match="repository other/repo not found"):
        pull("hf:other/repo/x.gguf")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(DownloadError, match="cannot reach") as exc:
        pull(UNPINNED)
    assert "\n" not in str(exc.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError, match="offline"):
        pull(UNPINNED)
    with pytest.raises(RegistryError, match="only model ids and hf: references"):
        pull("synth:tiny")


def test_non_gguf_download_is_rejected(hub: FakeHub) -> None:
    hub.add(REPO, "junk.gguf", b"<html>not a model</html>" * 10)
    with pytest.raises(RegistryError, match="not a usable gpt-oss GGUF"):
        pull(f"hf:{REPO}/junk.gguf")
    with pytest.raises(ModelNotFound):
        resolve(f"hf:{REPO}/junk.gguf")


def test_hf_ref_pull_via_cdn_redirect(hub: FakeHub, data: bytes) -> None:
    hub.cdn = True
    hub.add("other-org/x-GGUF", "sub/x.gguf", data)
    ref = "hf:other-org/x-GGUF/sub/x.gguf"
    result = pull(ref)
    assert result.path.read_bytes() == data
    assert resolve_gets(hub)[-1]["path"].startswith("/cdn/")
    assert resolve(ref).path == result.path
    rows = {r["id"]: r for r in json.loads(cli("models", "list", "--json").output)}
    assert rows[ref]["kind"] == "hf" and rows[ref]["installed"]


def test_ensure_model_pulls_when_allowed(hub: FakeHub, data: bytes) -> None:
    asked: list[str] = []
    r = ensure_model(
        UNPINNED,
        yes=False,
        interactive=True,
        confirm=lambda q: asked.append(q) is None,
        echo=lambda s: None,
    )
    assert asked == [f"pull {UNPINNED} (336.6 kB)?"] and r.path.read_bytes() == data
    r2 = ensure_model(
        f"hf:{REPO}/tiny-pinned.gguf", yes=True, interactive=False, echo=lambda s: None
    )
    assert r2.path.read_bytes() == data


def test_concurrent_pull_refused_and_rm_cleans_a_partial(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    from filelock import FileLock

    dest = download_path(load_manifest_source())
    dest.parent.mkdir(parents=True)
    with (
        FileLock(str(download.lock_path(dest))),
        pytest.raises(RegistryError, match="another pull"),
    ):
        pull(UNPINNED)
    f = hub.files[(REPO, FILE)]
    f.drop_after, f.drops = 60_000, 1
    monkeypatch.setattr(hub_fetch, "RETRIES", 0)
    with pytest.raises(DownloadInterrupted):
        pull(UNPINNED)
    res = cli("models", "rm", UNPINNED, "--yes")
    assert res.exit_code == 0 and "removed" in res.output
    assert not dest.with_name(dest.name + ".partial").exists()
    assert not download.lock_path(dest).exists()


# -- a manifest naming a file the hub does not have ----------------------------------------
GUARD_REPO = "test-org/guard-GGUF"
HINT = f"pull one with `edge-guard models pull hf:{GUARD_REPO}/FILE.gguf`"


def _guard_manifest(tmp_path: Path, tag: str, filename: str) -> str:
    write_manifest(
        tmp_path / "manifests",
        f"guard-{tag}",
        id=f"tiny-guard:{tag}",
        family="safeguard",
        quant=tag,
        repo=GUARD_REPO,
        filename=filename,
    )
    return f"tiny-guard:{tag}"


def test_missing_manifest_file_falls_back_to_the_quant_file(
    hub: FakeHub, data: bytes, other: bytes, tmp_path: Path
) -> None:
    mid = _guard_manifest(tmp_path, "mxfp4", "tiny-guard-MXFP4.gguf")  # a guessed name
    hub.add(GUARD_REPO, "Tiny-Guard-mxfp4.gguf", data)
    hub.add(GUARD_REPO, "tiny-guard-Q8_0.gguf", other)
    hub.add(GUARD_REPO, "README.md", b"# guard")
    res = cli("models", "pull", mid)
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[0] == (
        f"tiny-guard-MXFP4.gguf is not in {GUARD_REPO}@main; taking Tiny-Guard-mxfp4.gguf, "
        "the only .gguf file there named for quant 'mxfp4'"
    )
    assert any(r["path"].startswith(f"/api/models/{GUARD_REPO}/tree/main") for r in hub.gets())
    from edge_guard.registry.manifests import load_manifests

    source = load_manifests()[mid].source
    path = resolve(mid).path
    assert path == download_path(source) and path.read_bytes() == data
    record = load_registry()["pulled"][f"{GUARD_REPO}/tiny-guard-MXFP4.gguf@main"]
    assert record["file"] == "Tiny-Guard-mxfp4.gguf"
    assert record["sha256"] == hashlib.sha256(data).hexdigest()
    again = pull(mid, force=True, echo=lambda s: None)  # the same file, trusted on first use
    assert (again.trust, again.remote_file) == ("tofu-matched", "Tiny-Guard-mxfp4.gguf")


def test_ambiguous_or_absent_quant_file_is_refused(
    hub: FakeHub, data: bytes, tmp_path: Path
) -> None:
    for name in ("guard-a-Q8_0.gguf", "guard-b.q8_0.gguf", "guard-Q4_K_M-00001-of-00002.gguf"):
        hub.add(GUARD_REPO, name, data)
    q8 = _guard_manifest(tmp_path, "q8_0", "guard-Q8_0.gguf")
    with pytest.raises(DownloadError) as exc:
        pull(q8)
    assert str(exc.value) == (
        f"guard-Q8_0.gguf is not in {GUARD_REPO}@main and 2 .gguf files there are named for "
        f"quant 'q8_0': guard-a-Q8_0.gguf, guard-b.q8_0.gguf; {HINT}"
    )
    q4 = _guard_manifest(tmp_path, "q4_k_m", "guard-Q4_K_M.gguf")  # only a split shard
    res = cli("models", "pull", q4)
    assert res.exit_code == 1 and res.output.strip().count("\n") == 0
    assert res.output.strip().endswith(
        f"guard-Q4_K_M.gguf is not in {GUARD_REPO}@main and no .gguf file there is named for "
        "quant 'q4_k_m' (it has: guard-Q4_K_M-00001-of-00002.gguf, guard-a-Q8_0.gguf, "
        f"guard-b.q8_0.gguf); {HINT}"
    )
    assert resolve_gets(hub) == []  # nothing was downloaded
    with pytest.raises(DownloadError, match="not found in"):  # an hf: reference names its file
        pull(f"hf:{GUARD_REPO}/guard-Q8_0.gguf")


def test_shipped_manifests_pull_when_hub_names_differ(
    hub: FakeHub, data: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge_guard.paths import repo_root

    monkeypatch.setenv("EDGE_GUARD_MANIFESTS", str(repo_root() / "models"))
    repo = "unsloth/gpt-oss-safeguard-20b-GGUF"
    for name in (
        "gpt-oss-safeguard-20b-mxfp4.gguf",
        "GPT-OSS-Safeguard-20B.Q8_0.gguf",
        "gpt-oss-safeguard-20b-F16.gguf",
        "gpt-oss-safeguard-20b-BF16.gguf",
    ):
        hub.add(repo, name, data)
    quiet = {"echo": lambda s: None}
    assert (
        pull("gpt-oss-safeguard-20b:mxfp4", **quiet).remote_file
        == "gpt-oss-safeguard-20b-mxfp4.gguf"
    )
    assert (
        pull("gpt-oss-safeguard-20b:q8_0", **quiet).remote_file == "GPT-OSS-Safeguard-20B.Q8_0.gguf"
    )
    listings = [r for r in hub.gets() if r["path"].startswith("/api/models/")]
    assert len(listings) == 2
    f16 = pull("gpt-oss-safeguard-20b:f16", **quiet)  # its name exists: no listing, no substitute
    assert f16.remote_file is None and f16.path.read_bytes() == data
    assert [r for r in hub.gets() if r["path"].startswith("/api/models/")] == listings
    assert resolve("gpt-oss-safeguard-20b").path.read_bytes() == data  # the default tag: mxfp4
