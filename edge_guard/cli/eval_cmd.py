"""`edge-guard eval | report`: a run's metrics with bootstrap CIs (`eval`, and its text form
`format_eval`, which `run --eval` prints too) and a self-contained HTML/Markdown report over
one or more runs (`report`); both can score against review decisions (`--gold`).
"""

from __future__ import annotations

from typing import Any

import click

from edge_guard.cli.options import db_option
from edge_guard.cli.outfile import check_out, force_option
from edge_guard.sanitize import term, term_json, term_line


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
    from edge_guard.runs.multi_plan import is_multi_run
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
    from edge_guard.runs.multi_plan import is_multi_run

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
