"""Several policies on the command line: `-p a -p b`, `--set S`, `--mode`, and their output.

`--mode`: separate (a prompt per text and policy), combined (every policy in one prompt,
one list of violations) or taxonomy (every binary policy in one prompt, a 0/1 each: with
`--reasoning none` the cheap path, one decode per text scoring every policy).

`policy_options` adds the flags; `policy_set(opts)` pops them and returns the `PolicySet`
to run (None for a single plain policy, which keeps the one-policy code path);
`multi_json` / `print_multi` print one text's results under a set (one object / one row
per policy, then the set's `flagged`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from edge_guard.policy.combined import MODES
from edge_guard.policy.taxonomy import MODE_TAXONOMY
from edge_guard.sanitize import term

SET_MODES = (*MODES, MODE_TAXONOMY)


def policy_options(
    required: bool = True, mode: bool = True
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`--policy/-p` (repeatable), `--set`, and `--mode separate|combined|taxonomy` unless
    `mode` is False (compare sets the mode per config)."""

    def deco(f: Callable[..., Any]) -> Callable[..., Any]:
        if mode:
            f = click.option(
                "--mode",
                type=click.Choice(SET_MODES),
                default="separate",
                show_default=True,
                help="Several policies: one prompt per (text, policy); all policies in "
                'one prompt answered with {"violations": [...]}; or (taxonomy, binary '
                "policies) all in one prompt with a 0/1 each, scored per policy in one "
                "pass with --reasoning none.",
            )(f)
        f = click.option(
            "--set",
            "policy_set",
            default=None,
            metavar="SET",
            help="A policy set (policies/sets/SET.toml or a .toml file).",
        )(f)
        return click.option(
            "--policy",
            "-p",
            "policy",
            multiple=True,
            help="Policy name, folder, or file (repeat for several, or a set's "
            "name)." + (" Required unless --set." if required else ""),
        )(f)

    return deco


def policy_set(opts: dict[str, Any]) -> tuple[Any, str | None]:
    """Pop `policy`/`policy_set`/`mode`: (PolicySet, mode) for several policies or a set,
    else (the one policy reference, None). Giving neither is a one-line error."""
    from edge_guard.errors import PolicyError
    from edge_guard.policy.sets import is_set_ref, resolve_policies

    refs, set_ref = list(opts.pop("policy") or ()), opts.pop("policy_set")
    mode = opts.pop("mode", "separate")
    if not refs and set_ref is None:  # a usage error: exit 2, like click's own
        import click

        raise click.UsageError(
            "Missing option '--policy' (give --policy/-p NAME, repeatable, or --set SET)."
        )
    if set_ref is None and len(refs) == 1 and not is_set_ref(refs[0]):
        if mode != "separate":
            raise PolicyError(f"--mode {mode} needs several policies or a set")
        return refs[0], None
    return resolve_policies(refs, set_ref), mode


def multi_json(mr: Any, pset: Any, mode: str, classifier: Any) -> dict[str, Any]:
    """One text under a set as one JSON object: flagged + a result per policy."""
    out = mr.to_dict()
    out.update(
        {
            "policy_set": pset.name,
            "policies": pset.names,
            "mode": mode,
            "model": classifier.backend.model_ref,
            "style": classifier.prompt_config.style,
            "effort": classifier.prompt_config.effort,
        }
    )
    return out


