"""`edge-guard policies test | history | diff`: golden-case suites, policy versions, regressions.

`test` exits 0 when every case passes, 1 when any fails or is undetermined, 2 when the
policy, its cases or the model cannot be loaded — so a policy repository can gate CI on it.
"""

from __future__ import annotations

import shutil
from typing import Any

import click

from edge_guard.cli.options import build_classifier, classify_options, db_option, pass_opts
from edge_guard.cli.warm_cmd import keep_alive_option
from edge_guard.errors import EdgeGuardError
from edge_guard.sanitize import term, term_json, term_line

MARK = {"pass": ("pass ", "green"), "fail": ("FAIL ", "red"), "undetermined": ("UNDET", "yellow")}


def _policy_name(ref: str) -> str:
    """A policy's stored name: load it if NAME is a path/name that loads, else NAME itself."""
    from edge_guard.policy.core import load_policy

    try:
        return load_policy(ref).name
    except EdgeGuardError:
        return ref


def _clip(s: str | None, n: int) -> str:
    flat = term_line(" ".join((s or "").split()))
    return flat if len(flat) <= n else flat[: max(n - 1, 0)] + "…"


def print_report(report: Any) -> None:
    """The pass/fail table, counts, binary metrics, and the change since the last version."""
    width = shutil.get_terminal_size((100, 20)).columns
    v = report.version
    head = (
        f"{term_line(report.policy.name)} {v.label} ({v.hash[:10]}{', new' if report.new_version else ''})"
        f" · model {term_line(report.model_ref)} · {report.config['prompt']['style']}/"
        f"{report.config['prompt']['effort']} · {report.total} cases"
        f" ({report.cached} cached)"
    )
    click.echo(click.style(head, bold=True))
    id_w = min(max((len(_clip(o.case.name, 28)) for o in report.outcomes), default=4), 28)
    for o in report.outcomes:
        mark, color = MARK[o.outcome]
        got = "—" if o.got is None else term_line(o.got)
        left = f"  {mark}  {_clip(o.case.name, id_w):<{id_w}}  exp {term_line(o.case.expected):<4} got {got:<4} "
        extra = ""
        if o.outcome == "undetermined":
            extra = (
                f"  [{_clip(o.result.error or 'finish ' + str(o.finish_reason), 200)}]"
                if o.result
                else ""
            )
        text = _clip(o.case.text, max(width - len(left) - len(extra) - 1, 10))
        click.echo(
            click.style(left, fg=color if o.outcome != "pass" else None)
            + text
            + click.style(extra, dim=True)
        )
    click.echo(
        f"{report.total} cases: {report.passed} passed, {report.failed} failed, "
        f"{report.undetermined} undetermined — pass rate {report.pass_rate:.1%}"
    )
    m = report.metrics or {}
    if m.get("kind") == "binary":
        if m.get("precision") is None:
            click.echo("binary: no determined answers, so no precision/recall")
        else:
            click.echo(
                f"binary: precision {m['precision']:.3f}  recall {m['recall']:.3f}  "
                f"F1 {m['f1']:.3f}  (over {m['determined']} determined; "
                f"tp {m['tp']} fp {m['fp']} fn {m['fn']})"
            )
    elif m.get("kind") == "likert" and m.get("mae") is not None:
        click.echo(
            f"likert: mean abs. error {m['mae']:.2f}, within one {m['within_one']:.1%} "
            f"(over {m['determined']} determined)"
        )
    if report.previous is not None:
        print_flips(report.previous, short=True)
    if report.ok:
        click.echo(click.style("OK: every case passed", fg="green", bold=True))
    else:
        n = report.failed + report.undetermined
        click.echo(
            click.style(f"FAILED: {n} of {report.total} cases did not pass", fg="red", bold=True)
        )


def print_flips(diff: Any, short: bool = False) -> None:
    label = f"{diff.old.label} → {diff.new.label}"
    for note in diff.notes:
        click.echo(click.style(f"note: {term(note)}", fg="yellow"))
    if diff.old_run is None or diff.new_run is None:
        return
    if short:
        parts = [
            f"fixed {len(diff.fixed)}",
            f"broke {len(diff.broke)}",
            f"still failing {len(diff.still_failing)}",
        ]
        detail = ""
        if diff.fixed or diff.broke:
            names = [f"+{term_line(f.name)}" for f in diff.fixed] + [
                f"-{term_line(f.name)}" for f in diff.broke
            ]
            detail = " (" + ", ".join(names[:8]) + (", …" if len(names) > 8 else "") + ")"
        click.echo(f"since {label}: " + " · ".join(parts) + detail)
        return
    old_rate, new_rate = diff.old_run.pass_rate, diff.new_run.pass_rate
    click.echo(
        click.style(f"outcomes {label}", bold=True) + f"  pass rate {old_rate:.1%} → {new_rate:.1%}"
        f"  ({term_line(diff.old_run.model_ref)} · {term_line(diff.new_run.model_ref)})"
    )
    for title, flips, color, sign in (
        ("fixed", diff.fixed, "green", "+"),
        ("broke", diff.broke, "red", "-"),
        ("still failing", diff.still_failing, "yellow", "·"),
    ):
        click.echo(click.style(f"{title} ({len(flips)})", fg=color, bold=bool(flips)))
        for f in flips:
            old = f.old_got if f.old_got is not None else f.old_outcome
            new = f.new_got if f.new_got is not None else f.new_outcome
            click.echo(
                f"  {sign} {_clip(f.name, 28):<28}  expected {term_line(f.expected)}: "
                f"{diff.old.label} {term_line(old)} → {diff.new.label} {term_line(new)}"
            )
    tail = f"still passing {diff.still_passing}"
    if diff.added or diff.removed:
        tail += f" · cases added {len(diff.added)} · removed {len(diff.removed)}"
    click.echo(tail)


