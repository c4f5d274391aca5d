"""`edge-guard review RUN | show | label | export` and `policies cases add --from-review`.

`review RUN` lists a run's items in the order they most need a human (a queue: triage,
disagree, uncertain, undetermined, flips, sample, all); `review show RUN ITEM` prints one
in full with its decision history; `review label RUN ITEM violation|no_violation|skip`
records a decision (committed at once; an earlier one is kept as history); `review export`
writes decisions as JSONL or CSV. `policies cases add POLICY --from-review RUN` appends the
run's decided items to the policy's cases.jsonl.
"""

from __future__ import annotations

from typing import Any

import click

from edge_guard.cli.options import db_option
from edge_guard.cli.outfile import check_out, force_option
from edge_guard.sanitize import term, term_json, term_line

QUEUE_NAMES = ("triage", "disagree", "uncertain", "undetermined", "flips", "sample", "all")
LABEL_NAMES = ("violation", "no_violation", "skip")


class _ReviewGroup(click.Group):
    """`review RUN ...` is `review list RUN ...` (a subcommand name comes first otherwise)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["list", *args]
        return super().parse_args(ctx, args)


def _clip(s: Any, n: int) -> str:
    flat = term_line(" ".join(str(s or "").split()))
    return flat if len(flat) <= n else flat[: max(n - 1, 0)] + "…"


def _num(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def _gold(v: bool | None) -> str:
    return "—" if v is None else "violation" if v else "no_violation"


def _source(
    db: str | None, run: str, against: tuple[str, ...] = (), threshold: float | None = None
) -> tuple[Any, Any]:
    from edge_guard.review.items import load_source
    from edge_guard.store import Store

    store = Store(db)
    return store, load_source(store, run, against=list(against), threshold=threshold)


against_option = click.option(
    "--against",
    multiple=True,
    metavar="RUN",
    help="Compare with this run (another policy version or model over the same items); "
    "repeatable. Default: a comparison's other configs, a test run's previous version.",
)


@click.group(cls=_ReviewGroup)
def review() -> None:
    """Review a run's results and record decisions: `edge-guard review RUN` lists the items
    that most need a human; `review label RUN ITEM LABEL` records a decision."""


@review.command("list")
@click.argument("run")
@click.option(
    "--queue",
    "-q",
    type=click.Choice(QUEUE_NAMES),
    default="triage",
    show_default=True,
    help="Which items, in which order.",
)
@click.option(
    "--limit",
    "-n",
    type=int,
    default=None,
    help="List at most N items (the sample's size for --queue sample; default 20).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --queue sample.")
@click.option(
    "--threshold",
    type=float,
    default=None,
    help="Decision threshold for 'uncertain' (default: the policy's, else 0.5).",
)
@click.option("--todo", is_flag=True, help="Only items without a decision.")
@against_option
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def list_cmd(
    run: str,
    queue: str,
    limit: int | None,
    seed: int,
    threshold: float | None,
    todo: bool,
    against: tuple[str, ...],
    db: str | None,
    as_json: bool,
) -> None:
    """List RUN's items in review order (RUN: a run, a comparison, or a tested policy)."""
    from edge_guard.review.queues import build_queue

    _store, source = _source(db, run, against, threshold)
    q = build_queue(source, queue, limit=limit, seed=seed, todo=todo)
    if as_json:
        click.echo(term_json(q.to_dict()))
        return
    vs = (
        f" · compared with {', '.join(term_line(p) for p in source.partners)}"
        if source.partners
        else ""
    )
    click.echo(
        click.style(
            f"run {term_line(source.run)} · policy {term_line(source.policy_name)} "
            f"({source.kind}) · queue {queue} · threshold {source.threshold:g}{vs}",
            bold=True,
        )
    )
    shown = q.shown
    click.echo(
        f"{len(q.items)} items in queue · reviewed {q.reviewed} · remaining {q.remaining}"
        f" · showing {len(shown)}"
    )
    if q.note:
        click.echo(click.style(f"note: {term(q.note)}", fg="yellow"))
    if not shown:
        return
    click.echo(
        f"{'item':>6}  {'why':<18} {'verdict':<13} {'P(viol)':<8} {'gold':<13} "
        f"{'decision':<13} text"
    )
    for it in shown:
        why = ",".join(q.why.get(it.idx, [])) or "—"
        dec = it.decision.label if it.decision else "—"
        click.echo(
            f"{it.idx:>6}  {why:<18} {it.verdict:<13} {_num(it.score):<8} "
            f"{_gold(it.gold):<13} {dec:<13} {_clip(it.text, 60)}"
        )
    click.echo(
        click.style(
            f"record a decision: edge-guard review label {term_line(source.run)} "
            "ITEM violation|no_violation|skip [--note TEXT] [--tag T]",
            dim=True,
        )
    )


