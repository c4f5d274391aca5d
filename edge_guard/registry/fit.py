"""`models fit`: will a GGUF (weights + KV cache at a context size) fit this machine?

Everything comes from the GGUF header: per-layer weight bytes, and the KV cache per
token = layers x KV heads x (key dim + value dim) x 2 bytes (f16 K and V). gpt-oss has
a sliding window on half of its layers; llama.cpp (and edge_guard's engine, by
default) allocates a full-size cache for them too (`swa_full`), so by default every
layer counts at the full context. Available RAM: `/proc/meminfo` MemAvailable (capped
by a cgroup v2 memory limit), else `os.sysconf`. VRAM: `nvidia-smi`, if present.

`fit_report(path, n_ctx)` returns a JSON-ready dict (suggested `n_gpu_layers`, RAM and
VRAM needed, `fits`, the largest context that fits); `check_fit` raises `DoesNotFit`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_guard.defaults import DEFAULT_CTX
from edge_guard.registry.errors import DoesNotFit
from edge_guard.registry.store import fmt_size

DEFAULT_N_CTX = DEFAULT_CTX
GPU_RESERVE = 512 * 1024 * 1024  # CUDA context and allocator slack per process
CPU_BASE = 64 * 1024 * 1024  # runtime buffers beyond the estimate below
_BLK = re.compile(r"^blk\.(\d+)\.")


def ram_info() -> dict[str, Any]:
    """{"total", "available", "source"} in bytes (None where unknown)."""
    total = avail = None
    source = "unknown"
    try:
        fields = {}
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            fields[key] = int(rest.split()[0]) * 1024
        total, avail = fields.get("MemTotal"), fields.get("MemAvailable")
        source = "/proc/meminfo"
    except (OSError, ValueError, IndexError):
        try:
            page = os.sysconf("SC_PAGE_SIZE")
            total = os.sysconf("SC_PHYS_PAGES") * page
            avail = os.sysconf("SC_AVPHYS_PAGES") * page
            source = "sysconf"
        except (OSError, ValueError, AttributeError):
            pass
    try:  # a container's memory limit (cgroup v2)
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
            cg_avail = max(int(limit) - used, 0)
            if avail is None or cg_avail < avail:
                avail, total, source = cg_avail, int(limit), "cgroup memory.max"
    except (OSError, ValueError):
        pass
    return {"total": total, "available": avail, "source": source}


def gpu_info() -> list[dict[str, Any]] | None:
    """NVIDIA GPUs from `nvidia-smi` (total/free bytes), or None without one."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [
                exe,
                "--query-gpu=index,name,memory.total,memory.free",
                "--format=csv,noheader,nounits",
            ],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 4 and parts[2].isdigit() and parts[3].isdigit():
            gpus.append(
                {
                    "index": int(parts[0]) if parts[0].isdigit() else parts[0],
                    "name": parts[1],
                    "total": int(parts[2]) * 2**20,
                    "free": int(parts[3]) * 2**20,
                }
            )
    return gpus or None


@dataclass(frozen=True)
class _Shape:
    n_layer: int
    layer_bytes: list[int]
    cpu_only_bytes: int  # token embeddings and other tensors llama.cpp keeps on the CPU
    output_bytes: int  # output head + final norm (offloaded with n_gpu_layers > n_layer)
    kv_layer_token: int  # K+V bytes per token per layer (f16)
    n_swa: int
    window: int
    n_ctx_train: int
    compute: int  # per-device compute buffer estimate at n_ubatch


def _shape(path: str | os.PathLike[str], n_ubatch: int) -> tuple[_Shape, int, int]:
    from edge_guard.errors import BadModelFile
    from edge_guard.gguf.check import read_header

    h = read_header(path)
    ak = h.arch_key
    n_layer, n_head = ak("block_count"), ak("attention.head_count")
    n_embd = ak("embedding_length")
    if not all(isinstance(v, int) and v > 0 for v in (n_layer, n_head, n_embd)):
        raise BadModelFile(f"{h.path}: GGUF lacks block_count/head_count/embedding_length")
    if n_layer > 4096 or n_head > 65536:
        raise BadModelFile(f"{h.path}: implausible block_count {n_layer} / head_count {n_head}")
    n_kv = ak("attention.head_count_kv") or n_head
    k_dim = ak("attention.key_length") or n_embd // n_head
    v_dim = ak("attention.value_length") or k_dim
    window = ak("attention.sliding_window") or 0
    layer_bytes = [0] * n_layer
    cpu_only = output = 0
    for t in h.tensors:
        m = _BLK.match(t.name)
        if m and int(m.group(1)) < n_layer:
            layer_bytes[int(m.group(1))] += t.n_bytes
        elif t.name.startswith(("output.", "output_norm.")):
            output += t.n_bytes
        else:
            cpu_only += t.n_bytes
    tokens = h.metadata.get("tokenizer.ggml.tokens")
    n_vocab = len(tokens) if tokens is not None else 0
    compute = n_ubatch * (n_vocab * 4 + n_embd * 4 * 8) + CPU_BASE
    shape = _Shape(
        n_layer,
        layer_bytes,
        cpu_only,
        output,
        n_kv * (k_dim + v_dim) * 2,
        n_layer // 2 if window else 0,
        int(window),
        int(ak("context_length") or 0),
        compute,
    )
    return shape, h.file_size, sum(t.n_bytes for t in h.tensors)


