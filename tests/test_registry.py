"""Registry without network: manifests, references, resolve/ensure_model, info, verify, fit,
add/rm/path."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from fake_hub import FILE, PINNED, REPO, UNPINNED, setup_manifests, write_manifest

from edge_guard.cli import main
from edge_guard.errors import BadModelFile, ModelNotFound
from edge_guard.paths import repo_root
from edge_guard.registry import (
    DEFAULT_MODEL,
    default_model_ref,
    ensure_model,
    lookup,
    resolve,
)
from edge_guard.registry import fit as fitmod
from edge_guard.registry.errors import DoesNotFit, ManifestError
from edge_guard.registry.fit import check_fit, fit_report
from edge_guard.registry.info import model_info, verify_model
from edge_guard.registry.manifests import find_manifest, load_manifests, parse_hf_ref
from edge_guard.registry.store import record_tofu


@pytest.fixture
def tiny_bytes(tiny_model: Path) -> bytes:
    return tiny_model.read_bytes()


@pytest.fixture
def manifests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_bytes: bytes) -> Path:
    return setup_manifests(tmp_path / "manifests", monkeypatch, tiny_bytes)


def cli(*args: str, input: str | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, list(args), input=input)


def one_line(msg: str) -> str:
    assert "\n" not in msg.strip(), msg
    return msg


# -- shipped manifests ---------------------------------------------------------------------


def test_shipped_manifests_load_and_default_is_safeguard_mxfp4() -> None:
    ms = load_manifests([repo_root() / "models"])
    expected = {
        f"{n}:{q}"
        for n in ("gpt-oss-safeguard-20b", "gpt-oss-20b")
        for q in ("mxfp4", "q8_0", "q4_k_m", "f16")
    }
    assert set(ms) == expected
    assert DEFAULT_MODEL == "gpt-oss-safeguard-20b:mxfp4" == default_model_ref()
    assert find_manifest("gpt-oss-safeguard-20b", ms).id == DEFAULT_MODEL  # type: ignore[union-attr]
    assert find_manifest("gpt-oss-20b", ms).id == "gpt-oss-20b:mxfp4"  # type: ignore[union-attr]
    for m in ms.values():
        assert m.license == "apache-2.0"
        assert m.family == ("safeguard" if "safeguard" in m.id else "base")
        # nothing could be confirmed offline: unpinned, trust on first use
        assert not m.verified and m.source.sha256 is None and m.source.revision == "main"
        assert m.source.filename.endswith(".gguf") and 10e9 < (m.source.size or 0) < 14e9
    assert ms["gpt-oss-20b:mxfp4"].source.repo == "ggml-org/gpt-oss-20b-GGUF"
    assert ms["gpt-oss-20b:f16"].source.size == 13_800_000_000


def test_default_model_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_GUARD_MODEL", "synth:tiny")
    assert default_model_ref() == "synth:tiny"
    assert resolve().id == "synth:tiny"


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"id": "NoTag"}, "name:tag"),
        ({"verified": True}, "needs a sha256"),
        ({"colour": "red"}, "unknown manifest key"),
        ({"repo": "no-slash"}, "owner/name"),
        ({"sha256": "abc"}, "64 hex"),
    ],
)
def test_bad_manifests_are_one_line_errors(tmp_path: Path, fields: dict, needle: str) -> None:
    base = {"id": "x:y", "family": "base", "quant": "f16", "repo": "a/b", "filename": "f.gguf"}
    write_manifest(tmp_path, "bad", **{**base, **fields})
    with pytest.raises(ManifestError, match=needle) as exc:
        load_manifests([tmp_path])
    one_line(str(exc.value))


# -- references ----------------------------------------------------------------------------


def test_missing_manifest_model_names_the_pull_command(manifests: Path) -> None:
    with pytest.raises(ModelNotFound) as exc:
        resolve(UNPINNED)
    assert f"`edge-guard models pull {UNPINNED}`" in one_line(str(exc.value))
    result = cli("models", "path", UNPINNED)
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0
    assert f"edge-guard models pull {UNPINNED}" in result.output


def test_bare_name_resolves_to_default_tag(manifests: Path) -> None:
    assert lookup("tiny-guard").id == UNPINNED


def test_hf_refs(manifests: Path) -> None:
    s = parse_hf_ref("hf:owner/repo/sub/model.gguf@v1.0")
    assert (s.repo, s.filename, s.revision) == ("owner/repo", "sub/model.gguf", "v1.0")
    assert s.hf_ref == "hf:owner/repo/sub/model.gguf@v1.0"
    assert parse_hf_ref("hf:owner/repo/m.gguf").revision == "main"
    # an hf: ref naming a manifest's file carries the manifest's pin
    assert parse_hf_ref(f"hf:{REPO}/tiny-pinned.gguf").sha256 is not None
    for bad in ("hf:owner/m.gguf", "hf:owner/repo/m.bin", "hf:o/r/../x.gguf"):
        with pytest.raises(ModelNotFound, match="bad model reference"):
            parse_hf_ref(bad)
    with pytest.raises(ModelNotFound) as exc:
        resolve("hf:owner/repo/m.gguf@abc")
    assert "`edge-guard models pull hf:owner/repo/m.gguf@abc`" in one_line(str(exc.value))


def test_paths_synth_and_unknown(tiny_model: Path, manifests: Path) -> None:
    r = resolve(str(tiny_model))
    assert r.path == tiny_model and r.id == str(tiny_model.resolve())
    assert resolve("synth:tiny").path.exists()
    with pytest.raises(ModelNotFound, match="no such model file"):
        resolve("/nowhere/x.gguf")
    with pytest.raises(ModelNotFound, match="unknown model 'nope'") as exc:
        resolve("nope")
    one_line(str(exc.value))


def test_hf_cache_copy_is_used_offline(
    manifests: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_bytes: bytes
) -> None:
    cache = tmp_path / "hfcache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    folder = cache / ("models--" + REPO.replace("/", "--"))
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("c" * 40)
    snap = folder / "snapshots" / ("c" * 40)
    snap.mkdir(parents=True)
    (snap / FILE).write_bytes(tiny_bytes)
    r = resolve(UNPINNED)
    assert r.path == snap / FILE and r.id == UNPINNED
    assert ensure_model(UNPINNED, yes=False, interactive=False).path == snap / FILE


def test_ensure_model_offline_and_non_interactive(
    manifests: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []
    with pytest.raises(ModelNotFound, match="offline") as exc:  # conftest sets HF_HUB_OFFLINE
        ensure_model(UNPINNED, yes=True, interactive=True, confirm=asked.append)
    assert "edge-guard models pull" in one_line(str(exc.value)) and not asked
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(ModelNotFound, match="edge-guard models pull"):
        ensure_model(UNPINNED, yes=False, interactive=False)
    with pytest.raises(ModelNotFound):
        ensure_model(
            UNPINNED, yes=False, interactive=True, confirm=lambda q: asked.append(q) or False
        )  # type: ignore[func-returns-value]
    assert asked == [f"pull {UNPINNED} (336.6 kB)?"]
    with pytest.raises(ModelNotFound, match="no such model file"):  # not pullable: no question
        ensure_model("/nowhere/x.gguf", yes=True, interactive=True)


# -- info / verify -------------------------------------------------------------------------


def test_info_on_synthetic(tiny_model: Path) -> None:
    info = model_info(tiny_model)
    assert info["architecture"] == "gpt-oss" and info["check"] == "ok"
    assert info["block_count"] == 2 and info["head_count_kv"] == 2 and info["head_dim"] == 16
    assert info["sliding_window"] == 8 and info["context_length"] == 4096
    assert (info["expert_count"], info["expert_used_count"]) == (4, 2)
    assert info["vocab_size"] == 280 and info["chat_template"] is False
    assert {"attention", "experts", "embeddings", "norms"} <= set(info["tensor_types"])
    assert info["tensor_types"]["experts"]["F16"]["tensors"] == 6
    assert info["parameters"] == sum(
        v["params"] for g in info["tensor_types"].values() for v in g.values()
    )
    out = cli("models", "info", str(tiny_model), "--json")
    assert out.exit_code == 0 and json.loads(out.output)["file_size"] == tiny_model.stat().st_size
    text = cli("models", "info", str(tiny_model)).output
    assert "experts" in text and "chat template absent" in text


@pytest.fixture
def broken_files(tmp_path: Path, tiny_bytes: bytes) -> dict[str, Path]:
    files = {
        "truncated_data": tiny_bytes[: len(tiny_bytes) - 1000],
        "truncated_header": tiny_bytes[:2000],
        "not_gguf": b"PK\x03\x04" + b"\0" * 100,
    }
    out = {}
    for name, data in files.items():
        out[name] = tmp_path / f"{name}.gguf"
        out[name].write_bytes(data)
    return out


def test_info_and_verify_on_broken_files(broken_files: dict[str, Path]) -> None:
    assert "truncated" in model_info(broken_files["truncated_data"])["check"]
    for name, path in broken_files.items():
        with pytest.raises(BadModelFile) as exc:
            verify_model(path)
        one_line(str(exc.value))
        res = cli("models", "verify", str(path))
        assert res.exit_code == 1 and res.output.startswith("error: ")
        assert res.output.strip().count("\n") == 0
        if name != "truncated_data":
            res = cli("models", "info", str(path))
            assert res.exit_code == 1 and res.output.strip().count("\n") == 0
    assert "not a GGUF" in cli("models", "verify", str(broken_files["not_gguf"])).output
    assert "truncated" in cli("models", "verify", str(broken_files["truncated_data"])).output


def test_verify_against_tofu_record(
    manifests: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_bytes: bytes
) -> None:
    monkeypatch.setenv("EDGE_GUARD_MODELS_DIR", str(tmp_path / "mdir"))
    dest = tmp_path / "mdir" / REPO.replace("/", "--") / "main" / FILE
    dest.parent.mkdir(parents=True)
    dest.write_bytes(tiny_bytes)
    first = verify_model(UNPINNED)  # no record yet: recorded now
    assert first["trust"] == "tofu-recorded"
    assert verify_model(UNPINNED)["trust"] == "tofu"
    data = bytearray(tiny_bytes)
    data[-1] ^= 0xFF  # a flipped bit in tensor data: still a valid GGUF
    dest.write_bytes(bytes(data))
    res = cli("models", "verify", UNPINNED)
    assert res.exit_code == 1 and "does not match the hash recorded on first use" in res.output


# -- fit -----------------------------------------------------------------------------------


def test_fit_report_fields(tiny_model: Path) -> None:
    rep = fit_report(tiny_model, 1024, ram_bytes=16 * 2**30, vram_bytes=0)
    # layers x kv heads x head dim x 2 (K, V) x 2 bytes
    assert rep["kv_bytes_per_token"] == 2 * 2 * 16 * 2 * 2
    assert rep["kv_bytes"] == rep["kv_bytes_per_token"] * 1024
    assert rep["swa_layers"] == 1 and rep["sliding_window"] == 8
    assert rep["fits"] and rep["n_gpu_layers"] == 0 and rep["offload"] == "none"
    assert rep["max_ctx"] == 4096 and rep["n_ctx"] == 1024
    for key in ("ram_needed", "vram_needed", "ram_available", "weights_bytes", "gpus", "reason"):
        assert key in rep
    gpu = fit_report(tiny_model, 1024, ram_bytes=16 * 2**30, vram_bytes=8 * 2**30)
    assert gpu["n_gpu_layers"] == 3 and gpu["offload"] == "all" and gpu["vram_needed"] > 0
    assert gpu["ram_needed"] < rep["ram_needed"]
    small = fit_report(tiny_model, 1024, ram_bytes=1000, vram_bytes=0)
    assert not small["fits"] and small["max_ctx"] == 0 and "does not fit" in small["reason"]
    with pytest.raises(DoesNotFit):
        check_fit(tiny_model, 1024, ram_bytes=1000, vram_bytes=0)
    out = cli("models", "fit", str(tiny_model), "--ctx", "2048", "--json")
    assert out.exit_code == 0 and json.loads(out.output)["n_ctx"] == 2048


def test_fit_20b_shape_header(tmp_path: Path) -> None:
    """gpt-oss-20b's hyperparameters (header only): 48 KiB of KV per token, max ctx limited."""
    import gguf
    import numpy as np

    path = tmp_path / "shape.gguf"
    w = gguf.GGUFWriter(str(path), "gpt-oss")
    for k, v in {
        "context_length": 131072,
        "embedding_length": 2880,
        "block_count": 24,
        "attention.head_count": 64,
        "attention.head_count_kv": 8,
        "attention.key_length": 64,
        "attention.value_length": 64,
        "attention.sliding_window": 128,
    }.items():
        w.add_uint32(f"gpt-oss.{k}", v)
    mib = 2**20  # tensor infos only (no data): 24 layers of 100 MiB, 50 MiB embeddings/head
    for name, n in [("token_embd.weight", 50), ("output.weight", 50)] + [
        (f"blk.{i}.ffn_up_exps.weight", 100) for i in range(24)
    ]:
        w.add_tensor_info(name, [n, 256, 1024], np.dtype(np.float32), n * mib)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    rep = fit_report(path, 0, ram_bytes=4 * 2**30, vram_bytes=0)
    assert rep["kv_bytes_per_token"] == 24 * 8 * 64 * 2 * 2 == 49152
    assert rep["n_ctx"] == 131072 and not rep["fits"]
    assert 0 < rep["max_ctx"] < 131072 and rep["max_ctx"] % 256 == 0
    no_swa_full = fit_report(path, 0, ram_bytes=4 * 2**30, vram_bytes=0, swa_full=False)
    assert (
        no_swa_full["kv_bytes"] < rep["kv_bytes"] * 0.6 and no_swa_full["max_ctx"] > rep["max_ctx"]
    )