@review.command("show")
@click.argument("run")
@click.argument("item")
@against_option
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def show_cmd(run: str, item: str, against: tuple[str, ...], db: str | None, as_json: bool) -> None:
    """Print one item in full: what was judged, the answer, reasoning and decision history."""
    from edge_guard.conversation import shown_text
    from edge_guard.review.decisions import history
    from edge_guard.review.queues import reasons

    store, source = _source(db, run, against)
    it = source.item(item)
    past = history(store, source.policy_name, it.content_key)
    if as_json:
        click.echo(
            term_json(
                {**it.to_dict(), "reasons": reasons(it), "history": [d.to_dict() for d in past]}
            )
        )
        return
    ident = f" (id {term_line(it.item_id)})" if it.item_id else ""
    click.echo(
        click.style(
            f"item {it.idx}{ident} of run {term_line(it.run)} · policy {term_line(it.policy_name)}",
            bold=True,
        )
    )
    click.echo(f"why: {', '.join(reasons(it)) or '—'}")
    click.echo(f"verdict: {it.verdict} · P(violation) {_num(it.score)} · gold: {_gold(it.gold)}")
    for p in it.partners:
        click.echo(f"compared: run {term_line(p.run)}: {p.verdict} (P {_num(p.score)})")
    label = "conversation (>>> judged)" if it.conversation else "text"
    click.echo(f"{label}:\n" + _indent(shown_text(it.text, it.conversation, clip=4000)))
    if it.error:
        click.echo(f"error: {term_line(it.error)}")
    answer = "(none: no complete final message)" if it.final is None else term_line(it.final)
    click.echo(f"answer: {answer} · finish {term_line(it.finish_reason)}")
    click.echo("reasoning:\n" + _indent(it.reasoning or "(none)"))
    if not past:
        click.echo("decision: none yet")
    for d in past:
        click.echo(_decision_line(d, d is past[-1]))


def _indent(s: str | None) -> str:
    return "\n".join("    " + ln for ln in term(s or "").split("\n"))


def _decision_line(d: Any, current: bool) -> str:
    extra = f" — {term_line(d.note)}" if d.note else ""
    tags = f" [{', '.join(term_line(t) for t in d.tags)}]" if d.tags else ""
    mark = "in force" if current else "earlier"
    return (
        f"decision #{d.id} ({mark}): {d.label} by {term_line(d.reviewer)} at "
        f"{d.created_at[:19].replace('T', ' ')}{extra}{tags}"
    )


@review.command("label")
@click.argument("run")
@click.argument("item")
@click.argument("label", type=click.Choice(LABEL_NAMES))
@click.option("--note", default="", help="Why (kept with the decision, and on a promoted case).")
@click.option("--tag", "tags", multiple=True, help="A tag (repeatable, or comma-separated).")
@click.option(
    "--reviewer",
    default=None,
    help="Who decides (default: $EDGE_GUARD_REVIEWER, else the login name).",
)
@click.option(
    "--queue",
    type=click.Choice(QUEUE_NAMES),
    default=None,
    help="The queue the item was reviewed from (kept with the decision).",
)
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print the stored decision as JSON.")
def label_cmd(
    run: str,
    item: str,
    label: str,
    note: str,
    tags: tuple[str, ...],
    reviewer: str | None,
    queue: str | None,
    db: str | None,
    as_json: bool,
) -> None:
    """Record a decision on ITEM of RUN (ITEM: the index `review RUN` lists, or the item id)."""
    from edge_guard.review.decisions import record

    store, source = _source(db, run)
    it = source.item(item)
    d = record(
        store,
        it.target(),
        label,
        note=note,
        tags=tags,
        reviewer=reviewer,
        queue=queue,
        source="cli",
    )
    if as_json:
        click.echo(term_json(d.to_dict()))
        return
    msg = f"item {it.idx} → {d.label} (decision #{d.id} by {term_line(d.reviewer)})"
    old = d.replaced
    if old is not None:
        msg += (
            f"; replaces {old.label} (#{old.id} by {term_line(old.reviewer)}, "
            f"{old.created_at[:19].replace('T', ' ')}), kept in history"
        )
    click.echo(msg)