@click.command("test")
@click.argument("policy_ref", metavar="NAME|PATH|SET...", nargs=-1, required=True)
@click.option(
    "--cases",
    "cases_file",
    default=None,
    type=click.Path(dir_okay=False),
    help="Cases file (.jsonl/.csv) instead of the policy's cases.jsonl.",
)
@click.option(
    "--tags", multiple=True, help="Only cases with any of these tags (comma-separated or repeated)."
)
@click.option("--message", default=None, help="Note stored with a new policy version.")
@click.option(
    "--junit",
    default=None,
    type=click.Path(dir_okay=False),
    help="Also write JUnit XML (one testcase per case) for CI.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@classify_options
@keep_alive_option
@pass_opts
def test_cmd(opts: dict[str, Any]) -> None:
    """Run a policy's golden cases; exit 1 if any case fails (2 if it cannot run).

    Cases come from cases.jsonl (or cases.csv) next to the policy: one
    {"text", "expected", "id", "note", "tags"} per line. Results are cached, so an
    unchanged policy re-tests instantly; each new policy text becomes a new version.
    """
    from edge_guard.cli import fail
    from edge_guard.policy_tests.junit import write_junit
    from edge_guard.policy_tests.runner import run_policy_tests

    ref, as_json, junit = opts.pop("policy_ref"), opts.pop("as_json"), opts.pop("junit")
    from edge_guard.policy.sets import is_set_ref

    if len(ref) > 1 or is_set_ref(ref[0]):  # several policies or a set: each one's cases
        from edge_guard.cli.multi_opts import test_set

        return test_set(list(ref), opts, as_json=as_json, junit=junit, print_report=print_report)
    ref = ref[0]
    try:
        from edge_guard.policy.cases import policy_cases
        from edge_guard.policy.core import load_policy

        policy = load_policy(ref)
        cases = policy_cases(policy, opts.pop("cases_file"))
        classifier = build_classifier(policy, opts)
        report = run_policy_tests(
            policy, classifier, cases=cases, tags=opts.pop("tags"), message=opts.pop("message")
        )
        if junit:
            write_junit(report, junit)
    except EdgeGuardError as exc:
        fail(str(exc), 2)
        return
    if as_json:
        click.echo(term_json(report.to_dict(), default=str))
    else:
        print_report(report)
        if junit:
            click.echo(f"junit: {term_line(junit)}")
    if not report.ok:
        raise SystemExit(1)


@click.command("history")
@click.argument("name")
@db_option
@click.option("--json", "as_json", is_flag=True)
def history_cmd(name: str, db: str | None, as_json: bool) -> None:
    """List a policy's tested versions with their latest pass rates."""
    from edge_guard.policy.versions import policy_history
    from edge_guard.store import Store

    name = _policy_name(name)
    entries = policy_history(Store(db), name)
    if as_json:
        click.echo(term_json([e.to_dict() for e in entries]))
        return
    click.echo(click.style(f"{term_line(name)}: {len(entries)} version(s)", bold=True))
    for e in entries:
        v, last = e.version, e.last
        when = v.created_at[:19].replace("T", " ")
        if last is None:
            result = "not tested"
        else:
            result = (
                f"{last.passed}/{last.n_cases} passed ({last.pass_rate:.0%})"
                f"{f', {last.undetermined} undetermined' if last.undetermined else ''}"
                f" · {term_line(last.model_ref)}"
            )
        msg = f"  “{term_line(v.message)}”" if v.message else ""
        click.echo(f"  {v.label:<4} {when}  {v.hash[:10]}  {result} · {e.runs} run(s){msg}")


@click.command("diff")
@click.argument("name")
@click.argument("v1", required=False)
@click.argument("v2", required=False)
@db_option
@click.option("--no-text", is_flag=True, help="Only the case outcomes, not the text diff.")
@click.option("--json", "as_json", is_flag=True)
def diff_cmd(
    name: str, v1: str | None, v2: str | None, db: str | None, no_text: bool, as_json: bool
) -> None:
    """Text diff of two versions and which cases flipped (default: previous vs latest).

    V1/V2: a version number (2 or v2), `latest`, or a hash prefix.
    """
    from edge_guard.policy.version_diff import diff_versions
    from edge_guard.store import Store

    name = _policy_name(name)
    if v1 is not None and v2 is None:
        v2 = "latest"
    diff = diff_versions(Store(db), name, v1, v2)
    if as_json:
        click.echo(term_json(diff.to_dict()))
        return
    if not no_text:
        if not diff.text_diff:
            click.echo(click.style("(policy text identical)", dim=True))
        for line in diff.text_diff:
            color = (
                "green"
                if line.startswith("+")
                else "red"
                if line.startswith("-")
                else "cyan"
                if line.startswith("@@")
                else None
            )
            click.echo(click.style(term_line(line.rstrip("\n")), fg=color))
        click.echo()
    print_flips(diff)
