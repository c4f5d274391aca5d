"""Per-config resource measurements: this process's peak RSS and GPU memory during a run.

Configs run one after another in one process, each with its own model loaded (the
previous one is released first). On Linux the kernel's RSS high-water mark (VmHWM) is
reset before each config (`/proc/self/clear_refs`), so "peak RSS" is the process's peak
while that config ran: Python and edge_guard (the baseline, also reported) plus the
model's mapped weights, KV cache and buffers. Elsewhere `getrusage` gives the process's
peak since start, which is only per-config for an increasing sequence (said in `method`).
GPU memory comes from `nvidia-smi` (this process's use, or the device's used memory over
its level before the run when processes are not visible); "n/a" without nvidia-smi.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
from typing import Any

_STATUS = "/proc/self/status"


def _status_bytes(field: str) -> int | None:
    try:
        with open(_STATUS, encoding="ascii") as fh:
            m = re.search(rf"^{field}:\s+(\d+)\s*kB", fh.read(), re.MULTILINE)
    except OSError:
        return None
    return int(m.group(1)) * 1024 if m else None


def rss_bytes() -> int | None:
    return _status_bytes("VmRSS")


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark for this process (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


def peak_rss_bytes() -> int | None:
    hwm = _status_bytes("VmHWM")
    if hwm is not None:
        return hwm
    try:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (ImportError, OSError):
        return None
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def _smi(*args: str) -> list[list[str]] | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, *args, "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return [[c.strip() for c in line.split(",")] for line in out.splitlines() if line.strip()]


def gpu_used_bytes() -> tuple[int | None, int | None]:
    """(this process's GPU memory, all devices' used memory) in bytes; None = unknown."""
    procs = _smi("--query-compute-apps=pid,used_memory")
    devices = _smi("--query-gpu=memory.used")
    mine = None
    if procs is not None:
        pid = str(os.getpid())
        with contextlib.suppress(ValueError):
            mine = sum(int(float(r[1])) for r in procs if len(r) > 1 and r[0] == pid) << 20
    total = None
    if devices:
        with contextlib.suppress(ValueError):
            total = sum(int(float(r[0])) for r in devices) << 20
    return mine, total


class ResourceMeter:
    """Measures one config's run: call `start()`, `sample()` now and then, `stop()`."""

    def __init__(self, sample_every_s: float = 5.0, *, local: bool = True) -> None:
        self.sample_every_s = sample_every_s
        self.local = local  # False: the model runs on a server; only wall time is ours
        self.has_smi = local and shutil.which("nvidia-smi") is not None
        self._t0 = 0.0
        self._last = 0.0
        self._baseline: int | None = None
        self._gpu_before: int | None = None
        self._gpu_mine = 0
        self._gpu_device = 0
        self._reset = False

    def start(self) -> None:
        if self.local:
            self._reset = reset_peak_rss()
            self._baseline = rss_bytes()
        if self.has_smi:
            _, self._gpu_before = gpu_used_bytes()
        self._t0 = self._last = time.monotonic()

    def sample(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self.has_smi or (not force and now - self._last < self.sample_every_s):
            return
        self._last = now
        mine, device = gpu_used_bytes()
        self._gpu_mine = max(self._gpu_mine, mine or 0)
        self._gpu_device = max(self._gpu_device, device or 0)

    def stop(self) -> dict[str, Any]:
        """The measurement (call while the model is still loaded)."""
        wall = round(time.monotonic() - self._t0, 3)
        if not self.local:
            na = "n/a (server backend: the memory is used on the server)"
            return {
                "peak_rss_bytes": None,
                "baseline_rss_bytes": None,
                "model_rss_bytes": None,
                "rss_method": na,
                "gpu_bytes": None,
                "gpu_method": na,
                "wall_s": wall,
            }
        self.sample(force=True)
        peak = peak_rss_bytes()
        gpu, gpu_method = None, "n/a (no nvidia-smi)"
        if self.has_smi:
            if self._gpu_mine:
                gpu, gpu_method = self._gpu_mine, "nvidia-smi: this process, peak of samples"
            elif self._gpu_before is not None and self._gpu_device:
                gpu = max(0, self._gpu_device - self._gpu_before)
                gpu_method = "nvidia-smi: device memory used over its level before the run"
            else:
                gpu, gpu_method = 0, "nvidia-smi: none used by this process"
        return {
            "peak_rss_bytes": peak,
            "baseline_rss_bytes": self._baseline,
            "model_rss_bytes": None
            if peak is None or self._baseline is None
            else max(0, peak - self._baseline),
            "rss_method": "VmHWM reset per config (/proc/self/clear_refs)"
            if self._reset
            else "process peak since start (getrusage)",
            "gpu_bytes": gpu,
            "gpu_method": gpu_method,
            "wall_s": wall,
        }
