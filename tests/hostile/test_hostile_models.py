"""Hostile model files: one-line errors, a surviving process, probes recorded once, memory fit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_guard.engine.engine import Engine
from edge_guard.engine.sampling import SamplingConfig
from edge_guard.errors import BadModelFile
from edge_guard.gguf.check import check_model_file
from edge_guard.registry import load_guard as safety
from edge_guard.registry.errors import DoesNotFit
from tests.hostile.crafted_models import HEADER_REJECTS, LLAMA_FAILURES

GIB = 1 << 30


@pytest.fixture(autouse=True)
def fresh_probe_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts as a new process would: no file is known to load."""
    monkeypatch.setattr(safety, "_PROBED", set())


@pytest.mark.parametrize("kind", sorted(HEADER_REJECTS))
def test_header_check_rejects_in_one_line(kind: str, crafted: Callable[[str], Path]) -> None:
    path = crafted(kind)
    with pytest.raises(BadModelFile) as info:
        check_model_file(path)
    message = str(info.value)
    assert "\n" not in message and HEADER_REJECTS[kind] in message
    # The engine refuses it before any child process or llama.cpp is involved.
    with pytest.raises(BadModelFile):
        Engine(path, load_check=safety.check_load, n_ctx=256, n_threads=1)


@pytest.mark.parametrize("kind", sorted(LLAMA_FAILURES))
def test_llama_failures_pass_the_header_check(kind: str, crafted: Callable[[str], Path]) -> None:
    """These files look fine to the header reader: only a real load finds the problem."""
    assert check_model_file(crafted(kind)).architecture == "gpt-oss"