def test_gpu_info_parses_nvidia_smi(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fitmod.shutil, "which", lambda _: "/usr/bin/nvidia-smi")
    out = "0, NVIDIA H200, 143771, 140000\n"
    monkeypatch.setattr(
        fitmod.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, stdout=out)
    )
    assert fitmod.gpu_info() == [
        {"index": 0, "name": "NVIDIA H200", "total": 143771 * 2**20, "free": 140000 * 2**20}
    ]
    monkeypatch.setattr(fitmod.shutil, "which", lambda _: None)
    assert fitmod.gpu_info() is None
    ram = fitmod.ram_info()
    assert ram["available"] and ram["total"] and ram["available"] <= ram["total"]


# -- add / rm / path / list ----------------------------------------------------------------


def test_add_path_list_rm(
    tiny_model: Path, manifests: Path, broken_files: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGE_GUARD_MODEL", "tiny-guard")  # a bare name: its default tag
    res = cli("models", "add", str(tiny_model), "--id", "mine:tiny")
    assert res.exit_code == 0, res.output
    assert cli("models", "path", "mine:tiny").output.strip() == str(tiny_model.resolve())
    assert resolve("mine:tiny").id == "mine:tiny"
    rows = {r["id"]: r for r in json.loads(cli("models", "list", "--json").output)}
    assert rows["mine:tiny"]["trust"] == "registered" and rows["mine:tiny"]["installed"]
    assert rows[UNPINNED]["default"] and not rows[UNPINNED]["installed"]
    assert rows[PINNED]["trust"] == "pinned" and rows[UNPINNED]["trust"] == "unverified"
    assert verify_model("mine:tiny")["trust"] == "registered"
    for args, needle in [
        (("add", str(tiny_model), "--id", "mine:tiny"), "already registered"),
        (("add", str(tiny_model), "--id", "Bad Id"), "name:tag"),
        (("add", str(tiny_model), "--id", UNPINNED), "manifest id"),
        (("add", str(broken_files["not_gguf"]), "--id", "x:y"), "not a GGUF"),
        (("rm", "mine:tiny"), "--yes"),  # not a TTY: refuses without --yes
        (("rm", UNPINNED, "--yes"), "not downloaded"),
    ]:
        res = cli("models", *args)
        assert res.exit_code == 1 and needle in res.output, (args, res.output)
        assert res.output.strip().count("\n") == 0
    res = cli("models", "rm", "mine:tiny", "--yes")
    assert res.exit_code == 0 and "unregistered" in res.output
    assert tiny_model.exists()  # the file is kept
    assert cli("models", "path", "mine:tiny").exit_code == 1


def test_tofu_record_shows_in_list(manifests: Path, tiny_bytes: bytes) -> None:
    from edge_guard.registry.manifests import load_manifests as lm

    record_tofu(lm()[UNPINNED].source, hashlib.sha256(tiny_bytes).hexdigest(), 1, UNPINNED)
    rows = {r["id"]: r for r in json.loads(cli("models", "list", "--json").output)}
    assert rows[UNPINNED]["trust"] == "tofu"
    assert "tofu" in cli("models", "list").output


def test_a_broken_user_manifest_does_not_block_plain_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model: Path
) -> None:
    (tmp_path / "broken.toml").write_text("id = [")
    monkeypatch.setenv("EDGE_GUARD_MANIFESTS", str(tmp_path))
    assert resolve(str(tiny_model)).path == tiny_model
    res = cli("models", "list")
    assert res.exit_code == 1 and "broken.toml: invalid TOML" in res.output
    assert res.output.strip().count("\n") == 0
