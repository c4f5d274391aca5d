"""`edge-guard policies sets`, and `policies show|check SET`: list, read and validate policy sets.

The `policies` group (cli/policies_cmd.py) registers `sets` and calls `show_set`/`check_set`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from edge_guard.defaults import DEFAULT_CTX
from edge_guard.errors import PolicyError
from edge_guard.sanitize import term, term_json, term_line

PolicyReport = Callable[[Any, int], dict[str, Any]]


def set_report(ref: str, policy_report: PolicyReport, n_ctx: int = DEFAULT_CTX) -> dict[str, Any]:
    """Load a set and check every member (tokens, parser) plus the combined-mode prompt."""
    from edge_guard.harmony.render import PromptConfig, PromptRenderer
    from edge_guard.harmony.vocab import o200k_harmony_vocab
    from edge_guard.policy.combined import combined_policy
    from edge_guard.policy.sets import load_set

    pset = load_set(ref)
    members = []
    for m in pset.members:
        try:
            rep = policy_report(m.policy, n_ctx)
        except PolicyError as exc:
            raise PolicyError(f"set {pset.name}: {exc}") from None
        members.append({**rep, "ref": m.ref, "threshold": m.threshold})
    combined = combined_policy(pset)
    n_combined = len(PromptRenderer(o200k_harmony_vocab()).prefix(combined.text, PromptConfig()))
    warnings = []
    if n_combined + 64 > n_ctx:
        warnings.append(
            f"combined mode: the prompt prefix is {n_combined} tokens and cannot fit "
            f"a {n_ctx}-token context (separate mode still works)"
        )
    return {
        "name": pset.name,
        "path": str(pset.path) if pset.path else None,
        "description": pset.description,
        "policies": members,
        "separate_prefix_tokens": sum(int(m["prompt_prefix_tokens"]) for m in members),
        "combined_prefix_tokens": n_combined,
        "warnings": warnings,
    }


@click.command("sets")
@click.option("--json", "as_json", is_flag=True)
def sets_cmd(as_json: bool) -> None:
    """Policy sets found in policies/sets/ (./policies, the data dir and the shipped ones)."""
    from edge_guard.policy.sets import list_sets, load_set

    rows = []
    for path in list_sets():
        try:
            s = load_set(path)
            rows.append(
                {
                    "name": s.name,
                    "policies": s.names,
                    "path": str(path),
                    "description": s.description,
                }
            )
        except PolicyError as exc:
            rows.append(
                {
                    "name": path.stem,
                    "policies": [],
                    "path": str(path),
                    "description": f"error: {exc}",
                }
            )
    if as_json:
        click.echo(term_json(rows))
        return
    for r in rows:
        members = ", ".join(r["policies"]) or "?"
        click.echo(term_line(f"{r['name']:<16} [{members}] {r['description']}  ({r['path']})"))
    if not rows:
        click.echo("no policy sets (add one as policies/sets/<name>.toml)")


def show_set(name: str) -> None:
    """`policies show SET`: the members, their thresholds and descriptions."""
    from edge_guard.policy.sets import load_set

    s = load_set(name)
    click.echo(
        click.style(f"# set {term_line(s.name)}", bold=True)
        + term_line(f"  ({len(s.members)} policies; {s.path})")
    )
    if s.description:
        click.echo(term(s.description))
    click.echo()
    for m in s.members:
        th = f"  flag at P(violation) >= {m.threshold:g}" if m.threshold is not None else ""
        click.echo(
            term_line(f"- {m.name:<16} {m.policy.output.kind:<7}{th}  {m.policy.description}")
        )
    click.echo(
        "\nflagged = any policy's verdict is violation; an undetermined policy is shown as "
        "undetermined, never as not flagged"
    )


def check_set(ref: str, ctx: int, as_json: bool, policy_report: PolicyReport) -> None:
    """`policies check SET` (`policy_report` checks one member policy)."""
    report = set_report(ref, policy_report, ctx)
    if as_json:
        click.echo(term_json(report))
        return
    click.echo(f"ok: set {term_line(report['name'])} — {len(report['policies'])} policies")
    for m in report["policies"]:
        th = f", threshold {m['threshold']:g}" if m["threshold"] is not None else ""
        click.echo(
            f"  {term_line(m['name']):<16} output {m['output']['kind']}, parser {m['parser']}, "
            f"prefix {m['prompt_prefix_tokens']} tokens{th}"
        )
        for w in m["warnings"]:
            click.echo(click.style(term(f"  warning: {m['name']}: {w}"), fg="yellow"))
    click.echo(
        f"prompt prefixes: separate {report['separate_prefix_tokens']} tokens in all, "
        f"combined {report['combined_prefix_tokens']} tokens"
    )
    for w in report["warnings"]:
        click.echo(click.style(f"warning: {term(w)}", fg="yellow"))
