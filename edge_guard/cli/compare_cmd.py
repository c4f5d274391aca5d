"""`edge-guard compare`: one dataset through several configs, reported against the first.

Configs are `MODEL[,key=value...]` (keys: the shared classify options, e.g. style=,
effort=, max_tokens=, backend=server,url=...; name=LABEL), separated by `;` in
`--configs` or given as repeated `--config`; `--styles a,b` makes one config per prompt
style. Every config is a resumable named run, so rerunning the command is free.
"""

from __future__ import annotations

import shlex
import sys
from typing import Any

import click

from edge_guard.cli.multi_opts import compare_set, policy_options, policy_set, single_label_field
from edge_guard.cli.options import classify_options, pass_opts
from edge_guard.datasets.files import SAMPLES
from edge_guard.sanitize import term, term_json, term_line

CONFIG_HELP = (
    "Configs to compare, separated by ';' — each MODEL[,key=value...] with keys style, effort, "
    "date, max_tokens, temperature, seed, ctx, gpu_layers, threads, parallel, backend, url, "
    "server_kind, api_key_env, concurrency, timeout, name (a label). The first is the reference. "
    "Example: 'gpt-oss-safeguard-20b:f16;gpt-oss-safeguard-20b:q4_k_m'."
)


def _err(msg: str) -> None:
    click.echo(term(msg), err=True)


class _Progress:
    """One line when a config starts, one per 10% of its items, one when it ends."""

    def __init__(self, n_configs: int) -> None:
        self.n, self.total, self.last = n_configs, 0, -1

    def start(self, k: int, label: str, plan: Any) -> None:
        self.total, self.last = plan.n_items, -1
        state = (
            f"resuming: {len(plan.done)} done, {len(plan.todo)} to do" if plan.resumed else "new"
        )
        _err(f"[{k + 1}/{self.n}] {label}: {plan.n_items} items ({state}) — run {plan.name}")
        for msg in plan.messages() if k == 0 else []:
            _err(f"warning: {msg}")

    def result(self, _k: int, p: Any, *_: Any) -> None:
        pct = int(100 * p.done / max(1, self.total)) // 10 * 10
        if pct != self.last:
            self.last = pct
            _err(
                f"  {p.done}/{self.total} ({pct}%) {p.labels_per_s:.2f} labels/s · "
                f"{p.tokens_per_s:.0f} tok/s{f' · {p.cached} cached' if p.cached else ''}"
            )


@click.command()
@click.option(
    "--dataset",
    "-d",
    required=True,
    help="A .jsonl/.csv/.tsv/.parquet file, or a pulled name like toxic-chat.",
)
@policy_options(mode=False)
@click.option("--configs", "configs_opt", default=None, metavar="'REF;CAND...'", help=CONFIG_HELP)
@click.option(
    "--config",
    "config_list",
    multiple=True,
    metavar="CONFIG",
    help="One config (repeat it; the first is the reference). Combines with --configs.",
)
@click.option(
    "--styles",
    default=None,
    metavar="STYLE,STYLE",
    help="Does the prompt format matter? One config per style (harmony, "
    "chat-template) for the --model (or each --config).",
)
@click.option("--out", "-o", default=None, help="Write a report: .html or .md.")
@click.option(
    "--name",
    default=None,
    help="Comparison name (default: from dataset, policy, configs; reruns resume it).",
)
@click.option("--title", default=None, help="Report title.")
@click.option("--text-field", default=None, help="Field holding the text (default: auto-detect).")
@click.option(
    "--label-field",
    multiple=True,
    help="Field holding the gold label (default: auto); with several policies "
    "POLICY=FIELD, repeated.",
)
@click.option("--id-field", default=None, help="Field holding an item id (default: auto).")
@click.option("--limit", type=int, default=None, help="Compare on at most N items.")
@click.option(
    "--sample",
    type=click.Choice(SAMPLES),
    default=None,
    help="natural: seeded random N; balanced: equal numbers per gold class.",
)
@click.option("--sample-seed", type=int, default=0, show_default=True, help="Seed for --sample.")
@click.option(
    "--resamples",
    type=int,
    default=1000,
    show_default=True,
    help="Bootstrap resamples for the intervals.",
)
@click.option(
    "--max-flips",
    type=int,
    default=50,
    show_default=True,
    help="Label flips listed per candidate in the report.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON on stdout.")
@classify_options
@pass_opts
def compare(opts: dict[str, Any]) -> None:
    """Run DATASET through every config and compare each with the first: agreement and
    Cohen's kappa (bootstrap CIs), label flips, |ΔP(violation)|, F1/P/R per config when the
    dataset has gold labels, parse/undetermined rates, speed, peak RSS, GPU memory, file size.

    \b
    edge-guard compare -d data.jsonl -p toxic_simple \\
        --configs 'gpt-oss-safeguard-20b:f16;gpt-oss-safeguard-20b:q4_k_m' -o report.html
    edge-guard compare -d data.jsonl -p toxic_simple --styles harmony,chat-template
    """
    from edge_guard.compare.config import build_configs
    from edge_guard.compare.report import build_report, format_summary, jsonable, write_report
    from edge_guard.compare.runner import run_compare

    configs_opt = opts.pop("configs_opt")
    values = ([configs_opt] if configs_opt else []) + list(opts.pop("config_list"))
    configs = build_configs(values, opts.pop("styles"))
    out, as_json, title = opts.pop("out"), opts.pop("as_json"), opts.pop("title")
    resamples, max_flips = opts.pop("resamples"), opts.pop("max_flips")
    if out is not None and not out.lower().endswith((".html", ".htm", ".md", ".markdown")):
        from edge_guard.errors import EdgeGuardError

        raise EdgeGuardError(f"--out {out}: use a .html or .md file name")
    if out is not None:  # checked before any work (--force also lets it replace a file)
        from edge_guard.cli.outfile import check_out

        check_out(out, bool(opts.get("force")))
    run_kw = {
        k: opts.pop(k)
        for k in ("name", "text_field", "label_field", "id_field", "limit", "sample", "sample_seed")
    }
    dataset = opts.pop("dataset")
    policy, multi = policy_set(opts)
    label_fields = list(run_kw.pop("label_field") or ())
    progress = _Progress(len(configs))
    if multi is not None:  # several policies: per-policy agreement/kappa/flips (e.g. mode=combined)
        return compare_set(
            dataset,
            policy,
            configs,
            opts,
            run_kw,
            label_fields,
            progress,
            as_json=as_json,
            resamples=resamples,
            out=out,
        )
    if any(dict(c.options).get("mode") == "combined" for c in configs):
        from edge_guard.errors import EdgeGuardError

        raise EdgeGuardError(
            "mode=combined needs several policies (-p a -p b) or a policy set (--set)"
        )
    run_kw["label_field"] = single_label_field(label_fields, policy)
    try:
        result = run_compare(
            dataset,
            policy,
            configs,
            base_opts=opts,
            on_start=progress.start,
            on_result=progress.result,
            door="cli",
            **run_kw,
        )
    except KeyboardInterrupt:
        _err(
            f"interrupted: finished items are saved; resume with: "
            f"{shlex.join(['edge-guard', *sys.argv[1:]])}"
        )
        sys.exit(130)
    report = build_report(
        result.store,
        result.run_names,
        labels=result.labels,
        title=title,
        n_resamples=resamples,
        max_flips=max_flips,
        plots=out is not None,
    )
    if as_json:
        click.echo(term_json(jsonable(report), default=str))
    else:
        click.echo(term(format_summary(report)))
    if out is not None:
        path = write_report(report, out)
        click.echo(f"wrote {term_line(path)}", err=as_json)
