"""`edge-guard policies list | show | check`: find, read and validate policies."""

from __future__ import annotations

from typing import Any

import click

from edge_guard.defaults import DEFAULT_CTX
from edge_guard.errors import PolicyError
from edge_guard.sanitize import term, term_json, term_line

IDEAL_TOKENS = (400, 600)


def policy_report(ref: str, n_ctx: int = DEFAULT_CTX) -> dict[str, Any]:
    """Load a policy, import its parser, count its tokens; raise PolicyError if unusable."""
    from edge_guard.harmony.render import PromptConfig, PromptRenderer
    from edge_guard.harmony.vocab import o200k_harmony_vocab
    from edge_guard.policy.core import load_policy

    policy = load_policy(ref)
    renderer = PromptRenderer(o200k_harmony_vocab())
    n_policy = len(renderer.encoder.encode(policy.text))
    n_prefix = len(renderer.prefix(policy.text, PromptConfig()))
    warnings = []
    lo, hi = IDEAL_TOKENS
    if not lo <= n_policy <= hi:
        warnings.append(
            f"policy is {n_policy} tokens; the gpt-oss-safeguard guide finds {lo}-{hi} works best"
        )
    if n_prefix + 64 > n_ctx:
        raise PolicyError(
            f"{ref}: the policy prompt is {n_prefix} tokens and cannot fit a {n_ctx}-token context"
        )
    return {
        "name": policy.name,
        "path": str(policy.path) if policy.path else None,
        "description": policy.description,
        "output": policy.output.as_dict(),
        "judges": policy.judges,
        "parser": "custom parse()" if policy.parser else f"built-in {policy.output.kind}",
        "policy_tokens": n_policy,
        "prompt_prefix_tokens": n_prefix,
        "hash": policy.hash,
        "cases": str(policy.cases_path) if policy.cases_path else None,
        "warnings": warnings,
    }


@click.group()
def policies() -> None:
    """List, show, check (and test) policies."""


@policies.command("list")
@click.option("--json", "as_json", is_flag=True)
def list_cmd(as_json: bool) -> None:
    """Policies found in ./policies, the data dir and the shipped set."""
    from edge_guard.policy.core import list_policies, load_policy

    rows = []
    for path in list_policies():
        try:
            p = load_policy(path)
            rows.append(
                {
                    "name": p.name,
                    "kind": p.output.kind,
                    "path": str(path),
                    "description": p.description,
                }
            )
        except PolicyError as exc:
            rows.append(
                {"name": path.stem, "kind": "?", "path": str(path), "description": f"error: {exc}"}
            )
    if as_json:
        click.echo(term_json(rows))
        return
    for r in rows:
        click.echo(
            f"{term_line(r['name']):<16} {r['kind']:<7} {term_line(r['description'])}  ({term_line(r['path'])})"
        )


@policies.command("show")
@click.argument("name")
def show(name: str) -> None:
    """Print a policy's text and its output format (or a policy set's members)."""
    from edge_guard.policy.core import load_policy
    from edge_guard.policy.sets import is_set_ref

    if is_set_ref(name):
        return show_set(name)
    p = load_policy(name)
    click.echo(
        click.style(f"# {term_line(p.name)}", bold=True)
        + f"  ({p.output.kind}; {term_line(p.path)})"
    )
    if p.description:
        click.echo(term(p.description))
    click.echo()
    click.echo(term(p.text.rstrip("\n")))


@policies.command("check")
@click.argument("path")
@click.option(
    "--ctx", type=int, default=DEFAULT_CTX, show_default=True, help="Context the policy must fit."
)
@click.option("--json", "as_json", is_flag=True)
def check(path: str, ctx: int, as_json: bool) -> None:
    """Load a policy (or each policy of a set), import its parser, count its tokens and
    report its output kind."""
    from edge_guard.policy.sets import is_set_ref

    if is_set_ref(path):
        return check_set(path, ctx, as_json, policy_report)
    report = policy_report(path, ctx)
    if as_json:
        click.echo(term_json(report))
        return
    out = report["output"]
    click.echo(
        f"ok: {term_line(report['name'])} — output {out['kind']}"
        f"{' ' + term_line(out['labels']) if out['labels'] else ''}, parser {report['parser']}, "
        f"judges {report['judges']}"
    )
    click.echo(
        f"tokens: policy {report['policy_tokens']}, prompt prefix {report['prompt_prefix_tokens']}"
    )
    for w in report["warnings"]:
        click.echo(click.style(f"warning: {term(w)}", fg="yellow"))


from edge_guard.cli.policy_tests_cmd import diff_cmd, history_cmd, test_cmd  # noqa: E402

for _command in (test_cmd, history_cmd, diff_cmd):  # `policies test | history | diff`
    policies.add_command(_command)
from edge_guard.cli.sets_cmd import check_set, sets_cmd, show_set  # noqa: E402 - policy sets

policies.add_command(sets_cmd)
from edge_guard.cli.review_cmd import cases_cmd  # noqa: E402 - `policies cases add --from-review`

policies.add_command(cases_cmd)