def _kv(s: _Shape, n_ctx: int, n_layers: int, swa_full: bool, n_ubatch: int) -> int:
    """KV bytes for `n_layers` layers (sliding-window layers counted pro rata)."""
    if swa_full or not s.n_swa:
        return n_layers * s.kv_layer_token * n_ctx
    swa_ctx = min(n_ctx, s.window + n_ubatch)
    per_layer = ((s.n_layer - s.n_swa) * n_ctx + s.n_swa * swa_ctx) / s.n_layer
    return int(n_layers * s.kv_layer_token * per_layer)


def _place(s: _Shape, g: int, n_ctx: int, swa_full: bool, n_ubatch: int) -> tuple[int, int]:
    """(RAM bytes, VRAM bytes) with `g` layers offloaded the way llama.cpp does (the
    last `g` blocks; g > n_layer also offloads the output head)."""
    on_gpu = min(g, s.n_layer)
    gpu_layers = s.layer_bytes[s.n_layer - on_gpu :] if on_gpu else []
    cpu_layers = s.layer_bytes[: s.n_layer - on_gpu]
    vram = 0
    if g > 0:
        vram = sum(gpu_layers) + _kv(s, n_ctx, on_gpu, swa_full, n_ubatch)
        vram += (s.output_bytes if g > s.n_layer else 0) + s.compute + GPU_RESERVE
    ram = s.cpu_only_bytes + sum(cpu_layers) + _kv(s, n_ctx, len(cpu_layers), swa_full, n_ubatch)
    ram += (s.output_bytes if g <= s.n_layer else 0) + (s.compute if g <= s.n_layer else CPU_BASE)
    return ram, vram


def fit_report(
    path: str | os.PathLike[str],
    n_ctx: int | None = None,
    *,
    n_gpu_layers: int | None = None,
    swa_full: bool = True,
    n_ubatch: int = 512,
    ram_bytes: int | None = None,
    vram_bytes: int | None = None,
) -> dict[str, Any]:
    """Memory needed for `path` at `n_ctx` (default DEFAULT_CTX, capped at the trained context;
    0 = the trained context) vs what this machine has.

    `n_gpu_layers=None` suggests the most layers that fit the free VRAM (-1 = all);
    `ram_bytes` / `vram_bytes` override the measured free RAM / VRAM.
    """
    s, file_size, weights = _shape(path, n_ubatch)
    train = s.n_ctx_train or DEFAULT_N_CTX
    ctx = train if n_ctx is not None and n_ctx <= 0 else min(n_ctx or DEFAULT_N_CTX, train)
    ram = ram_info()
    gpus = gpu_info() if vram_bytes is None else None
    ram_avail = ram_bytes if ram_bytes is not None else ram["available"]
    if vram_bytes is not None:
        vram_free = vram_bytes
    else:
        vram_free = sum(g["free"] for g in gpus) if gpus else 0
    full = s.n_layer + 1
    if n_gpu_layers is not None:
        candidates = [full if n_gpu_layers < 0 else min(n_gpu_layers, full)]
    else:
        candidates = list(range(full, -1, -1))

    def gpu_ok(g: int, c: int) -> bool:
        return g == 0 or _place(s, g, c, swa_full, n_ubatch)[1] <= vram_free

    def best(c: int) -> int | None:
        """Most layers offloaded that fit at context `c`, or None if nothing fits."""
        for g in candidates:
            if not gpu_ok(g, c):
                continue
            ram_need = _place(s, g, c, swa_full, n_ubatch)[0]
            # fewer GPU layers would only need more RAM
            return g if ram_avail is None or ram_need <= ram_avail else None
        return None

    g = best(ctx)
    fits = g is not None
    if g is None:  # report the placement that would be tried
        g = next((k for k in candidates if gpu_ok(k, ctx)), candidates[-1])
    ram_need, vram_need = _place(s, g, ctx, swa_full, n_ubatch)
    lo, hi = 0, train // 256  # the largest context (multiple of 256) that fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if best(mid * 256) is not None else (lo, mid - 1)
    max_ctx = lo * 256
    reason = None
    if not fits:
        reason = (
            f"{Path(path).name} needs {fmt_size(ram_need)} RAM"
            + (f" + {fmt_size(vram_need)} VRAM" if vram_need else "")
            + f" at n_ctx={ctx} but {fmt_size(ram_avail)} RAM"
            + (f" + {fmt_size(vram_free)} VRAM" if vram_free else "")
            + " is free; "
            + (
                f"the largest context that fits is {max_ctx}"
                if max_ctx
                else "it does not fit at any context"
            )
        )
    return {
        "path": str(path),
        "file_size": file_size,
        "weights_bytes": weights,
        "n_layer": s.n_layer,
        "n_ctx": ctx,
        "n_ctx_train": s.n_ctx_train,
        "sliding_window": s.window,
        "swa_layers": s.n_swa,
        "swa_full": swa_full,
        "kv_bytes_per_token": s.n_layer * s.kv_layer_token,
        "kv_bytes": _kv(s, ctx, s.n_layer, swa_full, n_ubatch),
        "compute_bytes": s.compute,
        "ram_total": ram["total"],
        "ram_available": ram_avail,
        "ram_source": "given" if ram_bytes is not None else ram["source"],
        "gpus": gpus or [],
        "vram_free": vram_free,
        "n_gpu_layers": g,
        "offload": "all" if g >= full else "partial" if g > 0 else "none",
        "ram_needed": ram_need,
        "vram_needed": vram_need,
        "fits": fits,
        "max_ctx": max_ctx,
        "reason": reason,
    }


def check_fit(path: str | os.PathLike[str], n_ctx: int | None = None, **kw: Any) -> dict[str, Any]:
    """`fit_report`, raising `DoesNotFit` (one line) when the model does not fit."""
    report = fit_report(path, n_ctx, **kw)
    if not report["fits"]:
        raise DoesNotFit(str(report["reason"]))
    return report
