"""What must hold before llama.cpp loads a model file: it fits memory, and it cannot crash us.

The engine runs `check_load` (passed in as its `load_check`) just before it loads a file;
it knows neither the registry nor the store, which this module reads.

- **Memory**: `check_memory(...)` refuses (one line, `DoesNotFit`) a model that does not
  fit the free RAM/VRAM at the requested context (`registry.fit.check_fit`), unless forced.
- **Load probes**: llama.cpp aborts the whole process on some malformed files that pass
  `gguf_check` (an op given a tensor type it does not support, division by a zero
  hyperparameter...). `ensure_loadable(path)` therefore loads a file that is not trusted
  yet in a short child process first (load + context + a 4-token decode on the CPU). A
  child killed by a signal becomes `BadModelFile("llama.cpp crashed loading <file>
  (signal N) ...")`; a clean refusal becomes llama.cpp's own reason. A successful probe
  is recorded per (path, size, mtime, llama-cpp-python version) in
  `<data dir>/load_probes.json`, so each file is probed once. Files pulled by
  `edge-guard models pull` (hash checked against a pinned or recorded sha256) are trusted.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from edge_guard import defaults
from edge_guard.defaults import PROBE_TIMEOUT_S
from edge_guard.engine.engine import LoadPlan
from edge_guard.errors import BadModelFile, EdgeGuardError

PROBE_FILE = "load_probes.json"
# Exit codes of the probe child.
_PROBE_OK, _PROBE_LOAD_FAILED, _PROBE_NAN = 0, 3, 4
_PROBED: set[tuple[str, int, int, str]] = set()  # probed OK by this process
_LOCK = threading.Lock()


def check_load(plan: LoadPlan) -> None:
    """The engine's `load_check`: refuse a model that does not fit (unless forced), probe an
    untrusted file in a child process first (llama.cpp aborts on some bad files)."""
    if not plan.force:
        check_memory(
            plan.path,
            n_ctx=plan.n_ctx,
            n_gpu_layers=plan.n_gpu_layers,
            swa_full=plan.swa_full,
            n_ubatch=plan.n_batch,
            ram_held=plan.ram_held,
        )
    ensure_loadable(plan.path)


# -- memory ----------------------------------------------------------------------------------
def check_memory(
    path: str,
    *,
    n_ctx: int,
    n_gpu_layers: int,
    swa_full: bool,
    n_ubatch: int = 512,
    ram_held: int = 0,
) -> dict[str, Any]:
    """`check_fit` for the settings the engine will really use; raises `DoesNotFit`.

    Without a VRAM figure (no `nvidia-smi`: Apple unified memory, other GPUs) everything
    is counted against RAM, which is right for unified memory and cautious elsewhere.
    `ram_held`: RAM the free figure still counts but other engines of this process use
    (their mapped weights), taken off it.
    """
    from edge_guard.registry import fit
    from edge_guard.registry.errors import DoesNotFit

    gpus = fit.gpu_info() if n_gpu_layers != 0 else None
    layers = n_gpu_layers if gpus else 0
    vram = sum(g["free"] for g in gpus) if gpus else 0
    ram: int | None = None
    if ram_held:
        free = fit.ram_info()["available"]
        ram = None if free is None else max(0, free - ram_held)
    report = fit.fit_report(
        path,
        n_ctx,
        n_gpu_layers=layers,
        swa_full=swa_full,
        n_ubatch=n_ubatch,
        ram_bytes=ram,
        vram_bytes=vram,
    )
    if report["fits"]:
        return report
    hint = "use a smaller --ctx"
    if layers != 0:
        best = fit.fit_report(
            path, n_ctx, swa_full=swa_full, n_ubatch=n_ubatch, ram_bytes=ram, vram_bytes=vram
        )
        if best["fits"]:
            hint = f"use --gpu-layers {best['n_gpu_layers']}"
    raise DoesNotFit(
        f"{report['reason']}; {hint}, or pass --force to load it anyway (it may swap heavily)"
    )


# -- load probes ------------------------------------------------------------------------------
def _stamp(path: str) -> tuple[str, int, int, str]:
    from edge_guard.engine.llama_runtime import llama_cpp_version

    st = os.stat(path)
    return (os.path.realpath(path), st.st_size, st.st_mtime_ns, llama_cpp_version())


def _probe_file() -> Path:
    from edge_guard.paths import data_dir

    return data_dir() / PROBE_FILE


def _stamp_key(stamp: tuple[str, int, int, str]) -> str:
    return "|".join(str(x) for x in stamp)


def _load_probes() -> dict[str, Any]:
    try:
        data = json.loads(_probe_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _record_probe(stamp: tuple[str, int, int, str]) -> None:
    """Remember a good probe (atomic write; a lost race only costs a second probe)."""
    from edge_guard.store import utcnow

    path = _probe_file()
    data = _load_probes()
    data[_stamp_key(stamp)] = {"path": stamp[0], "ok": utcnow()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)


def registry_verified(path: str) -> bool:
    """True for a file `edge-guard models pull` downloaded and hash-checked (unchanged since)."""
    try:
        from edge_guard.registry.store import load_registry

        pulled = load_registry()["pulled"]
        real, size = os.path.realpath(path), os.path.getsize(path)
    except (EdgeGuardError, OSError):
        return False
    for rec in pulled.values():
        if not isinstance(rec, dict) or not rec.get("sha256"):
            continue
        rec_path = rec.get("path")
        if isinstance(rec_path, str) and os.path.realpath(rec_path) == real:
            return rec.get("size") == size
    return False


def is_trusted(path: str) -> bool:
    """Probed OK before (this process or recorded), or registry-verified."""
    try:
        stamp = _stamp(path)
    except OSError:
        return False
    if stamp in _PROBED:
        return True
    if _stamp_key(stamp) in _load_probes() or registry_verified(path):
        _PROBED.add(stamp)
        return True
    return False


def ensure_loadable(path: str, *, timeout: float | None = None) -> None:
    """Probe `path` in a child process unless it is trusted; raises `BadModelFile`."""
    path = os.fspath(path)
    with _LOCK:
        if is_trusted(path):
            return
        probe_load(path, timeout=timeout)
        stamp = _stamp(path)
        _PROBED.add(stamp)
        _record_probe(stamp)


PROBE_CODE = "import sys; from edge_guard.registry.load_guard import _probe_main; sys.exit(_probe_main(sys.argv[1]))"


def probe_load(path: str, *, timeout: float | None = None) -> None:
    """Load `path` with llama.cpp in a child process; raise `BadModelFile` if that fails."""
    limit = timeout if timeout is not None else _env_timeout()
    package_root = str(Path(__file__).resolve().parents[2])  # this edge_guard, importable
    pythonpath = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, GGML_NO_BACKTRACE="1", PYTHONPATH=pythonpath)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", PROBE_CODE, path],
            capture_output=True,
            timeout=limit,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise BadModelFile(
            f"llama.cpp did not finish loading {path} within {limit:g} s in a test process"
        ) from None
    except OSError as exc:
        raise EdgeGuardError(f"cannot start a process to test-load {path}: {exc}") from None
    stderr = proc.stderr.decode("utf-8", "replace")
    rc = proc.returncode
    if rc == _PROBE_OK:
        return
    reason = _reason(stderr)
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = "unknown signal"
        detail = f": {reason}" if reason else ""
        raise BadModelFile(f"llama.cpp crashed loading {path} (signal {-rc}, {name}){detail}")
    if rc in (_PROBE_LOAD_FAILED, _PROBE_NAN):
        raise BadModelFile(f"{path}: {reason or 'llama.cpp could not load it'}")
    raise BadModelFile(f"test-loading {path} failed (exit {rc}){': ' + reason if reason else ''}")


def _env_timeout() -> float:
    try:
        return float(defaults.env("EDGE_GUARD_PROBE_TIMEOUT") or PROBE_TIMEOUT_S)
    except ValueError:
        return PROBE_TIMEOUT_S


def _reason(stderr: str) -> str | None:
    """The most telling line of a probe's stderr (llama.cpp's error or a failed assert)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for needle in (
        "edge_guard probe:",
        "GGML_ASSERT",
        "error loading model:",
        "unsupported",
        "error",
        "failed",
    ):
        for line in reversed(lines):
            if needle in line:
                line = line.split("edge_guard probe:", 1)[-1].strip()
                if "error loading model:" in line:
                    line = line.split("error loading model:", 1)[1].strip()
                return re.sub(r"\S*/([^/\s]+:\d+:)", r"\1", line)[:300]
    return lines[-1][:300] if lines else None


