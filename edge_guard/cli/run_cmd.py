"""`edge-guard run | eval | report | datasets`: batch runs over datasets and their evaluation.

`run` classifies a dataset as a named, resumable run (progress on stderr, Ctrl-C stops
cleanly); `eval` prints metrics with bootstrap CIs; `report` writes an HTML/Markdown
report; `datasets pull/list` fetches ToxicChat and lists local datasets.
"""

from __future__ import annotations

import json
import shlex
import sys
from typing import Any

import click

from edge_guard.cli.multi_opts import policy_options, policy_set, run_set, single_label_field
from edge_guard.cli.options import build_classifier, classify_options, db_option, pass_opts
from edge_guard.cli.outfile import check_out, force_option
from edge_guard.cli.warm_cmd import keep_alive_option
from edge_guard.conversation import TARGETS
from edge_guard.datasets.files import SAMPLES
from edge_guard.sanitize import term, term_json, term_line

LICENSE_NOTE = "ToxicChat (lmsys/toxic-chat) is licensed CC-BY-NC-4.0: non-commercial use only."


def _local(classifier: Any) -> Any:
    """`classifier`, unless it is an edge-guard server's: a named run keeps its results in
    this machine's store (a one-line error instead of a crash)."""
    client = sys.modules.get("edge_guard.backends.server_client")  # a RemoteClassifier needs it
    if client is not None and isinstance(classifier, client.RemoteClassifier):
        from edge_guard.errors import EdgeGuardError

        raise EdgeGuardError(
            "a named run keeps its results in this machine's store: run it "
            "with the local backend (--backend local), or send texts to the "
            "server with `edge-guard classify --backend server`"
        )
    return classifier


def _echo_err(msg: str, **style: Any) -> None:
    msg = term(msg)
    click.echo(click.style(msg, **style) if style else msg, err=True)


class _Progress:
    """A rich progress bar on stderr (a line per 10% when stderr is not a terminal)."""

    def __init__(self, total: int, done: int, name: str) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.total, self.bar, self.task, self.last_pct = total, None, None, -1
        if self.console.is_terminal:
            import rich.progress as rp

            self.bar = rp.Progress(
                rp.TextColumn("{task.description}", markup=False),
                rp.BarColumn(),
                rp.MofNCompleteColumn(),
                rp.TextColumn("{task.fields[rate]}", markup=False),
                rp.TimeElapsedColumn(),
                rp.TextColumn("ETA"),
                rp.TimeRemainingColumn(),
                console=self.console,
            )
            self.task = self.bar.add_task(
                term_line(name)[:40], total=total, completed=done, rate=""
            )
            self.bar.start()

    def update(self, p: Any, *_: Any) -> None:
        rate = f"{p.labels_per_s:.2f} labels/s · {p.tokens_per_s:.0f} tok/s"
        if p.cached:
            rate += f" · {p.cached} cached"
        if self.bar is not None:
            self.bar.update(self.task, completed=p.done, rate=rate)  # type: ignore[arg-type]
            return
        pct = int(100 * p.done / max(1, self.total)) // 10 * 10
        if pct != self.last_pct:
            self.last_pct = pct
            _echo_err(f"{p.done}/{self.total} ({pct}%) {rate}")

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()