@pytest.mark.parametrize("kind", ["sinks-f16", "norms-f16"])
def test_these_files_really_kill_a_process_that_loads_them(
    kind: str, crafted: Callable[[str], Path]
) -> None:
    """Why the probe exists: loading them in-process would abort edge_guard."""
    code = (
        "import sys\n"
        "from edge_guard.engine import llama_runtime as rt\n"
        "m, c = rt.load(sys.argv[1], n_gpu_layers=0, n_ctx=64, n_batch=32, n_seq_max=1,"
        " n_threads=1, flash_attn=False, swa_full=True, verbose=False)\n"
        "b = rt.Batch(4, 1)\n"
        "[b.add(i, i, 0, i == 3) for i in range(4)]\n"
        "rt.decode(c, b)\n"
        "print('survived')\n"
    )
    env = dict(os.environ, GGML_NO_BACKTRACE="1")
    proc = subprocess.run(
        [sys.executable, "-c", code, str(crafted(kind))],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -6, proc.stderr[-500:]
    assert "survived" not in proc.stdout


@pytest.mark.parametrize("kind", sorted(LLAMA_FAILURES))
def test_engine_survives_files_that_break_llama_cpp(
    kind: str, crafted: Callable[[str], Path], tiny_model: Path
) -> None:
    path = crafted(kind)
    with pytest.raises(BadModelFile) as info:
        Engine(path, load_check=safety.check_load, n_ctx=256, n_threads=1)
    message = str(info.value)
    assert "\n" not in message and LLAMA_FAILURES[kind] in message
    if "crashed" in message:
        assert f"llama.cpp crashed loading {path} (signal 6, SIGABRT)" in message
    # Never recorded as good, and this process still loads and runs a good model.
    assert not safety.is_trusted(str(path))
    with Engine(tiny_model, load_check=safety.check_load, n_ctx=256, n_threads=1) as engine:
        ids = engine.renderer.render("policy", "hello").token_ids
        assert engine.generate(ids, sampling=SamplingConfig(max_tokens=2)).error is None


def test_nan_logits_mid_batch_fail_the_items_not_the_process(
    crafted: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defence in depth behind the probe: sampling NaN logits used to raise ValueError."""
    from edge_guard.backends.local import EngineSettings, release_engine
    from edge_guard.classification.classifier import Classifier

    monkeypatch.setattr(safety, "ensure_loadable", lambda path: None)  # skip the probe
    clf = Classifier(
        "toxic_simple",
        crafted("output-nan"),
        db=tmp_path / "s.db",
        sampling=SamplingConfig(temperature=0.7, max_tokens=4),
        engine_settings=EngineSettings(n_ctx=1024, n_parallel=2),
    )
    try:
        results = clf.classify(["one", "two", "three"])
    finally:
        release_engine()
    assert all("NaN logits" in (r.error or "") for r in results)
    rows = clf.store.query("SELECT error FROM results")
    assert len(rows) == 3 and all("NaN" in r["error"] for r in rows)


def test_a_good_probe_is_recorded_once_per_file_version(
    tiny_model: Path, tmp_path: Path, edge_guard_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "copy.gguf"
    copy.write_bytes(tiny_model.read_bytes())
    probes = edge_guard_home / safety.PROBE_FILE  # (the test models probed before: conftest)
    before = set(json.loads(probes.read_text())) if probes.exists() else set()
    calls: list[str] = []
    real_probe = safety.probe_load
    monkeypatch.setattr(
        safety, "probe_load", lambda p, **kw: (calls.append(p), real_probe(p, **kw))[1]
    )
    Engine(copy, load_check=safety.check_load, n_ctx=256, n_threads=1).close()
    assert calls == [str(copy)]
    record = json.loads(probes.read_text())
    assert [r["path"] for k, r in record.items() if k not in before] == [str(copy.resolve())]
    monkeypatch.setattr(safety, "_PROBED", set())  # a new process reads the record
    Engine(copy, load_check=safety.check_load, n_ctx=256, n_threads=1).close()
    assert len(calls) == 1
    os.utime(copy, ns=(1_000_000_000, 1_000_000_000))  # the file changed: probe again
    Engine(copy, load_check=safety.check_load, n_ctx=256, n_threads=1).close()
    assert len(calls) == 2


def test_registry_verified_files_are_not_probed(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge_guard.registry import store

    with store.editing() as reg:
        reg["pulled"]["owner/repo/tiny.gguf@main"] = {
            "id": "tiny:test",
            "path": str(tiny_model),
            "sha256": "ab" * 32,
            "size": tiny_model.stat().st_size,
        }

    def no_probe(*_a: object, **_k: object) -> None:
        raise AssertionError("a registry-verified file was probed")

    monkeypatch.setattr(safety, "probe_load", no_probe)
    Engine(tiny_model, load_check=safety.check_load, n_ctx=256, n_threads=1).close()


def test_probe_that_hangs_is_killed(crafted: Callable[[str], Path]) -> None:
    with pytest.raises(BadModelFile) as info:
        safety.probe_load(str(crafted("sinks-f16")), timeout=0.001)
    assert "did not finish loading" in str(info.value)


def test_cli_reports_a_crashing_model_in_one_line(crafted: Callable[[str], Path]) -> None:
    from edge_guard.cli import main

    result = CliRunner().invoke(
        main,
        [
            "classify",
            "-p",
            "toxic_simple",
            "-m",
            str(crafted("norms-f16")),
            "--max-tokens",
            "2",
            "hi",
        ],
    )
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: llama.cpp crashed loading")


# -- memory ---------------------------------------------------------------------------------
def _machine(monkeypatch: pytest.MonkeyPatch, ram: int, vram: int | None = None) -> None:
    from edge_guard.registry import fit

    monkeypatch.setattr(fit, "ram_info", lambda: {"total": ram, "available": ram, "source": "test"})
    gpus = None if vram is None else [{"index": 0, "name": "test", "total": vram, "free": vram}]
    monkeypatch.setattr(fit, "gpu_info", lambda: gpus)


def test_a_model_that_does_not_fit_ram_is_refused_unless_forced(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _machine(monkeypatch, ram=1 << 20)  # 1 MiB free
    with pytest.raises(DoesNotFit) as info:
        Engine(tiny_model, load_check=safety.check_load, n_ctx=256, n_threads=1, n_gpu_layers=0)
    message = str(info.value)
    assert "\n" not in message and "needs" in message and "--force" in message
    Engine(
        tiny_model, load_check=safety.check_load, n_ctx=256, n_threads=1, n_gpu_layers=0, force=True
    ).close()
    _machine(monkeypatch, ram=64 * GIB)
    Engine(tiny_model, load_check=safety.check_load, n_ctx=256, n_threads=1, n_gpu_layers=0).close()


def test_too_little_vram_suggests_fewer_gpu_layers(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _machine(monkeypatch, ram=64 * GIB, vram=1 << 20)
    with pytest.raises(DoesNotFit) as info:
        safety.check_memory(str(tiny_model), n_ctx=256, n_gpu_layers=-1, swa_full=True)
    assert "VRAM" in str(info.value) and "--gpu-layers 0" in str(info.value)
    _machine(monkeypatch, ram=64 * GIB, vram=64 * GIB)
    assert safety.check_memory(str(tiny_model), n_ctx=256, n_gpu_layers=-1, swa_full=True)["fits"]


def test_unknown_vram_counts_everything_against_ram(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No nvidia-smi (Apple unified memory, other GPUs): full offload is judged on RAM."""
    _machine(monkeypatch, ram=64 * GIB, vram=None)
    assert safety.check_memory(str(tiny_model), n_ctx=256, n_gpu_layers=-1, swa_full=True)["fits"]
    _machine(monkeypatch, ram=1 << 20, vram=None)
    with pytest.raises(DoesNotFit, match="RAM"):
        safety.check_memory(str(tiny_model), n_ctx=256, n_gpu_layers=-1, swa_full=True)


def test_cli_force_flag(tiny_model: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from edge_guard.backends.local import release_engine
    from edge_guard.cli import main

    release_engine()
    _machine(monkeypatch, ram=1 << 20)
    args = [
        "classify",
        "-p",
        "toxic_simple",
        "-m",
        str(tiny_model),
        "--gpu-layers",
        "0",
        "--max-tokens",
        "2",
        "--db",
        str(tmp_path / "s.db"),
        "hello",
    ]
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code == 1 and "--force" in refused.stderr
    forced = CliRunner().invoke(main, ["classify", "--force", *args[1:]])
    release_engine()
    assert forced.exit_code == 0, forced.stderr
    assert "UNDETERMINED" in forced.stdout


@pytest.mark.anyio
async def test_tui_survives_a_model_that_crashes_llama_cpp(
    crafted: Callable[[str], Path], tiny_model: Path, tmp_path: Path
) -> None:
    pytest.importorskip("textual")
    from textual.widgets import TextArea

    from edge_guard.tui.app import EdgeGuardApp
    from tests.tui.test_workbench import wait_idle

    bad = crafted("sinks-f16")
    app = EdgeGuardApp(db=tmp_path / "s.db", model=str(bad), policy="toxic_simple")
    async with app.run_test(size=(140, 42)) as pilot:
        for _ in range(2):  # twice: the first failure left the app usable
            app.screen.query_one("#wb-text", TextArea).load_text("hello")
            await pilot.press("ctrl+r")
            await wait_idle(pilot, app.screen)
        notes = [str(n.message) for n in app._notifications]
        assert any(f"llama.cpp crashed loading {bad}" in n for n in notes), notes
        assert app.screen.query_one("#wb-run").disabled is False
        assert app.is_running


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