def _probe_main(path: str) -> int:
    """Child side of `probe_load`: load, make a context, decode 4 tokens, check the logits."""
    import numpy as np

    from edge_guard.engine import llama_runtime as rt

    def say(msg: str) -> None:
        print(f"edge_guard probe: {msg}", file=sys.stderr, flush=True)

    try:
        model, ctx = rt.load(
            path,
            n_gpu_layers=0,
            n_ctx=64,
            n_batch=32,
            n_seq_max=1,
            n_threads=1,
            flash_attn=False,
            swa_full=True,
            verbose=True,
        )
    except EdgeGuardError as exc:
        log = rt.log_lines()
        why = [ln.split("error loading model:", 1)[1] for ln in log if "error loading model:" in ln]
        say(why[-1].strip() if why else str(exc).split(": ", 1)[-1])
        return _PROBE_LOAD_FAILED
    n_vocab = rt.n_vocab(model)
    batch = rt.Batch(4, 1)
    for pos in range(4):
        batch.add(pos % max(1, n_vocab), pos, 0, pos == 3)
    try:
        rt.decode(ctx, batch)
    except EdgeGuardError as exc:
        say(str(exc))
        return _PROBE_LOAD_FAILED
    logits = rt.logits(ctx, 3, n_vocab)
    if np.isnan(logits).any():
        say("the model computes NaN logits (corrupt or wrongly quantized weights)")
        return _PROBE_NAN
    return _PROBE_OK