@click.command()
@click.argument("dataset")
@policy_options()
@click.option(
    "--name", default=None, help="Run name (default: from dataset, policy, model, options)."
)
@click.option("--text-field", default=None, help="Field holding the text (default: auto-detect).")
@click.option(
    "--label-field",
    multiple=True,
    help="Field holding the gold label (default: auto); with several policies "
    "POLICY=FIELD, repeated (e.g. toxic_chat=toxicity).",
)
@click.option("--id-field", default=None, help="Field holding an item id (default: auto).")
@click.option(
    "--messages-field",
    default=None,
    help="Field holding a conversation: a JSON list of {role, content} "
    "(default: a 'messages' column when no --text-field).",
)
@click.option(
    "--prompt-field",
    default=None,
    help="With --response-field: judge the response in this prompt's context.",
)
@click.option("--response-field", default=None, help="Field holding the model's response.")
@click.option(
    "--target",
    type=click.Choice(TARGETS),
    default=None,
    help="Which message of a conversation to judge (default: last; assistant for "
    "--prompt-field/--response-field).",
)
@click.option("--limit", type=int, default=None, help="Run at most N items.")
@click.option(
    "--sample",
    type=click.Choice(SAMPLES),
    default=None,
    help="natural: seeded random N; balanced: equal numbers per gold class.",
)
@click.option("--sample-seed", type=int, default=None, help="Seed for --sample (default: --seed).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary (+ eval) on stdout.")
@classify_options
@keep_alive_option
@pass_opts
def run(opts: dict[str, Any]) -> None:
    """Classify every row of DATASET (.jsonl/.csv/.parquet or a pulled name like toxic-chat)
    as a named run; rerunning the same command resumes it."""
    from edge_guard.report.reference import detect_benchmark
    from edge_guard.runs.batch import evaluate_run, execute_run, plan_run

    dataset, as_json = opts.pop("dataset"), opts.pop("as_json")
    sample_seed = opts.pop("sample_seed")
    seed = opts["seed"] if sample_seed is None else sample_seed
    plan_kw = {
        k: opts.pop(k) for k in ("name", "text_field", "label_field", "id_field", "limit", "sample")
    }
    conv_kw = {
        k: opts.pop(k) for k in ("messages_field", "prompt_field", "response_field", "target")
    }
    plan_kw.update({k: v for k, v in conv_kw.items() if v is not None})
    policy, mode = policy_set(opts)
    label_fields = list(plan_kw.pop("label_field") or ())
    if mode is not None:  # several policies: one run item per (text, policy) pair
        classifier = _local(build_classifier(policy, opts))
        return run_set(
            dataset,
            classifier,
            policy,
            mode,
            label_fields=label_fields,
            plan_kw=plan_kw,
            seed=seed,
            as_json=as_json,
            progress=_Progress,
            echo_err=_echo_err,
        )
    classifier = _local(build_classifier(policy, opts))
    plan_kw["label_field"] = single_label_field(label_fields, classifier.policy.name)
    plan = plan_run(dataset, classifier, seed=seed, **plan_kw)
    if detect_benchmark(str(plan.dataset.path)) == "toxic-chat":
        _echo_err(LICENSE_NOTE, dim=True)
    for msg in plan.messages():
        _echo_err(f"warning: {msg}", fg="yellow")
    state = f"resuming: {len(plan.done)} done, {len(plan.todo)} to do" if plan.resumed else "new"
    _echo_err(f"run {term_line(plan.name)}: {plan.n_items} items ({state})")
    bar = _Progress(plan.n_items, len(plan.done), plan.name)
    try:
        summary = execute_run(plan, classifier, on_result=bar.update)
    except KeyboardInterrupt:
        bar.stop()
        n = len(classifier.store.done_indices(plan.name))
        _echo_err(
            f"interrupted: {n}/{plan.n_items} items saved in run {term_line(plan.name)}; resume with: "
            f"{shlex.join(['edge-guard', *sys.argv[1:]])}",
            fg="yellow",
        )
        sys.exit(130)
    bar.stop()
    _echo_err(
        f"done: {summary.n_done}/{summary.n_items} items ({summary.n_new} new, "
        f"{summary.n_cached} cached) in {summary.elapsed_s:.1f} s · "
        f"{summary.labels_per_s:.2f} labels/s · {summary.tokens_per_s:.0f} tok/s"
    )
    ev = (
        evaluate_run(classifier.store, plan.name)
        if any(g is not None for g in plan.golds)
        else None
    )
    if as_json:
        click.echo(term_json({"summary": summary.as_dict(), "eval": ev}))
    elif ev is not None:
        click.echo(format_eval(ev))


