"""Quantize a full-precision (F16/BF16/F32) GGUF with llama.cpp's own quantizer, offline.

`quantize_model(src, out, "q4_k_m")` checks the source with `check_model_file`, runs
`llama_cpp.llama_model_quantize` into a temporary file next to `out`, checks the result
and renames it into place, so a failed or interrupted quantization leaves no partial
output. Types that llama.cpp only supports with an importance matrix are not offered.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_guard.defaults import env
from edge_guard.errors import EdgeGuardError

# Our type name -> llama.cpp's LLAMA_FTYPE_MOSTLY_<NAME> (types needing an imatrix left out).
QUANT_TYPES: dict[str, str] = {
    "f16": "F16",
    "bf16": "BF16",
    "q8_0": "Q8_0",
    "q6_k": "Q6_K",
    "q5_k_m": "Q5_K_M",
    "q5_k_s": "Q5_K_S",
    "q5_1": "Q5_1",
    "q5_0": "Q5_0",
    "q4_k_m": "Q4_K_M",
    "q4_k_s": "Q4_K_S",
    "q4_1": "Q4_1",
    "q4_0": "Q4_0",
    "iq4_nl": "IQ4_NL",
    "iq4_xs": "IQ4_XS",
    "q3_k_l": "Q3_K_L",
    "q3_k_m": "Q3_K_M",
    "q3_k_s": "Q3_K_S",
    "q2_k": "Q2_K",
    "mxfp4_moe": "MXFP4_MOE",
}


@dataclass
class QuantizeResult:
    src: Path
    out: Path
    qtype: str
    src_bytes: int
    out_bytes: int
    seconds: float
    file_type: str | None  # the output's general.file_type, e.g. MOSTLY_Q4_0

    @property
    def ratio(self) -> float:
        return self.out_bytes / self.src_bytes if self.src_bytes else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d.update(src=str(self.src), out=str(self.out), ratio=self.ratio)
        return d


def available_types() -> list[str]:
    """The quantization types this llama-cpp-python build can write."""
    import llama_cpp

    return [k for k, v in QUANT_TYPES.items() if hasattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{v}")]


def normalize_type(qtype: str) -> str:
    """'Q4_K_M' / 'q4_k_m' -> 'q4_k_m'; unknown types raise one line listing the valid ones."""
    key = qtype.strip().lower().replace("-", "_")
    valid = available_types()
    if key not in valid:
        raise EdgeGuardError(f"unknown quantization type {qtype!r} (valid: {', '.join(valid)})")
    return key


def file_type_name(path: str | os.PathLike[str]) -> str | None:
    """The GGUF's general.file_type as llama.cpp names it (MOSTLY_Q8_0, MOSTLY_F16, ...)."""
    from edge_guard.gguf.check import read_header

    value = read_header(path).metadata.get("general.file_type")
    if not isinstance(value, int):
        return None
    import gguf

    try:
        return gguf.LlamaFileType(value).name
    except ValueError:
        return f"type{value}"


def quantize_model(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    qtype: str,
    *,
    force: bool = False,
    threads: int | None = None,
    allow_requantize: bool = False,
    echo: Callable[[str], Any] | None = None,
) -> QuantizeResult:
    """Write `src` quantized to `qtype` at `out` (atomically); returns sizes and timing."""
    from edge_guard.gguf.check import check_model_file

    key = normalize_type(qtype)
    src_p, out_p = Path(src).expanduser(), Path(out).expanduser()
    if not src_p.is_file():
        raise EdgeGuardError(f"no such model file: {src_p}")
    if out_p.suffix.lower() != ".gguf":
        raise EdgeGuardError(f"the output must be a .gguf file, got {out_p}")
    if out_p.exists() and out_p.resolve() == src_p.resolve():
        raise EdgeGuardError(f"the output {out_p} is the source file; choose another name")
    if out_p.is_dir():
        raise EdgeGuardError(f"{out_p} is a folder, not a .gguf file")
    if out_p.exists() and not force:
        raise EdgeGuardError(f"{out_p} exists (use --force to overwrite)")
    if not out_p.parent.is_dir():
        raise EdgeGuardError(f"cannot write {out_p}: folder {out_p.parent} does not exist")
    check_model_file(src_p)
    src_bytes = src_p.stat().st_size
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{out_p.name}.", suffix=".partial", dir=out_p.parent
        )
    except OSError as exc:
        raise EdgeGuardError(f"cannot write {out_p}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp = Path(tmp_name)
    t0 = time.perf_counter()
    try:
        _run_quantizer(
            src_p, tmp, key, threads=threads, allow_requantize=allow_requantize, echo=echo
        )
        check_model_file(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp made it private; give it normal permissions
        os.replace(tmp, out_p)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return QuantizeResult(
        src_p,
        out_p,
        key,
        src_bytes,
        out_p.stat().st_size,
        time.perf_counter() - t0,
        file_type_name(out_p),
    )


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _run_quantizer(
    src: Path,
    tmp: Path,
    key: str,
    *,
    threads: int | None,
    allow_requantize: bool,
    echo: Callable[[str], Any] | None,
) -> None:
    import llama_cpp

    from edge_guard.engine import llama_runtime as rt

    rt.install_logger()  # llama.cpp's per-tensor log goes to our buffer, not the terminal
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{QUANT_TYPES[key]}")
    params.nthread = threads or int(env("EDGE_GUARD_THREADS") or 0) or (os.cpu_count() or 1)
    params.allow_requantize = allow_requantize
    if echo is not None:
        echo(f"quantizing {src.name} to {key} with {params.nthread} thread(s)…")
    rc = llama_cpp.llama_model_quantize(os.fsencode(src), os.fsencode(tmp), ctypes.byref(params))
    if rc != 0:
        reason = rt.last_log_error() or f"llama_model_quantize returned {rc}"
        reason = reason.removeprefix("llama_model_quantize: ").removeprefix("failed to quantize: ")
        hint = ""
        if "requantiz" in reason and not allow_requantize:
            hint = (
                "; the source already holds quantized tensors: start from an F16/BF16 build, "
                "or pass --allow-requantize (lower quality)"
            )
        raise EdgeGuardError(f"quantizing {src} to {key} failed: {reason}{hint}")
