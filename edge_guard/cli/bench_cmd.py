"""`edge-guard bench`: labels/s of cold, llama-cpp-python, sequential and parallel loops.

All measuring lives in `edge_guard.bench.core`; this module parses options, resolves the
model (or writes the synthetic preset once) and prints a table or JSON.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import click

from edge_guard.defaults import DEFAULT_PARALLEL


def synth_model_path(preset: str) -> Path:
    """A synthetic preset's file in the data dir, named by the preset's content (never stale)."""
    from edge_guard.errors import EdgeGuardError
    from edge_guard.paths import synth_dir
    from edge_guard.registry.synth import PRESETS, write_synthetic_model

    p = PRESETS.get(preset)
    if p is None:
        raise EdgeGuardError(f"unknown synthetic preset {preset!r} (choose {', '.join(PRESETS)})")
    digest = hashlib.sha256(repr(p).encode()).hexdigest()[:12]
    path = synth_dir() / f"bench-{preset}-{digest}.gguf"
    if not path.exists():
        click.echo(f"writing synthetic model {preset} to {path} ...", err=True)
        write_synthetic_model(path, preset)
    return path


@click.command()
@click.option("--model", "-m", default=None, help="Model reference (path, id, synth:PRESET).")
@click.option("--synth", default=None, help="Synthetic preset instead of --model (e.g. mini).")
@click.option("--policy-tokens", type=int, default=1000, show_default=True)
@click.option("--text-tokens", type=int, default=64, show_default=True)
@click.option(
    "--output-tokens",
    type=int,
    default=16,
    show_default=True,
    help="Tokens generated per text (stop tokens suppressed until then).",
)
@click.option("--n", "n", type=int, default=200, show_default=True, help="Texts.")
@click.option(
    "--parallel", type=int, default=DEFAULT_PARALLEL, show_default=True, help="Sequences for (d)."
)
@click.option("--threads", type=int, default=None, help="CPU threads (default: all cores).")
@click.option("--gpu-layers", default="auto", show_default=True, help="Layers on the GPU.")
@click.option(
    "--flash-attn",
    type=click.Choice(["auto", "on", "off"]),
    default="auto",
    show_default=True,
    help="Flash attention (moderation workloads): auto is the engine's rule (on with GPU "
    "layers, off on a CPU: batch-invariant scores); on skips the cells a sequence cannot see.",
)
@click.option(
    "--baseline-n",
    type=int,
    default=10,
    show_default=True,
    help="Time the one-text-at-a-time loops (a), (b), (c) on this many texts and "
    "scale their time to --n (0: time all). (d) always runs all --n texts.",
)
@click.option(
    "--variants",
    default="cold,llama_cpp,sequential,parallel,threads",
    show_default=True,
    help="Comma-separated variants: cold, llama_cpp, sequential, parallel, threads, one_pass, "
    "cascade_10, cascade_30; moderation workloads: one_label, separate, text_once, cheap, "
    "full_combined.",
)
@click.option(
    "--workload",
    type=click.Choice(["mini", "laptop", "moderation", "moderation-laptop"]),
    default=None,
    help="Named sizes: mini (CI-sized) or laptop (gpt-oss-20b's shapes, the 12 GB "
    "20b-shape model, 600-token policy, 64-token texts, 128 reasoning tokens); "
    "moderation / moderation-laptop: all 13 openai-moderation categories per text "
    "(one label, 13 separate labels, the text once against all 13 with no cue, the cheap "
    "path, full reasoning combined; --variants picks some) on "
    "the mini / 20b-shape model; options given explicitly win.",
)
@click.option(
    "--policies",
    "n_policies",
    type=int,
    default=None,
    help="Multi-policy workload instead: N policies x --n texts (pairs/s next to the "
    "single-policy labels/s, the roofline, and the engine's prefix evaluations).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def bench(
    model: str | None,
    synth: str | None,
    policy_tokens: int,
    text_tokens: int,
    output_tokens: int,
    n: int,
    parallel: int,
    threads: int | None,
    gpu_layers: str,
    flash_attn: str,
    baseline_n: int | None,
    variants: str,
    workload: str | None,
    n_policies: int | None,
    as_json: bool,
) -> None:
    """Benchmark classification throughput on one synthetic workload.

    Variants: (a) cold loop (state reset per text), (b) llama-cpp-python's own loop with
    its automatic prefix reuse, (c) edge_guard sequential with the policy prefix state,
    (d) edge_guard with parallel sequences; plus a roofline from llama.cpp's own rates.
    """
    from click.core import ParameterSource

    from edge_guard.bench.core import ALL_VARIANTS, BenchConfig, format_table, run_bench
    from edge_guard.bench.workloads import apply_workload
    from edge_guard.errors import EdgeGuardError

    ctx = click.get_current_context()
    given = {k for k in ctx.params if ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE}
    p = apply_workload(workload, ctx.params, given)
    synth, policy_tokens, text_tokens, output_tokens, n, baseline_n, variants = (
        p[k]
        for k in (
            "synth",
            "policy_tokens",
            "text_tokens",
            "output_tokens",
            "n",
            "baseline_n",
            "variants",
        )
    )

    if model and synth:
        raise EdgeGuardError("give --model or --synth, not both")
    if p.get("moderation_set"):  # every category of a set per text: bench/moderation.py
        from edge_guard.bench.moderation import moderation_cli

        return moderation_cli(p, as_json, lambda m: click.echo(f"bench: {m}", err=True))
    if flash_attn != "auto":
        raise EdgeGuardError("--flash-attn applies to --workload moderation / moderation-laptop")
    chosen = tuple(v.strip() for v in variants.split(",") if v.strip())
    unknown = [v for v in chosen if v not in ALL_VARIANTS]
    if unknown:
        raise EdgeGuardError(f"unknown variant {unknown[0]!r} (choose {', '.join(ALL_VARIANTS)})")
    sizes = {
        "--policy-tokens": policy_tokens,
        "--text-tokens": text_tokens,
        "--output-tokens": output_tokens,
        "--n": n,
        "--parallel": parallel,
    }
    for name, value in sizes.items():
        if value < 1:
            raise EdgeGuardError(f"{name} must be at least 1, got {value}")
    if synth:
        path = str(synth_model_path(synth))
    else:
        from edge_guard.registry import resolve

        path = str(resolve(model).path)
    gpu: int | str = gpu_layers if gpu_layers == "auto" else int(gpu_layers)
    if n_policies is not None:  # N policies x T texts: bench/multi.py
        from edge_guard.bench.multi import MultiBenchConfig, format_multi_table, run_multi_bench

        if n_policies < 1:
            raise EdgeGuardError(f"--policies must be at least 1, got {n_policies}")
        mcfg = MultiBenchConfig(
            n_policies=n_policies,
            n=n,
            policy_tokens=policy_tokens,
            text_tokens=text_tokens,
            output_tokens=output_tokens,
            parallel=parallel,
            threads=threads,
            gpu_layers=gpu,
            roofline_repeats=p.get("roofline_repeats", 3),
        )
        mreport = run_multi_bench(
            mcfg, path, progress=lambda m: click.echo(f"bench: {m}", err=True)
        )
        click.echo(json.dumps(mreport, indent=2) if as_json else format_multi_table(mreport))
        return
    cfg = BenchConfig(
        model=model,
        synth=synth,
        policy_tokens=policy_tokens,
        text_tokens=text_tokens,
        output_tokens=output_tokens,
        n=n,
        parallel=parallel,
        threads=threads,
        gpu_layers=gpu,
        baseline_n=baseline_n or None,
        variants=chosen,
        roofline_repeats=p.get("roofline_repeats", 3),
        roofline_steps=p.get("roofline_steps"),
        workload=workload,
    )

    def progress(msg: str) -> None:
        click.echo(f"bench: {msg}", err=True)

    report = run_bench(cfg, path, progress=progress)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(format_table(report))