def format_eval(ev: dict[str, Any]) -> str:
    """The text form of `edge-guard eval`."""
    from edge_guard.runs.metrics import METRICS, TREATMENT_TITLES, TREATMENTS, VERDICTS, fmt_ci
    from edge_guard.runs.paths import format_paths

    pct = lambda x: "—" if x is None else f"{100 * x:.1f}%"  # noqa: E731
    v = ev["verdicts"]
    lines = [
        f"run {term_line(ev['run'])} — policy {term_line(ev['policy'])}, model {term_line(ev['model'])}, "
        f"{ev['n_done']}/{ev['n_items']} items ({ev['status']})",
        f"verdicts: {v['violation']} violation · {v['no_violation']} no_violation · "
        f"{v['undetermined']} undetermined ({pct(ev['undetermined_rate'])}) · parse rate "
        f"{pct(ev['parse_rate'])}",
    ]
    paths = format_paths(ev.get("paths"))  # one-pass / cascade runs
    paths += _review_lines(ev)  # review decisions: model-reviewer agreement
    src = ev.get("gold_source") or "dataset"
    src = "" if src == "dataset" else f" ({_gold_title(src)})"
    if not ev["n_labelled"]:
        return "\n".join([*lines, f"no gold labels{src} in this run: nothing to score", *paths])
    lines.append(f"gold{src}: {ev['n_labelled']} labelled, {ev['n_gold_violation']} violations")
    heads = [
        TREATMENT_TITLES[t] + (" (headline)" if t == ev["headline"] else "") for t in TREATMENTS
    ]
    w = max(26, *(len(h) + 2 for h in heads))
    lines += ["", f"{'':<10}" + "".join(f"{h:<{w}}" for h in heads)]
    for m in METRICS:
        lines.append(
            f"{m:<10}" + "".join(f"{fmt_ci(ev['treatments'][t][m]):<{w}}" for t in TREATMENTS)
        )
    lines.append(f"{'n':<10}" + "".join(f"{ev['treatments'][t]['n']:<{w}}" for t in TREATMENTS))
    conf = ev["confusion"]
    lines += ["", f"{'confusion':<20}" + "".join(f"{x:>14}" for x in VERDICTS)]
    for g in ("violation", "no_violation"):
        lines.append(f"{'gold ' + g:<20}" + "".join(f"{conf[g][x]:>14}" for x in VERDICTS))
    s = ev.get("scores") or {}
    if s.get("roc_auc") is not None:
        left = s.get("n_left_out") or 0
        why = (
            f"; {left} labelled item{'s' * (left != 1)} left out: "
            f"{s.get('n_undetermined_left_out') or 0} undetermined"
            if left
            else ""
        )
        lines.append(
            f"\nlabel scores (n={s['n']}{why}): ROC-AUC {s['roc_auc']:.3f}, AUPRC "
            f"{s['auprc']:.3f} (prevalence {s['prevalence']:.3f})"
        )
    ci = ev["ci"]
    lines.append(
        f"\n[lo, hi] = {int(ci['level'] * 100)}% {ci['method']}, {ci['resamples']} "
        f"resamples, seed {ci['seed']}; headline = undetermined excluded, read it with "
        "the undetermined rate"
    )
    return "\n".join(lines + paths)


def _gold_title(source: str) -> str:
    from edge_guard.review.gold import GOLD_TITLES

    return GOLD_TITLES[source]


def _review_lines(ev: dict[str, Any]) -> list[str]:
    from edge_guard.review.gold import format_review

    return format_review(ev)


GOLD_CHOICES = ("dataset", "review", "dataset+review")
gold_option = click.option(
    "--gold",
    type=click.Choice(GOLD_CHOICES),
    default="dataset",
    show_default=True,
    help="Score against the dataset's labels, the review decisions (edge-guard review), or "
    "the dataset's labels with review decisions where an item has none.",
)


@click.command("eval")
@click.argument("run_name", metavar="RUN")
@db_option
@gold_option
@click.option("--resamples", type=int, default=1000, show_default=True, help="Bootstrap resamples.")
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def eval_(
    run_name: str, db: str | None, gold: str, resamples: int, seed: int, as_json: bool
) -> None:
    """Accuracy, precision, recall, F1 (bootstrap CIs), confusion, undetermined rate of RUN
    (and its agreement with review decisions, when it has any)."""
    from edge_guard.review.gold import evaluate_with_gold
    from edge_guard.runs.multi import is_multi_run
    from edge_guard.store import Store

    store = Store(db)
    if is_multi_run(store.run(run_name)):  # several policies: a row per policy, macro, any
        if gold != "dataset":
            raise click.UsageError("--gold review works on single-policy runs")
        from edge_guard.runs.multi_eval import evaluate_multi_run, format_multi_eval

        mev = evaluate_multi_run(store, run_name, n_resamples=resamples, seed=seed)
        click.echo(term_json(mev) if as_json else term(format_multi_eval(mev)))
        return
    ev = evaluate_with_gold(store, run_name, gold=gold, n_resamples=resamples, seed=seed)
    click.echo(term_json(ev) if as_json else format_eval(ev))


