"""`edge-guard study run | analyze | report`: the controversial-opinion study from the command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from edge_guard.cli.options import build_classifier, classify_options, db_option, pass_opts
from edge_guard.cli.outfile import check_out, force_option
from edge_guard.sanitize import term_json, term_line


@click.group()
def study() -> None:
    """Rate opinions with several models (default: safeguard vs base) and compare the ratings."""


@study.command("run")
@click.option(
    "--models",
    default=None,
    help="Comma-separated model references (default: gpt-oss-safeguard-20b:mxfp4,"
    "gpt-oss-20b:mxfp4; a single --model also works).",
)
@click.option(
    "--dataset",
    type=click.Path(dir_okay=False),
    default=None,
    help="JSONL of {id, topic, text} (or the seed's {text}); default: the packaged "
    "controversial-opinion set.",
)
@click.option(
    "--policy",
    "-p",
    default="is_good",
    show_default=True,
    help="A likert policy (name, folder or file).",
)
@click.option(
    "--repeats",
    type=int,
    default=1,
    show_default=True,
    help="Ratings per item and model, with seeds --seed + r (needs --temperature > 0).",
)
@click.option(
    "--name",
    default=None,
    help="Run name (default: derived from the settings, so the same command resumes).",
)
@click.option("--limit", type=int, default=None, help="Only the first N items (a pilot).")
@click.option("--json", "as_json", is_flag=True, help="Print the analysis as JSON.")
@classify_options
@pass_opts
def run(opts: dict[str, Any]) -> None:
    """Rate every item with every model; killed runs resume, reruns are served from the cache."""
    from edge_guard.store import Store
    from edge_guard.study.analysis import analyze
    from edge_guard.study.data import from_run, model_label
    from edge_guard.study.runner import DEFAULT_MODELS, StudyConfig, run_study
    from edge_guard.study.summary import format_analysis

    models_opt, single = opts.pop("models"), opts.pop("model")
    if models_opt:
        models = [m.strip() for m in models_opt.split(",") if m.strip()]
    else:
        models = [single] if single else list(DEFAULT_MODELS)
    policy = opts.pop("policy")
    as_json = opts.pop("as_json")
    config = StudyConfig(
        models=models,
        dataset=opts.pop("dataset"),
        policy=policy,
        repeats=opts.pop("repeats"),
        temperature=opts["temperature"],
        seed=opts["seed"],
        max_tokens=opts["max_tokens"],
        style=opts["style"],
        effort=opts["effort"],
        date=opts["date"],
        limit=opts.pop("limit"),
    )
    config.validate()
    name = opts.pop("name")
    store = Store(opts["db"])
    tty = sys.stderr.isatty()

    def factory(model: str) -> Any:
        return build_classifier(policy, dict(opts), model=model)

    def on_progress(done: int, total: int, model: str) -> None:
        if tty:
            click.echo(
                f"\r{done}/{total} rated ({term_line(model_label(model))})   ", err=True, nl=False
            )
        elif done == total:
            click.echo(f"{done}/{total} rated", err=True)

    result = run_study(
        config, name=name, store=store, classifier_factory=factory, on_progress=on_progress
    )
    if tty:
        click.echo(err=True)
    click.echo(
        f"study {term_line(result.name)}: {result.n_total} ratings planned, {result.n_already} already done, "
        f"{result.n_new} rated now ({result.n_cached} from the cache, {result.n_unparsed} unparsed)",
        err=True,
    )
    analysis = analyze(from_run(store, result.name))
    click.echo(term_json(analysis) if as_json else format_analysis(analysis))


def _ref_argument(f: Any) -> Any:
    return click.argument("ref", required=False, metavar="[RUN | RESULTS_FILE]")(f)


@study.command("analyze")
@_ref_argument
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print the full analysis as JSON.")
@click.option("--top", type=int, default=10, show_default=True, help="Most divergent items shown.")
@click.option(
    "--plot",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the Likert chart (.svg or .png).",
)
@click.option(
    "--export",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write one row per rating (.jsonl, .csv or .parquet).",
)
@force_option
def analyze_cmd(
    ref: str | None,
    db: str | None,
    as_json: bool,
    top: int,
    plot: str | None,
    export: str | None,
    force: bool,
) -> None:
    """Statistics of a study run (default: the latest) or a results file (ours or the seed's)."""
    from edge_guard.study.analysis import analyze
    from edge_guard.study.data import load_study
    from edge_guard.study.summary import format_analysis

    for out in (plot, export):
        if out:
            check_out(out, force)
    data = load_study(ref, db=db)
    analysis = analyze(data, top=top)
    if plot:
        from edge_guard.study.plots import write_likert_plot

        labels = analysis["study"]["models"]
        write_likert_plot({lab: analysis["models"][lab]["counts"] for lab in labels}, plot)
        click.echo(f"wrote {term_line(plot)}", err=True)
    if export:
        from edge_guard.cli.cache_cmd import write_rows

        write_rows(data.rows(), Path(export))
        click.echo(f"wrote {data.n_observed} ratings to {term_line(export)}", err=True)
    click.echo(term_json(analysis) if as_json else format_analysis(analysis))


@study.command("report")
@_ref_argument
@db_option
@click.option(
    "--out",
    "-o",
    required=True,
    type=click.Path(dir_okay=False),
    help="Report file: .html or .md (self-contained, charts embedded).",
)
@click.option("--top", type=int, default=15, show_default=True, help="Most divergent items listed.")
@force_option
def report(ref: str | None, db: str | None, out: str, top: int, force: bool) -> None:
    """Write a self-contained report, with the seed's figures beside ours."""
    from edge_guard.study.analysis import analyze
    from edge_guard.study.data import load_study
    from edge_guard.study.report import write_report

    check_out(out, force)
    analysis = analyze(load_study(ref, db=db), top=top)
    path = write_report(analysis, out)
    click.echo(f"wrote {term_line(path)}")
