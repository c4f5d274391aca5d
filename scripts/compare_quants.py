#!/usr/bin/env python
"""From a full-precision GGUF to a verdict on its quants, in one command.

    python scripts/compare_quants.py SRC.gguf --types q8_0,q4_k_m,q4_0 \\
        --dataset data.jsonl --policy toxic_simple --out report.html [compare options...]

1. quantizes SRC to each type with llama.cpp's quantizer (`edge-guard models quantize`),
   writing `<SRC stem>-<type>.gguf` next to SRC (or in --outdir); an existing quant is
   reused unless --rebuild;
2. runs `edge-guard compare` with SRC as the reference and one config per quant. Options
   this script does not know (--limit, --max-tokens, --name, --json, --threads, ...) are
   passed to `edge-guard compare` as they are.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(
        prog="compare_quants.py",
        allow_abbrev=False,  # unknown options belong to `edge-guard compare`
        description="Quantize a full-precision GGUF to several types and compare the quants "
        "against it on a dataset (other options go to `edge-guard compare`).",
    )
    p.add_argument("src", help="The full-precision (F16/BF16/F32) .gguf to start from.")
    p.add_argument("--types", required=True, help="Comma-separated quant types, e.g. q8_0,q4_0.")
    p.add_argument("--dataset", "-d", required=True, help="Dataset file (or a pulled name).")
    p.add_argument("--policy", "-p", required=True, help="Policy name, folder or file.")
    p.add_argument("--out", "-o", default=None, help="Report file (.html or .md).")
    p.add_argument("--outdir", default=None, help="Where the quants go (default: next to SRC).")
    p.add_argument("--rebuild", action="store_true", help="Quantize again even if a quant exists.")
    p.add_argument(
        "--allow-requantize",
        action="store_true",
        help="Allow re-quantizing already-quantized tensors (lower quality).",
    )
    p.add_argument("--quantize-threads", type=int, default=None, help="Quantizer threads.")
    return p.parse_known_args(argv)


def main(argv: list[str] | None = None) -> int:
    import click

    from edge_guard.cli import main as cli_main
    from edge_guard.errors import EdgeGuardError
    from edge_guard.gguf.check import check_model_file
    from edge_guard.registry.quantize import file_type_name, normalize_type, quantize_model
    from edge_guard.registry.store import fmt_size

    args, rest = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        src = Path(args.src).expanduser()
        if not src.is_file():
            raise EdgeGuardError(f"no such model file: {src}")
        check_model_file(src)
        types = list(dict.fromkeys(normalize_type(t) for t in args.types.split(",") if t.strip()))
        if not types:
            raise EdgeGuardError("--types is empty: give e.g. q8_0,q4_0")
        outdir = Path(args.outdir).expanduser() if args.outdir else src.parent
        outdir.mkdir(parents=True, exist_ok=True)
        quants = []
        for t in types:
            out = outdir / f"{src.stem}-{t}.gguf"
            if out.exists() and not args.rebuild:
                click.echo(
                    f"using existing {out} ({fmt_size(out.stat().st_size)}; --rebuild to "
                    "quantize again)",
                    err=True,
                )
            else:
                res = quantize_model(
                    src,
                    out,
                    t,
                    force=True,
                    threads=args.quantize_threads,
                    allow_requantize=args.allow_requantize,
                )
                click.echo(
                    f"quantized {t}: {fmt_size(res.src_bytes)} -> "
                    f"{fmt_size(res.out_bytes)} in {res.seconds:.1f} s",
                    err=True,
                )
            quants.append((t, out))
    except EdgeGuardError as exc:
        click.echo(f"error: {exc}", err=True)
        return 1
    src_type = (file_type_name(src) or "source").removeprefix("MOSTLY_").removeprefix("ALL_")
    cmd = [
        "compare",
        "--dataset",
        args.dataset,
        "--policy",
        args.policy,
        "--config",
        f"{src},name={src_type.lower()} (source)",
    ]
    for t, path in quants:
        cmd += ["--config", f"{path},name={t}"]
    if args.out:
        cmd += ["--out", args.out]
    try:
        cli_main.main(args=cmd + rest, prog_name="edge-guard", standalone_mode=True)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
