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
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from edge_guard.bench import onepass as bench_onepass
from edge_guard.bench.roofline import ROOFLINE_DEFINITION, measure_roofline
from edge_guard.bench.table import STEADY_DEFINITION
from edge_guard.bench.table import format_table as _format_table
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
        times, n_out_b, outputs["llama_cpp"] = _llama_cpp_loop(
            model_path, reqs[:base_n], cfg, llama_ctx, stops, threads
        )
        results["llama_cpp"] = _extrapolated(times, cfg.n, n_out_b, prompt_total, first_apart=True)
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
            results[name], outputs[name] = _engine_loop(
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
        differ = None if ref is None else _differing(outs, ref, name)
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


def _differing(outs: list[list[int]], ref: list[list[int]], name: str) -> int:
    """How many outputs differ from the reference's greedy tokens. llama-cpp-python's loop
    exposes the tokens it evaluated (all but the last) and may run past max_tokens to
    complete a UTF-8 character."""
    short = 1 if name == "llama_cpp" else 0
    return sum(
        not (o[: len(r)] == r[: len(o)] and len(o) >= len(r) - short)
        for o, r in zip(outs, ref, strict=False)
    )


def variant_row(
    n: int,
    seconds: float,
    cpu_s: float,
    prompt_tokens: int,
    output_tokens: int,
    timed: int | None = None,
    measured_s: float | None = None,
    prefix_s: float = 0.0,
) -> dict[str, Any]:
    """One variant's figures for `n` texts; `timed` < n: the seconds are extrapolated.

    `prefix_s`: the part of `seconds` spent evaluating the policy prefix once; the
    ``steady_*`` figures leave it out (labels/hour once the prefix is resident)."""
    steady = seconds - prefix_s
    return {
        "n": n,
        "timed_texts": n if timed is None else timed,
        "seconds": seconds,
        "cpu_seconds": cpu_s,
        "measured_seconds": seconds if measured_s is None else measured_s,
        "labels_per_s": n / seconds if seconds > 0 else 0.0,
        "labels_per_hour": 3600 * n / seconds if seconds > 0 else 0.0,
        "prompt_tokens": prompt_tokens,
        "output_tokens": output_tokens,
        "tokens_per_s": (prompt_tokens + output_tokens) / seconds if seconds > 0 else 0.0,
        "output_tokens_per_s": output_tokens / seconds if seconds > 0 else 0.0,
        "prefix_seconds": prefix_s,
        "steady_seconds": steady,
        "steady_labels_per_hour": 3600 * n / steady if steady > 0 else 0.0,
    }


def _extrapolated(
    times: list[tuple[float, float]], n: int, n_out: int, prompt_tokens: int, first_apart: bool
) -> dict[str, Any]:
    """A loop timed per text, (wall, cpu) s, on len(times) of n equal-sized texts, scaled to n.

    `first_apart`: the first text also paid for something once (the first call evaluates
    the whole prefix), so only the others are averaged."""
    k = len(times)

    def scale(xs: list[float]) -> float:
        if first_apart and k > 1:
            return xs[0] + sum(xs[1:]) / (k - 1) * (n - 1)
        return sum(xs) / k * n

    wall, cpu = [t[0] for t in times], [t[1] for t in times]
    # the first text's extra time is its prefix evaluation
    prefix_s = max(0.0, wall[0] - sum(wall[1:]) / (k - 1)) if first_apart and k > 1 else 0.0
    return variant_row(
        n,
        scale(wall),
        scale(cpu),
        prompt_tokens,
        round(n_out * n / k),
        timed=k,
        measured_s=sum(wall),
        prefix_s=prefix_s,
    )


Outputs = list[list[int]]
Times = list[tuple[float, float]]


def _engine_loop(
    engine: Engine,
    reqs: list[GenerationRequest],
    name: str,
    width: int,
    n_total: int,
    prompt_total: int,
) -> tuple[dict[str, Any], Outputs]:
    """Run `reqs` through the engine. The one-text-at-a-time loops are timed per text and
    scaled to `n_total` texts; the parallel variant must be given (and timed on) them all."""
    outs: list[list[int]] = [[] for _ in reqs]
    times: list[tuple[float, float]] = []
    engine.reset_state()
    prefix_wall, prefix_cpu = 0.0, 0.0
    if name in ("parallel", "threads"):  # the prefix timed apart (the steady figures)
        prefix_wall, prefix_cpu = warm_prefix(engine, reqs)
    clock = _Clock()
    if name == "cold":
        for i, req in enumerate(reqs):
            engine.reset_state()
            for _, resp in engine.generate_many([req], n_parallel=1):
                outs[i] = resp.output_token_ids
            times.append(clock.lap())
    elif name == "threads":
        _submit_from_threads(engine, reqs, width, outs)
    else:
        for i, resp in engine.generate_many(reqs, n_parallel=1 if name == "sequential" else width):
            outs[i] = resp.output_token_ids
            times.append(clock.lap())  # sequential: one text each (the first also the prefix)
    n_out = sum(len(o) for o in outs)
    if name in ("parallel", "threads"):
        wall, cpu = clock.total()
        return variant_row(
            len(reqs),
            prefix_wall + wall,
            prefix_cpu + cpu,
            prompt_total,
            n_out,
            prefix_s=prefix_wall,
        ), outs
    return _extrapolated(times, n_total, n_out, prompt_total, first_apart=name != "cold"), outs


def warm_prefix(engine: Engine, reqs: list[GenerationRequest]) -> tuple[float, float]:
    """Make the workload's policy prefix resident; (wall, cpu) seconds it took."""
    clock = _Clock()
    engine.warm_prefix(reqs[0])
    return clock.total()


def _submit_from_threads(
    engine: Engine, reqs: list[GenerationRequest], n_threads: int, outs: Outputs
) -> None:
    """`n_threads` callers at once, each generating its share of `reqs` one at a time."""
    import threading

    def caller(k: int) -> None:
        for i in range(k, len(reqs), n_threads):
            outs[i] = engine.generate(reqs[i]).output_token_ids

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


class _Clock:
    """Wall and process-CPU time, per lap and in total."""

    def __init__(self) -> None:
        self.t0 = self.last = (time.perf_counter(), time.process_time())

    def lap(self) -> tuple[float, float]:
        now = (time.perf_counter(), time.process_time())
        lap = (now[0] - self.last[0], now[1] - self.last[1])
        self.last = now
        return lap

    def total(self) -> tuple[float, float]:
        return time.perf_counter() - self.t0[0], time.process_time() - self.t0[1]


def _llama_cpp_loop(
    path: str,
    reqs: list[GenerationRequest],
    cfg: BenchConfig,
    n_ctx: int,
    stop_ids: list[int],
    threads: int,
) -> tuple[Times, int, Outputs]:
    """Per-text (wall, cpu) seconds, output tokens and outputs of llama-cpp-python's loop."""
    import numpy as np
    from llama_cpp import Llama, LogitsProcessorList

    from edge_guard.engine import llama_runtime as rt

    gpu = rt.resolve_gpu_layers(cfg.gpu_layers)
    llm = Llama(
        model_path=path,
        n_ctx=round_up(n_ctx, 256),
        n_batch=512,
        n_ubatch=512,
        n_threads=threads,
        n_threads_batch=threads,
        n_gpu_layers=gpu,
        flash_attn=gpu != 0,
        swa_full=True,
        verbose=False,
    )
    stops = np.array(stop_ids, dtype=np.int64)

    def no_stop(_ids: Any, scores: Any) -> Any:
        scores[stops] = -np.inf  # exactly max_tokens out, as min_tokens does in edge_guard
        return scores

    processors = LogitsProcessorList([no_stop])
    outs: list[list[int]] = []
    times: list[tuple[float, float]] = []
    n_out = 0
    clock = _Clock()
    for req in reqs:
        done = llm.create_completion(
            list(req.prompt_ids),
            max_tokens=cfg.output_tokens,
            temperature=0.0,
            repeat_penalty=1.0,
            logits_processor=processors,
        )
        times.append(clock.lap())
        k = int(done["usage"]["completion_tokens"])  # type: ignore[index]
        n_out += k
        start = len(req.prompt_ids)
        outs.append([int(t) for t in llm.input_ids[start : min(start + k - 1, llm.n_tokens)]])
    llm.close()
    return times, n_out, outs


def round_up(n: int, k: int) -> int:
    return (n + k - 1) // k * k


def format_table(report: dict[str, Any]) -> str:
    """The report as a plain-text table (`bench/table.py`)."""
    return _format_table(report, VARIANTS, LABELS)
