"""Helpers for the comparison and quantization tests: cached quants, datasets, steering."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from click.testing import Result

from edge_guard.compare.config import CompareConfig
from edge_guard.datasets.files import Row
from edge_guard.engine.sampling import ForcedTokens, harmony_script
from edge_guard.harmony.vocab import Vocab

ANSWER = {"1": "violation", "0": "no_violation"}


def quant_of(src: Path, qtype: str) -> Path:
    """`src` quantized to `qtype` next to it (made once per session: the source is cached)."""
    from edge_guard.registry.quantize import quantize_model

    out = src.with_name(f"{src.stem}-{qtype}.gguf")
    if not out.exists():
        quantize_model(src, out, qtype)
    return out


def rows(n: int) -> list[dict[str, Any]]:
    """n labelled rows; item 0's text is hostile HTML/Markdown (the report must escape it)."""
    out = []
    for i in range(n):
        text = f"message number {i}"
        if i == 0:
            text = "<script>alert('x')</script> & <b>bold</b> | pipe"
        out.append({"id": f"item-{i}", "text": text, "label": int(i % 3 == 0)})
    return out


def steer_answers(
    vocab: Vocab, answers: Sequence[dict[int, str]]
) -> Callable[[int, CompareConfig, int, Row], ForcedTokens]:
    """Config k answers `answers[k].get(idx)`, else the gold label; non-0/1 = unparsable."""

    def steer(k: int, _cfg: CompareConfig, idx: int, row: Row) -> ForcedTokens:
        final = answers[k].get(idx, str(row.label))
        return ForcedTokens(harmony_script(vocab, final, f"config {k} on <item {idx}>"))

    return steer


def one_line_error(result: Result) -> str:
    """The single `error:` line of a failed command (no traceback)."""
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert "Traceback" not in result.stderr
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]