def print_multi(
    mr: Any,
    pset: Any,
    mode: str,
    score_line: Callable[[Any], str],
    verdict_style: dict[str, tuple[str, str]],
) -> None:
    """One row per policy (verdict, score, answer), the set's verdict, then the reasoning."""
    from edge_guard.policy.thresholds import flag_label

    flag = flag_label(mr.flagged)
    color = {"flagged": "red", "not_flagged": "green", "undetermined": "yellow"}[flag]
    click.echo(
        click.style(flag.upper().replace("_", " "), fg=color, bold=True)
        + f"  set {term(pset.name)} ({len(pset.names)} policies, {mode})"
    )
    width = max(len(n) for n in pset.names) + 2
    for name, res in mr.results.items():
        label, col = verdict_style[str(res.verdict)]
        resp = res.model_response
        final = resp.response if resp else None
        answer = term(repr(final)) if final is not None else "(no complete answer)"
        cached = " [cached]" if res.cached else ""
        click.echo(
            f"  {term(name):<{width}}"
            + click.style(f"{label:<13}", fg=col)
            + f" {score_line(res):<22} answer {answer}{cached}"
        )
        if res.error:
            click.echo(click.style(f"  {'':<{width}}error: {term(res.error)}", fg="yellow"))
    seen: set[int] = set()
    for name, res in mr.results.items():
        resp = res.model_response
        if resp is None or not resp.reasoning or id(resp) in seen:
            continue
        seen.add(id(resp))
        who = name if mode == "separate" else "all policies"
        click.echo(
            click.style(f"reasoning ({term(who)}): " + term(resp.reasoning.strip()), dim=True)
        )


def run_set(
    dataset: str,
    classifier: Any,
    pset: Any,
    mode: str,
    *,
    label_fields: list[str],
    plan_kw: dict[str, Any],
    seed: int,
    as_json: bool,
    progress: Any,
    echo_err: Callable[..., None],
) -> None:
    """`edge-guard run` over several policies: a pair per (text, policy), resumable, then the
    per-policy evaluation when the dataset has gold columns (`--label-field POLICY=COLUMN`)."""
    import shlex
    import sys

    from edge_guard.runs.multi import execute_multi_run
    from edge_guard.runs.multi_eval import evaluate_multi_run, format_multi_eval
    from edge_guard.runs.multi_plan import parse_label_fields, plan_multi_run
    from edge_guard.sanitize import term_json, term_line

    fields = parse_label_fields(label_fields, pset.names)
    plan_fn, execute_fn = plan_multi_run, execute_multi_run
    if mode == MODE_TAXONOMY:  # one prompt per text, a 0/1 per policy (runs/taxonomy.py)
        from edge_guard.compare.taxonomy import execute_taxonomy_run, plan_taxonomy_run

        plan_fn, execute_fn = plan_taxonomy_run, execute_taxonomy_run
    plan = plan_fn(dataset, classifier, pset, mode=mode, label_fields=fields, seed=seed, **plan_kw)
    for msg in plan.messages():
        echo_err(f"warning: {term_line(msg)}", fg="yellow")
    state = f"resuming: {len(plan.done)} done, {len(plan.todo)} to do" if plan.resumed else "new"
    echo_err(
        f"run {term_line(plan.name)}: {plan.n_texts} texts x {plan.n_policies} policies = "
        f"{plan.n_items} pairs, {mode} mode ({state})"
    )
    bar = progress(plan.n_items, len(plan.done), plan.name)
    try:
        summary = execute_fn(plan, classifier, on_result=bar.update)
    except KeyboardInterrupt:
        bar.stop()
        echo_err(
            f"interrupted: run {term_line(plan.name)} keeps its finished pairs; resume with: "
            f"{term_line(shlex.join(['edge-guard', *sys.argv[1:]]))}",
            fg="yellow",
        )
        sys.exit(130)
    bar.stop()
    echo_err(
        f"done: {summary.n_done}/{summary.n_items} pairs ({summary.n_new} new, "
        f"{summary.n_cached} cached) in {summary.elapsed_s:.1f} s · "
        f"{summary.labels_per_s:.2f} pairs/s · {summary.tokens_per_s:.0f} tok/s"
    )
    has_gold = any(g is not None for gs in plan.golds.values() for g in gs)
    ev = evaluate_multi_run(classifier.store, plan.name) if has_gold else None
    if as_json:
        click.echo(term_json({"summary": summary.as_dict(), "eval": ev}))
    elif ev is not None:
        click.echo(term(format_multi_eval(ev)))


