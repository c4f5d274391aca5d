"""`edge-guard run`: classify a dataset as a named, resumable run (progress on stderr,
Ctrl-C stops cleanly, `--eval` prints the metrics at the end). Evaluation and reports are
`cli/eval_cmd.py`; pulling and listing datasets is `cli/datasets_cmd.py`.
"""

from __future__ import annotations

import shlex
import sys
from typing import TYPE_CHECKING, Any

import click

from edge_guard.cli.eval_cmd import format_eval
from edge_guard.cli.multi_opts import policy_options, policy_set, run_set, single_label_field
from edge_guard.cli.options import build_classifier, classify_options, pass_opts
from edge_guard.cli.warm_cmd import keep_alive_option
from edge_guard.conversation import TARGETS
from edge_guard.datasets.files import SAMPLES
from edge_guard.sanitize import term, term_json, term_line

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

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
        self.total, self.last_pct = total, -1
        self.bar: Progress | None = None
        self.task: TaskID | None = None
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
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, completed=p.done, rate=rate)
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
    from edge_guard.runs.batch import execute_run, plan_run
    from edge_guard.runs.outcomes import evaluate_run

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
