"""`edge-guard classify`: one text or conversation against one policy: verdict, score, answer, reasoning."""

from __future__ import annotations

import sys
from typing import Any

import click

from edge_guard.cli.multi_opts import multi_json, policy_options, policy_set, print_multi
from edge_guard.cli.options import build_classifier, classify_options, pass_opts
from edge_guard.cli.prompt_cmd import messages_option, target_option, text_or_messages
from edge_guard.cli.warm_cmd import keep_alive_option
from edge_guard.conversation import Conversation
from edge_guard.result import headline_score
from edge_guard.sanitize import term, term_json

VERDICT_STYLE = {
    "violation": ("VIOLATION", "red"),
    "no_violation": ("NO VIOLATION", "green"),
    "undetermined": ("UNDETERMINED", "yellow"),
}


SCORE_FORMATS = {
    "expected_rating": "expected rating {:.2f}",
    "p_violation": "P(violation) {:.3f}",
    "score": "score {:g}",
}


def score_line(result: Any) -> str:
    score = headline_score(result.metadata or {}, result.float_label)
    return "no score" if score is None else SCORE_FORMATS[score[0]].format(score[1])


def timing_line(result: Any) -> str:
    resp = result.model_response
    if resp is None:
        return ""
    t = resp.timings
    return (
        f"prompt {t.prompt_tokens} tok ({t.cached_tokens} from the shared prefix state) {t.prompt_ms / 1000:.2f} s · "
        f"output {t.output_tokens} tok {t.output_ms / 1000:.2f} s ({t.output_tok_per_s:.1f} tok/s)"
    )


def print_result(result: Any, streamed: bool = False) -> None:
    """The result for a person; `streamed`: its reasoning was shown as it came."""
    label, color = VERDICT_STYLE[str(result.verdict)]
    cached = click.style("  [cached]", fg="cyan") if result.cached else ""
    click.echo(click.style(label, fg=color, bold=True) + f"  {score_line(result)}{cached}")
    resp = result.model_response
    final = resp.response if resp else None
    path = result.metadata.get("path")  # one-pass / cascade (edge_guard.classification.cascade)
    if path is not None:
        how = "one pass, no reasoning" if path == "one-pass" else "escalated to full reasoning"
        click.echo(f"path: {how} (label {term(repr(result.fine_grain_label))})")
    elif final is None:
        click.echo("answer: (none — no complete final message)")
    if final is not None:
        click.echo(f"answer: {term(repr(final))}")
    if resp is not None and resp.finish_reason != "return":
        click.echo(f"finish: {resp.finish_reason}")
    if result.error:
        click.echo(click.style(f"error: {term(result.error)}", fg="yellow"))
    if resp is not None and resp.reasoning and not streamed:
        click.echo(click.style("reasoning: " + term(resp.reasoning.strip()), dim=True))
    click.echo(click.style(timing_line(result), dim=True))


@click.command()
@policy_options()
@click.option("--no-cache", is_flag=True, help="Recompute even if cached (and overwrite).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@classify_options
@keep_alive_option
@messages_option
@target_option
@click.argument("text", required=False)
@pass_opts
def classify(opts: dict[str, Any]) -> None:
    """Classify TEXT (`-` reads stdin), or a conversation (--messages FILE), against a policy."""
    text = text_or_messages(opts.pop("text"), opts.pop("messages"), opts.pop("target"))
    as_json = opts.pop("as_json")
    policy, mode = policy_set(opts)
    # A set (or several policies) goes whole: to an edge-guard server by the set's name, so
    # the server applies its thresholds (the Python API's path: api.classify_set_with).
    classifier = build_classifier(policy, opts, use_cache=not opts.pop("no_cache"))
    if mode is not None:  # several policies (or a set): a result per policy
        from edge_guard.api import classify_set_with

        mr = classify_set_with(classifier, policy, [text], mode=mode)[0]
        if as_json:
            click.echo(term_json(multi_json(mr, policy, mode, classifier)))
        else:
            print_multi(mr, policy, mode, score_line, VERDICT_STYLE)
        return
    stream = not as_json and sys.stdout.isatty()
    streamed = False

    def on_event(_i: int, event: Any) -> None:
        nonlocal streamed
        from edge_guard.harmony.parse import ContentDelta

        if isinstance(event, ContentDelta) and event.channel == "analysis":
            if not streamed:
                click.echo(click.style("reasoning: ", dim=True), nl=False)
                streamed = True
            click.echo(click.style(term(event.text), dim=True), nl=False)

    result = classifier.classify([text], on_event=on_event if stream else None)[0]
    if streamed:
        click.echo()
    if as_json:
        out = result.to_dict()
        out["model"] = classifier.backend.model_ref
        out["style"] = classifier.prompt_config.style
        out["effort"] = classifier.prompt_config.effort
        click.echo(term_json(out))
    else:
        if isinstance(text, Conversation):
            click.echo(
                f"conversation: {len(text.messages)} messages, judging "
                f"{'all' if text.judged_index is None else text.judged_index + 1} "
                f"({text.judged_role})"
            )
        print_result(result, streamed=streamed)
