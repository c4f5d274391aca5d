"""`edge-guard bench`: labels/s of four ways to classify many texts under one policy, vs a roofline.

One run, one model, one synthetic workload (a policy of `policy_tokens` tokens, `n` texts of
`text_tokens` tokens, exactly `output_tokens` generated per text — stop tokens are suppressed
until then, the same way in every variant):

- (a) ``cold``: edge_guard's engine with its state reset before every text;
- (b) ``llama_cpp``: a plain llama-cpp-python loop, ``Llama.create_completion(token_ids,
  temperature=0)``, relying on its automatic longest-common-prefix reuse;
- (c) ``sequential``: edge_guard, policy prefix evaluated once, one text at a time;
- (d) ``parallel``: edge_guard, prefix once, `parallel` texts decoded together;
- (d') ``threads``: the same texts submitted by `parallel` threads at once, each one text
  at a time (the engine loop batches callers together: a server's workload).

The roofline is the time llama.cpp alone would need, from its own rates measured in the
same run on the same context (no sampling, parsing or Python in the timed calls):
``prefix_s + n * suffix_tokens / suffix_rate + n * output_tokens / gen_rate``, where
`prefix_s` is the measured time to evaluate the policy prefix once, `suffix_rate` the
prompt rate evaluating `parallel` texts' suffixes in one batch on top of the prefix, and
`gen_rate` the generation rate decoding `parallel` sequences one token each per step.

This module builds the workload, runs the variants and assembles the report; the timed
loops themselves and a variant's figures are `bench.variants`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from edge_guard.bench import onepass as bench_onepass
from edge_guard.bench.roofline import ROOFLINE_DEFINITION, measure_roofline
from edge_guard.bench.table import STEADY_DEFINITION
from edge_guard.bench.table import format_table as _format_table
from edge_guard.bench.variants import (
    differing,
    engine_loop,
    extrapolated,
    llama_cpp_loop,
    round_up,
    variant_row,
)
from edge_guard.defaults import DEFAULT_PARALLEL
from edge_guard.engine.engine import Engine, GenerationRequest
from edge_guard.engine.sampling import SamplingConfig
from edge_guard.registry.load_guard import check_load

VARIANTS = ("cold", "llama_cpp", "sequential", "parallel", "threads")
ALL_VARIANTS = (*VARIANTS, *bench_onepass.ONE_PASS_VARIANTS)  # (e)-(g): bench/onepass.py
LABELS = {
    "cold": "(a) cold loop",
    "llama_cpp": "(b) llama-cpp-python loop",
    "sequential": "(c) edge_guard sequential",
    "parallel": "(d) edge_guard parallel",
    "threads": "(d') edge_guard, N threads submitting",
    "roofline": "roofline (llama.cpp rates)",
    **bench_onepass.LABELS,
}
_WORDS = (
    "policy",
    "content",
    "user",
    "message",
    "review",
    "safety",
    "allowed",
    "request",
    "example",
    "harmful",
    "context",
    "label",
    "violation",
    "rule",
    "text",
    "model",
    "answer",
    "reason",
    "public",
    "private",
    "account",
    "service",
    "data",
    "report",
    "threat",
    "language",
    "spam",
    "offer",
    "click",
    "link",
    "price",
    "free",
    "great",
    "product",
    "people",
    "work",
)

Progress = Callable[[str], None]


@dataclass
class BenchConfig:
    model: str | None = None  # model reference (path, id, synth:PRESET)
    synth: str | None = None  # synthetic preset (written once into the data dir)
    policy_tokens: int = 1000
    text_tokens: int = 64
    output_tokens: int = 16
    n: int = 200
    parallel: int = DEFAULT_PARALLEL
    threads: int | None = None
    gpu_layers: int | str = "auto"
    baseline_n: int | None = 10  # texts timed for (a), (b), (c), scaled to `n`; None: all
    variants: tuple[str, ...] = VARIANTS
    seed: int = 0
    roofline_repeats: int = 3  # best of N per roofline phase (1 for the slow laptop workload)
    roofline_steps: int | None = None  # decode steps timed for gen_tok_s (None: output_tokens)
    workload: str | None = None  # the named workload the sizes came from (bench/workloads.py)


def synthetic_text(encode: Callable[[str], list[int]], n_tokens: int, seed: int) -> str:
    """Deterministic English-like text of (almost always exactly) `n_tokens` tokens."""
    rng = random.Random(seed)
    words: list[str] = []
    while len(encode(" ".join(words))) < n_tokens:
        words.extend(rng.choice(_WORDS) for _ in range(max(1, (n_tokens - len(words)) // 2)))
    text = " ".join(words)
    while text and len(encode(text)) > n_tokens:
        text = text[:-1].rstrip()
    while len(encode(text)) < n_tokens and len(text) < 8 * n_tokens:
        text += "."
    return text


def workload(engine: Engine, cfg: BenchConfig) -> tuple[list[GenerationRequest], int]:
    """(requests, prefix_len): one policy, `n` distinct texts, fixed-length outputs."""
    encode = engine.vocab.encoder.encode
    policy = synthetic_text(encode, cfg.policy_tokens, cfg.seed)
    sampling = SamplingConfig(max_tokens=cfg.output_tokens)
    reqs, prefix_len = [], 0
    for i in range(cfg.n):
        text = synthetic_text(encode, cfg.text_tokens, cfg.seed + 1 + i)
        prompt = engine.renderer.render(policy, text)
        prefix_len = prompt.prefix_len
        reqs.append(
            GenerationRequest(
                prompt.token_ids,
                sampling,
                prefix_len=prompt.prefix_len,
                min_tokens=cfg.output_tokens,
            )
        )
    return reqs, prefix_len


def run_bench(
    cfg: BenchConfig, model_path: str, progress: Progress | None = None
) -> dict[str, Any]:
    """Run every variant and the roofline; returns a JSON-ready dict."""
    say = progress or (lambda _msg: None)
    from edge_guard.engine import llama_runtime as rt

    probe = Engine(
        model_path,
        load_check=check_load,
        n_ctx=512,
        n_parallel=1,
        n_threads=cfg.threads,
        n_gpu_layers=cfg.gpu_layers,
        prefix_snapshots=False,
    )
    reqs, prefix_len = workload(probe, cfg)
    stops, threads = sorted(probe.stop_ids), probe.n_threads
    probe.close()
    suffix = max(len(r.prompt_ids) for r in reqs) - prefix_len
    width = max(1, cfg.parallel)
    n_ctx = round_up(prefix_len + width * (suffix + cfg.output_tokens) + 64, 256)
    base_n = min(cfg.n, cfg.baseline_n or cfg.n)
    results: dict[str, dict[str, Any]] = {}
    outputs: dict[str, list[list[int]]] = {}
    prompt_total = sum(len(r.prompt_ids) for r in reqs)
    if "llama_cpp" in cfg.variants:  # first: its own copy of the model, freed afterwards
        say(f"{LABELS['llama_cpp']}: {base_n} texts")
        llama_ctx = prefix_len + suffix + cfg.output_tokens + 64
        times, n_out_b, outputs["llama_cpp"] = llama_cpp_loop(
            model_path,
            reqs[:base_n],
            cfg.output_tokens,
            cfg.gpu_layers,
            llama_ctx,
            stops,
            threads,
        )
        results["llama_cpp"] = extrapolated(times, cfg.n, n_out_b, prompt_total, first_apart=True)
    engine = Engine(
        model_path,
        load_check=check_load,
        n_ctx=n_ctx,
        n_parallel=width,
        n_threads=cfg.threads,
        n_gpu_layers=cfg.gpu_layers,
        prefix_snapshots=False,
    )
    try:
        for name in ("cold", "sequential", "parallel", "threads"):
            if name not in cfg.variants:
                continue
            todo = reqs if name in ("parallel", "threads") else reqs[:base_n]
            say(f"{LABELS[name]}: {len(todo)} texts")
            results[name], outputs[name] = engine_loop(
                engine, todo, name, width, cfg.n, prompt_total
            )
            say(f"{LABELS[name]}: {results[name]['labels_per_hour']:.0f} labels/hour")
        results.update(
            bench_onepass.run_variants(engine, reqs, cfg.variants, width, variant_row, say)
        )
        header_len = len(bench_onepass.score_requests(engine, reqs[:1])[0].prompt_ids) - len(
            reqs[0].prompt_ids
        )
        say("roofline: llama.cpp prompt and generation rates")
        steps = min(cfg.output_tokens, cfg.roofline_steps or cfg.output_tokens)
        roof = measure_roofline(
            engine, reqs[: min(width, len(reqs))], steps, repeats=cfg.roofline_repeats
        )
        info = {
            "n_ctx": engine.n_ctx,
            "n_threads": engine.n_threads,
            "flash_attn": str(engine.flash_attn),
            "gpu_layers": engine.gpu_layers,
            "build": rt.build_info(),
        }
    finally:
        engine.close()
    n_out = cfg.output_tokens
    mean_suffix = sum(len(r.prompt_ids) - prefix_len for r in reqs) / len(reqs)

    def ideal(r: dict[str, float]) -> float:
        return r["prefix_s"] + cfg.n * (mean_suffix / r["suffix_tok_s"] + n_out / r["gen_tok_s"])

    results["roofline"] = variant_row(
        cfg.n,
        ideal(roof),
        ideal(roof["cpu"]),
        prompt_total,
        cfg.n * n_out,
        prefix_s=roof["prefix_s"],
    )
    if "one_pass" in results:
        results["one_pass_roofline"] = bench_onepass.roofline_row(
            roof, reqs, prefix_len, header_len, variant_row
        )
    ref = outputs.get("cold") or outputs.get("sequential")
    for name, outs in outputs.items():
        differ = None if ref is None else differing(outs, ref, name)
        results[name]["outputs_match_cold"] = None if differ is None else differ == 0
        results[name]["outputs_differing"] = differ  # of min(len(outs), len(ref)) compared
    ratios: dict[str, float | None] = {}
    cpu_ratios: dict[str, float | None] = {}
    steady_ratios: dict[str, float | None] = {}
    d = results.get("parallel") or {}
    for k in ("cold", "llama_cpp", "sequential", "threads", "roofline"):
        other = results.get(k)
        key = f"parallel/{k}"
        ratios[key] = other["seconds"] / d["seconds"] if d and other else None
        cpu_ratios[key] = other["cpu_seconds"] / d["cpu_seconds"] if d and other else None
        steady_ratios[key] = other["steady_seconds"] / d["steady_seconds"] if d and other else None
    return {
        "config": asdict(cfg),
        "model": model_path,
        "workload": {
            "prefix_tokens": prefix_len,
            "mean_suffix_tokens": mean_suffix,
            "output_tokens": n_out,
            "n": cfg.n,
            "baseline_n": base_n,
        },
        "engine": info,
        "rates": roof,
        "results": results,
        "ratios": ratios,  # labels/s of (d) over labels/s of the other
        "cpu_ratios": cpu_ratios,  # the same from process CPU time
        "steady_ratios": steady_ratios,  # the same once the prefix is resident
        "one_pass_ratios": bench_onepass.ratios(results),  # labels/s over (d); over roofline
        "one_pass_steady_ratios": bench_onepass.ratios(results, "steady_seconds"),
        "roofline_definition": ROOFLINE_DEFINITION,
        "steady_definition": STEADY_DEFINITION,
        "one_pass_roofline_definition": bench_onepass.ROOFLINE_DEFINITION,
    }


def format_table(report: dict[str, Any]) -> str:
    """The report as a plain-text table (`bench/table.py`)."""
    return _format_table(report, VARIANTS, LABELS)
