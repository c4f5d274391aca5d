"""`edge-guard models quantize SRC OUT --type T`: make a quant of a full-precision GGUF offline.

Attached to the `models` group by `models_cmd` (this module does not import it); the work is done by
`edge_guard.registry.quantize` through llama.cpp's own quantizer.
"""

from __future__ import annotations

import json

import click

from edge_guard.registry.quantize import QUANT_TYPES


@click.command("quantize")
@click.argument("src", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option(
    "--type",
    "-t",
    "qtype",
    required=True,
    metavar="TYPE",
    help=f"Quantization type: {', '.join(QUANT_TYPES)}.",
)
@click.option("--force", is_flag=True, help="Overwrite OUT if it exists.")
@click.option(
    "--threads",
    type=int,
    default=None,
    help="Quantizer threads (default: $EDGE_GUARD_THREADS, else all cores).",
)
@click.option(
    "--allow-requantize",
    is_flag=True,
    help="Allow re-quantizing tensors that are already quantized (lower quality).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def quantize(
    src: str,
    out: str,
    qtype: str,
    force: bool,
    threads: int | None,
    allow_requantize: bool,
    as_json: bool,
) -> None:
    """Quantize SRC (an F16/BF16/F32 .gguf) to OUT with llama.cpp's quantizer.

    The source is checked first; OUT is written under a temporary name and renamed when
    complete, so a failed quantization leaves nothing behind. Note that public gpt-oss
    builds already hold MXFP4 experts: quantize an F16/BF16 conversion instead.
    """
    from edge_guard.registry.quantize import quantize_model
    from edge_guard.registry.store import fmt_size

    res = quantize_model(
        src,
        out,
        qtype,
        force=force,
        threads=threads,
        allow_requantize=allow_requantize,
        echo=None if as_json else lambda s: click.echo(s, err=True),
    )
    if as_json:
        click.echo(json.dumps(res.as_dict()))
        return
    click.echo(
        f"wrote {res.out} ({res.file_type}): {fmt_size(res.src_bytes)} -> "
        f"{fmt_size(res.out_bytes)} ({100 * res.ratio:.0f}% of the source) in "
        f"{res.seconds:.1f} s"
    )
