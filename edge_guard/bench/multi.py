"""`edge-guard bench --policies N`: N policies × T texts (separate mode) against one policy.

One engine, one synthetic workload: N distinct policies of `policy_tokens` tokens and T
texts of `text_tokens` tokens, exactly `output_tokens` generated per prompt. Timed, on the
same engine, one after the other from a reset state:

- ``single``: the T texts under the first policy (labels/s, the reference);
- ``multi``: every (text, policy) pair, N × T requests interleaved text by text, submitted
  at once (pairs/s), as `classify_loop` does for a set.

Reported next to each other with the roofline (llama.cpp's own rates, `roofline.measure_roofline`)
for the multi workload, ``N * prefix_s + N * T * (suffix / suffix_tok_s + output /
gen_tok_s)``, and the engine's `prefix_evals` counter per variant: a prefix evaluated
twice in a run shows as multi's count above N. Goal: pairs/s ≥ 0.8 × single labels/s.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from edge_guard.bench.core import Progress, synthetic_text
from edge_guard.bench.roofline import measure_roofline
from edge_guard.bench.variants import round_up, variant_row
from edge_guard.defaults import DEFAULT_PARALLEL
from edge_guard.engine.engine import Engine, GenerationRequest
from edge_guard.engine.sampling import SamplingConfig
from edge_guard.registry.load_guard import check_load
from edge_guard.sanitize import term_line

GOAL = 0.8  # pairs/s over single-policy labels/s


@dataclass
class MultiBenchConfig:
    n_policies: int = 3
    n: int = 32  # texts
    policy_tokens: int = 600
    text_tokens: int = 64
    output_tokens: int = 16
    parallel: int = DEFAULT_PARALLEL
    threads: int | None = None
    gpu_layers: int | str = "auto"
    seed: int = 0
    roofline_repeats: int = 3


def multi_workload(
    engine: Engine, cfg: MultiBenchConfig
) -> tuple[list[list[GenerationRequest]], list[int]]:
    """(requests[text][policy], prefix length per policy): distinct policies and texts."""
    encode = engine.vocab.encoder.encode
    policies = [
        synthetic_text(encode, cfg.policy_tokens, cfg.seed + 10_000 * (p + 1))
        for p in range(cfg.n_policies)
    ]
    texts = [synthetic_text(encode, cfg.text_tokens, cfg.seed + 1 + i) for i in range(cfg.n)]
    sampling = SamplingConfig(max_tokens=cfg.output_tokens)
    reqs: list[list[GenerationRequest]] = []
    prefix_lens = [0] * cfg.n_policies
    for text in texts:
        row = []
        for p, policy in enumerate(policies):
            prompt = engine.renderer.render(policy, text)
            prefix_lens[p] = prompt.prefix_len
            row.append(
                GenerationRequest(
                    prompt.token_ids,
                    sampling,
                    prefix_len=prompt.prefix_len,
                    min_tokens=cfg.output_tokens,
                )
            )
        reqs.append(row)
    return reqs, prefix_lens


def _timed_run(
    engine: Engine, reqs: list[GenerationRequest], width: int
) -> tuple[float, float, int, dict[str, int]]:
    """(wall s, cpu s, output tokens, engine stats delta) for `reqs` submitted at once."""
    import time

    engine.reset_state()
    before = dict(engine.stats)
    t0, c0 = time.perf_counter(), time.process_time()
    n_out = 0
    for _i, resp in engine.generate_many(reqs, n_parallel=width):
        n_out += len(resp.output_token_ids)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    delta = {k: engine.stats.get(k, 0) - before.get(k, 0) for k in engine.stats}
    delta["max_active"] = engine.stats.get("max_active", 0)
    return wall, cpu, n_out, delta


def run_multi_bench(
    cfg: MultiBenchConfig, model_path: str, progress: Progress | None = None
) -> dict[str, Any]:
    """Time the single-policy and the multi-policy workloads and the roofline (JSON-ready)."""
    say = progress or (lambda _msg: None)
    probe = Engine(
        model_path,
        load_check=check_load,
        n_ctx=512,
        n_parallel=1,
        n_threads=cfg.threads,
        n_gpu_layers=cfg.gpu_layers,
        prefix_snapshots=False,
    )
    reqs, prefix_lens = multi_workload(probe, cfg)
    probe.close()
    width = max(1, cfg.parallel)
    suffix = max(len(r.prompt_ids) - (r.prefix_len or 0) for row in reqs for r in row)
    n_ctx = round_up(sum(prefix_lens) + width * (suffix + cfg.output_tokens) + 64, 256)
    engine = Engine(
        model_path,
        load_check=check_load,
        n_ctx=n_ctx,
        n_parallel=width,
        n_threads=cfg.threads,
        n_gpu_layers=cfg.gpu_layers,
        prefix_snapshots=False,
        max_prefixes=max(cfg.n_policies, 1),
    )
    single = [row[0] for row in reqs]
    pairs = [r for row in reqs for r in row]
    try:
        say(f"single policy: {len(single)} texts")
        s_wall, s_cpu, s_out, s_stats = _timed_run(engine, single, width)
        say(f"{cfg.n_policies} policies: {len(pairs)} (text, policy) pairs")
        m_wall, m_cpu, m_out, m_stats = _timed_run(engine, pairs, width)
        say("roofline: llama.cpp prompt and generation rates")
        roof = measure_roofline(
            engine,
            single[: min(width, len(single))],
            cfg.output_tokens,
            repeats=cfg.roofline_repeats,
        )
        info = {
            "n_ctx": engine.n_ctx,
            "n_threads": engine.n_threads,
            "max_prefixes": engine.max_prefixes,
            "gpu_layers": engine.gpu_layers,
        }
    finally:
        engine.close()
    mean_suffix = sum(len(r.prompt_ids) - (r.prefix_len or 0) for r in pairs) / len(pairs)
    n_out = cfg.output_tokens

    def ideal(r: dict[str, float], n_prefixes: int, n_prompts: int) -> float:
        per_prefix = r["prefix_s"] * (sum(prefix_lens) / len(prefix_lens)) / roof["prefix_tokens"]
        return n_prefixes * per_prefix + n_prompts * (
            mean_suffix / r["suffix_tok_s"] + n_out / r["gen_tok_s"]
        )

    prompt_single = sum(len(r.prompt_ids) for r in single)
    prompt_pairs = sum(len(r.prompt_ids) for r in pairs)
    results = {
        "single": {
            **variant_row(len(single), s_wall, s_cpu, prompt_single, s_out),
            "engine_stats": s_stats,
        },
        "multi": {
            **variant_row(len(pairs), m_wall, m_cpu, prompt_pairs, m_out),
            "engine_stats": m_stats,
        },
        "roofline_single": variant_row(
            len(single),
            ideal(roof, 1, len(single)),
            ideal(roof["cpu"], 1, len(single)),
            prompt_single,
            len(single) * n_out,
        ),
        "roofline_multi": variant_row(
            len(pairs),
            ideal(roof, cfg.n_policies, len(pairs)),
            ideal(roof["cpu"], cfg.n_policies, len(pairs)),
            prompt_pairs,
            len(pairs) * n_out,
        ),
    }
    single_rate = results["single"]["labels_per_s"]
    ratio = results["multi"]["labels_per_s"] / single_rate if single_rate else None
    # the same from process CPU time (robust on a busy machine with --threads 1)
    cpu_ratio = (len(pairs) / m_cpu) / (len(single) / s_cpu) if m_cpu > 0 and s_cpu > 0 else None
    return {
        "config": asdict(cfg),
        "model": model_path,
        "workload": {
            "policies": cfg.n_policies,
            "texts": cfg.n,
            "pairs": len(pairs),
            "prefix_tokens": prefix_lens,
            "mean_suffix_tokens": mean_suffix,
            "output_tokens": n_out,
        },
        "engine": info,
        "rates": roof,
        "results": results,
        "pairs_per_s_over_single_labels_per_s": ratio,
        "cpu_ratio": cpu_ratio,
        "goal": GOAL,
        "meets_goal": None if ratio is None else ratio >= GOAL,
        "prefix_evals": {
            "single": s_stats.get("prefix_evals"),
            "multi": m_stats.get("prefix_evals"),
        },
        "prefix_evaluated_twice": (
            m_stats.get("prefix_evals", 0) > cfg.n_policies or s_stats.get("prefix_evals", 0) > 1
        ),
    }


def format_multi_table(report: dict[str, Any]) -> str:
    """Plain-text table: single vs multi vs rooflines, the ratio and the prefix counts."""
    w, res = report["workload"], report["results"]
    lines = [
        f"model: {term_line(report['model'])}",
        f"workload: {w['policies']} policies x {w['texts']} texts = {w['pairs']} pairs; prefixes "
        f"{w['prefix_tokens']} tokens, suffix {w['mean_suffix_tokens']:.0f} tokens, "
        f"{w['output_tokens']} output tokens; threads {report['engine']['n_threads']}",
        "",
        f"{'variant':34} {'prompts':>8} {'seconds':>9} {'cpu s':>9} {'labels/s':>9} {'prefix evals':>13}",
    ]
    names = {
        "single": "single policy (labels/s)",
        "multi": f"{w['policies']} policies (pairs/s)",
        "roofline_single": "roofline, single policy",
        "roofline_multi": f"roofline, {w['policies']} policies",
    }
    for key, label in names.items():
        r = res[key]
        evals = r.get("engine_stats", {}).get("prefix_evals", "")
        lines.append(
            f"{label:34} {r['n']:>8} {r['seconds']:>9.2f} {r['cpu_seconds']:>9.2f} "
            f"{r['labels_per_s']:>9.2f} {evals!s:>13}"
        )
    ratio = report["pairs_per_s_over_single_labels_per_s"]
    rm, rs = res["roofline_multi"]["labels_per_s"], res["roofline_single"]["labels_per_s"]
    lines += [
        "",
        f"pairs/s / single labels/s = {ratio:.2f} (goal >= {report['goal']}: "
        f"{'met' if report['meets_goal'] else 'NOT met'}); roofline ratio {rm / rs:.2f}"
        if ratio is not None
        else "no single-policy rate",
        f"from CPU time: {report['cpu_ratio']:.2f}" if report.get("cpu_ratio") else "",
        f"multi / its roofline = {res['multi']['labels_per_s'] / rm:.2f}" if rm else "",
        f"prefix evaluated twice: {'YES' if report['prefix_evaluated_twice'] else 'no'} "
        f"(prefix_evals: single {report['prefix_evals']['single']}, multi "
        f"{report['prefix_evals']['multi']} for {w['policies']} policies)",
    ]
    return "\n".join(x for x in lines if x is not None)