def single_label_field(values: list[str], policy: str) -> str | None:
    """The one `--label-field` of a single-policy run (FIELD, or POLICY=FIELD)."""
    if not values:
        return None
    from edge_guard.runs.multi_plan import parse_label_fields

    return parse_label_fields(values, [policy])[policy]


def compare_set(
    dataset: str,
    pset: Any,
    configs: Any,
    opts: dict[str, Any],
    run_kw: dict[str, Any],
    label_fields: list[str],
    progress: Any,
    *,
    as_json: bool,
    resamples: int,
    out: str | None,
) -> None:
    """`edge-guard compare` over several policies: each config a multi-policy run, then
    per-policy agreement, kappa and flips against the first config."""
    import shlex
    import sys

    from edge_guard.compare.multi import format_multi_summary, multi_summary, run_multi_compare
    from edge_guard.runs.multi_plan import parse_label_fields
    from edge_guard.sanitize import term_json, term_line

    fields = parse_label_fields(label_fields, pset.names)
    try:
        store, runs, labels = run_multi_compare(
            dataset,
            pset,
            configs,
            base_opts=opts,
            label_fields=fields,
            on_start=progress.start,
            on_result=progress.result,
            door="cli",
            **run_kw,
        )
    except KeyboardInterrupt:
        click.echo(
            f"interrupted: finished pairs are saved; resume with: "
            f"{term_line(shlex.join(['edge-guard', *sys.argv[1:]]))}",
            err=True,
        )
        sys.exit(130)
    summary = multi_summary(store, runs, labels, n_resamples=resamples)
    click.echo(term_json(summary) if as_json else term(format_multi_summary(summary)))
    if out is not None:
        from edge_guard.compare.multi import write_multi_compare

        click.echo(f"wrote {term_line(write_multi_compare(summary, out))}", err=as_json)


def test_set(
    refs: list[str],
    opts: dict[str, Any],
    *,
    as_json: bool,
    junit: str | None,
    print_report: Callable[[Any], None],
) -> None:
    """`policies test a b` / `policies test SET`: every member's golden cases, one shared
    model; exit 1 if any case fails, 2 if a policy cannot be tested."""
    from edge_guard.cli import fail
    from edge_guard.cli.options import build_classifier
    from edge_guard.errors import EdgeGuardError
    from edge_guard.policy.cases import policy_cases
    from edge_guard.policy.sets import resolve_policies
    from edge_guard.policy_tests.runner import run_policy_tests
    from edge_guard.sanitize import term_json

    reports = {}
    try:
        if junit or opts.get("cases_file"):
            raise EdgeGuardError("--cases and --junit take one policy (test the others one by one)")
        opts.pop("cases_file", None)
        pset = resolve_policies(refs)
        classifier = build_classifier(pset.policies, opts)
        tags, message = opts.pop("tags"), opts.pop("message")
        for lane in classifier.lanes:
            cases = policy_cases(lane.policy, None)
            reports[lane.policy.name] = run_policy_tests(
                lane.policy, lane.alone(), cases=cases, tags=tags, message=message
            )
    except EdgeGuardError as exc:
        fail(str(exc), 2)
        return
    ok = all(r.ok for r in reports.values())
    if as_json:
        click.echo(
            term_json(
                {
                    "policy_set": pset.name,
                    "ok": ok,
                    "reports": {n: r.to_dict() for n, r in reports.items()},
                },
                default=str,
            )
        )
    else:
        for r in reports.values():
            print_report(r)
            click.echo()
        fails = [n for n, r in reports.items() if not r.ok]
        click.echo(
            f"set {term(pset.name)}: {len(reports) - len(fails)}/{len(reports)} policies pass"
            + (f" (failing: {', '.join(fails)})" if fails else "")
        )
    if not ok:
        raise SystemExit(1)