@click.command()
@click.argument("runs", nargs=-1, required=True, metavar="RUN...")
@click.option("--out", "-o", default="report.html", show_default=True, help="Output .html or .md.")
@click.option(
    "--reference",
    type=click.Choice(["auto", "toxic-chat", "none"]),
    default="auto",
    show_default=True,
    help="Reference figures to show beside ours.",
)
@click.option("--title", default=None)
@click.option(
    "--examples",
    type=int,
    default=10,
    show_default=True,
    help="Misclassified examples shown per kind and run.",
)
@click.option("--resamples", type=int, default=1000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed.")
@db_option
@gold_option
@force_option
def report(
    runs: tuple[str, ...],
    out: str,
    reference: str,
    title: str | None,
    examples: int,
    resamples: int,
    seed: int,
    db: str | None,
    gold: str,
    force: bool,
) -> None:
    """Write a self-contained report (tables, plots, examples) over one or more RUNs."""
    from edge_guard.report import write_report
    from edge_guard.store import Store

    check_out(out, force)
    store = Store(db)
    from edge_guard.runs.multi import is_multi_run

    multi = [is_multi_run(store.run(r)) for r in runs]
    if any(multi):  # multi-policy runs: a policy x metric table each
        from edge_guard.report.multi import write_multi_report

        if not all(multi):
            from edge_guard.errors import EdgeGuardError

            raise EdgeGuardError("report either multi-policy runs or single-policy runs, not both")
        if gold != "dataset":
            raise click.UsageError("--gold review works on single-policy runs")
        path = write_multi_report(
            list(runs), out, store=store, n_resamples=resamples, seed=seed, title=title
        )
        click.echo(f"wrote {term_line(path)}")
        return
    path = write_report(
        list(runs),
        out,
        store=store,
        n_resamples=resamples,
        seed=seed,
        benchmark=None if reference == "none" else reference,
        max_examples=examples,
        title=title,
        gold=gold,
    )
    click.echo(f"wrote {term_line(path)}")


@click.group()
def datasets() -> None:
    """Pull and list datasets (any local .jsonl/.csv/.parquet file also works with `run`)."""


@datasets.command()
@click.argument("name", type=click.Choice(["toxic-chat"]))
@click.option("--config", default="toxicchat0124", show_default=True)
@click.option("--split", default="test", show_default=True)
def pull(name: str, config: str, split: str) -> None:
    """Download a known dataset through huggingface_hub into the data dir, as JSONL."""
    from edge_guard.datasets.hub import KNOWN, pull_dataset

    known = KNOWN[name]
    _echo_err(f"{known.repo} is licensed {known.license}")
    path, n = pull_dataset(name, config, split)
    click.echo(
        f"saved {n} rows to {path} (text field {known.text_field}, label "
        f"{known.label_field}); run it with: edge-guard run {name} --policy POLICY"
    )


@datasets.command("list")
@click.option("--json", "as_json", is_flag=True)
def list_(as_json: bool) -> None:
    """Known datasets (with licenses) and the local files pulled into the data dir."""
    from edge_guard.datasets.hub import KNOWN, datasets_dir, local_datasets

    known = [
        {
            "name": k.name,
            "repo": k.repo,
            "license": k.license,
            "configs": list(k.configs),
            "splits": list(k.splits),
            "description": k.description,
        }
        for k in KNOWN.values()
    ]
    local: list[dict[str, Any]] = [
        {"path": str(p), "bytes": p.stat().st_size} for p in local_datasets()
    ]
    if as_json:
        click.echo(json.dumps({"known": known, "local": local, "dir": str(datasets_dir())}))
        return
    click.echo("known datasets:")
    for k in known:
        click.echo(
            f"  {k['name']:<12} {k['repo']}  configs {', '.join(k['configs'])}; "
            f"splits {', '.join(k['splits'])}"
        )
        click.echo(f"  {'':<12} {k['description']}")
        click.echo(f"  {'':<12} license: {k['license']}")
    click.echo(f"local datasets in {datasets_dir()}:")
    for f in local:
        click.echo(f"  {f['path']}  ({f['bytes'] / 1e6:.1f} MB)")
    if not local:
        click.echo("  (none; any .jsonl/.csv/.parquet file works: edge-guard run FILE --policy P)")