@review.command("export")
@click.argument("run", required=False)
@click.option("--policy", default=None, help="Only decisions under this policy name.")
@click.option("--out", "-o", default=None, help="Write to this file (default: stdout).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(("jsonl", "csv")),
    default=None,
    help="Default: from --out's suffix (.csv), else jsonl.",
)
@click.option(
    "--history",
    "include_history",
    is_flag=True,
    help="Every decision, not only the one in force per item.",
)
@db_option
@force_option
def export_cmd(
    run: str | None,
    policy: str | None,
    out: str | None,
    fmt: str | None,
    include_history: bool,
    db: str | None,
    force: bool,
) -> None:
    """Write review decisions (all, or those on RUN's items) as JSONL or CSV."""
    from edge_guard.review import export
    from edge_guard.store import Store

    path = check_out(out, force) if out else None
    rows = export.export_rows(Store(db), run=run, policy=policy, history=include_history)
    fmt = export.format_of(out, fmt)
    if path is None:  # a terminal: JSON stays valid JSON, controls shown not obeyed
        for row in rows if fmt == "jsonl" else ():
            click.echo(term_json(row))
        if fmt == "csv":
            click.echo(term(export.render(rows, fmt)), nl=False)
        return
    text = export.render(rows, fmt)
    export.write(text, path)
    click.echo(f"wrote {len(rows)} decisions to {term_line(path)}", err=True)


# -- policies cases add --from-review -----------------------------------------------------------
@click.group("cases")
def cases_cmd() -> None:
    """Grow a policy's golden cases (cases.jsonl)."""


@cases_cmd.command("add")
@click.argument("policy_ref", metavar="POLICY")
@click.option(
    "--from-review",
    "run",
    required=True,
    metavar="RUN",
    help="Append the items of RUN that have a review decision.",
)
@click.option(
    "--item",
    "items",
    multiple=True,
    help="Only this item (index or id; repeatable). Default: every decided item.",
)
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print what was added as JSON.")
def cases_add(
    policy_ref: str, run: str, items: tuple[str, ...], db: str | None, as_json: bool
) -> None:
    """Append RUN's reviewed items to POLICY's cases.jsonl (expected = the decision; note,
    tags and provenance kept; texts already among the cases are left out)."""
    from edge_guard.policy.core import load_policy
    from edge_guard.review.promote import cases_from_review

    policy = load_policy(policy_ref)
    _store, source = _source(db, run)
    done = cases_from_review(source, policy, items=list(items))
    if as_json:
        click.echo(term_json(done.to_dict()))
        return
    click.echo(f"added {len(done.added)} case(s) to {term_line(done.path)}")
    for what, idxs in (
        ("already cases (same text)", done.duplicates),
        ("decided skip", done.skipped),
        ("not reviewed", done.unreviewed),
    ):
        if idxs:
            click.echo(f"left out, {what}: items {', '.join(map(str, idxs))}")
    for idx, case, decided in done.conflicts:
        click.echo(
            click.style(
                f"conflict, item {idx}: the existing case expects {term_line(case)}, "
                f"the decision says {decided}; the case is left as it is (edit "
                "cases.jsonl to change it)",
                fg="yellow",
            )
        )
    for idx, why in done.unmappable:
        click.echo(click.style(f"left out item {idx}: {term(why)}", fg="yellow"))
    if done.added:
        click.echo(
            f"next: edge-guard policies test {term_line(policy_ref)} (the new cases are "
            "judged like any case; edit the policy and test again to see them fixed or "
            "broken)"
        )
