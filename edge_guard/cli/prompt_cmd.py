"""`edge-guard prompt`: print exactly what the model sees for a policy and a text or conversation."""

from __future__ import annotations

import sys
from typing import Any

import click

from edge_guard.cli.options import pass_opts
from edge_guard.conversation import TARGETS, Conversation, item_content
from edge_guard.engine.sampling import DEFAULT_MAX_TOKENS
from edge_guard.errors import EdgeGuardError
from edge_guard.harmony.render import DEFAULT_EFFORT, DEFAULT_STYLE, EFFORTS, STYLES
from edge_guard.sanitize import term, term_json
from edge_guard.settings.resolve import DEFAULT_CTX
from edge_guard.settings.values import REASONING_MODES


def read_text_arg(text: str) -> str:
    """TEXT `-` reads standard input."""
    if text == "-":
        data = sys.stdin.buffer.read()
        return data.decode("utf-8", "replace")
    return text


MAX_MESSAGES_BYTES = 64 << 20


def read_messages(ref: str, target: str | None) -> Conversation:
    """`--messages FILE` (`-` = stdin): a JSON list of {role, content}, or {"messages", "target"}."""
    if ref == "-":
        data = sys.stdin.buffer.read(MAX_MESSAGES_BYTES + 1)
    else:
        try:
            with open(ref, "rb") as fh:
                data = fh.read(MAX_MESSAGES_BYTES + 1)
        except OSError as exc:
            raise EdgeGuardError(f"{ref}: cannot read messages ({exc.strerror or exc})") from None
    if len(data) > MAX_MESSAGES_BYTES:
        raise EdgeGuardError(f"{ref}: messages file over {MAX_MESSAGES_BYTES} bytes")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise EdgeGuardError(f"{ref}: messages are not UTF-8 (bad byte at {exc.start})") from None
    return Conversation.from_json(text, target, "stdin" if ref == "-" else ref)


def text_or_messages(
    text: str | None, messages: str | None, target: str | None
) -> str | Conversation:
    """The input of classify/prompt: TEXT, or the conversation of --messages (one of them)."""
    if text is not None and messages is not None:
        raise click.UsageError("give TEXT or --messages FILE, not both")
    if messages is not None:
        return read_messages(messages, target)
    if text is None:
        raise click.UsageError("Missing argument 'TEXT'. Give TEXT or --messages FILE.")
    if target is not None:
        raise click.UsageError("--target needs --messages")
    return read_text_arg(text)


messages_option = click.option(
    "--messages",
    default=None,
    metavar="FILE",
    help='A conversation to classify instead of TEXT: a JSON list of {"role", "content"} '
    '(or {"messages": [...], "target": ...}); `-` reads stdin.',
)
target_option = click.option(
    "--target",
    type=click.Choice(TARGETS),
    default=None,
    help="Which message of --messages to judge: last (default), user, assistant, all.",
)


@click.command()
@click.option("--policy", "-p", required=True, help="Policy name, folder, or file.")
@click.option("--style", type=click.Choice(STYLES), default=DEFAULT_STYLE, show_default=True)
@click.option("--effort", type=click.Choice(EFFORTS), default=DEFAULT_EFFORT, show_default=True)
@click.option(
    "--date",
    default=None,
    help="Current date line (YYYY-MM-DD); chat-template uses today if unset.",
)
@click.option(
    "--reasoning",
    type=click.Choice(REASONING_MODES),
    default="full",
    show_default=True,
    help="none / none-empty-analysis: show the one-pass answer header appended.",
)
@click.option(
    "--truncate",
    is_flag=True,
    help="Cut the item to fit --ctx as classify --truncate does (a conversation's "
    "context first) and show the cut prompt.",
)
@click.option(
    "--ctx",
    type=int,
    default=DEFAULT_CTX,
    show_default=True,
    help="Context size (tokens) that --truncate fits into.",
)
@click.option(
    "--max-tokens",
    type=int,
    default=DEFAULT_MAX_TOKENS,
    show_default=True,
    help="Output tokens --truncate keeps room for (at most half the context).",
)
@click.option(
    "--model",
    "-m",
    "model_ref",
    default=None,
    help="Use this model's vocabulary and trained context (default: o200k_harmony).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print {style, effort, reasoning, text, token_ids, n_tokens, truncation, ...}.",
)
@messages_option
@target_option
@click.argument("text", required=False)
@pass_opts
def prompt(opts: dict[str, Any]) -> None:
    """Show the exact prompt (specials visible) that classify sends for POLICY and TEXT
    (`-` = stdin) or a conversation (--messages FILE), with --truncate / --reasoning too."""
    item = text_or_messages(opts["text"], opts["messages"], opts["target"])
    from edge_guard.classification import onepass
    from edge_guard.classification.request import NO_CUT, build_prompt
    from edge_guard.classification.truncation import text_problem
    from edge_guard.harmony.render import PromptConfig, PromptRenderer
    from edge_guard.policy.core import load_policy

    pol = load_policy(opts["policy"])
    onepass.check_policy(pol, opts["reasoning"])  # what classify refuses, prompt refuses
    config = PromptConfig(style=opts["style"], effort=opts["effort"], date=opts["date"]).resolved()
    vocab, trained = _vocab(opts["model_ref"])
    renderer = PromptRenderer(vocab)
    fit, n_ctx = NO_CUT, None
    if opts["truncate"] and not text_problem(item_content(item)):
        from edge_guard.classification.truncation import Fitter

        n_ctx = min(opts["ctx"], trained) if opts["ctx"] and trained else opts["ctx"] or trained
        if not n_ctx:
            raise click.UsageError("--ctx 0 (the model's own context) needs --model")
        fit = Fitter(renderer, pol.text, config, n_ctx, opts["max_tokens"]).fit(item)
        if fit.error:
            raise EdgeGuardError(fit.error)
    rendered = build_prompt(renderer, pol.text, config, item, fit)
    ids = rendered.token_ids + onepass.answer_header(vocab, opts["reasoning"])
    shown = vocab.decode(ids)
    if opts["as_json"]:
        out = {
            "style": config.style,
            "effort": config.effort,
            "date": config.date,
            "reasoning": opts["reasoning"],
            "policy": pol.name,
            "text": shown,
            "token_ids": ids,
            "n_tokens": len(ids),
            "prefix_len": rendered.prefix_len,
            "n_ctx": n_ctx,
            "truncation": fit.record,
        }
        click.echo(term_json(out))
        return
    click.echo(term(shown))  # control characters shown as escapes, never obeyed
    if fit.record is not None:
        r = fit.record
        what = (
            "the text's middle"
            if r["truncation"] == "middle"
            else f"message(s) {', '.join(map(str, r['cut_messages']))}"
        )
        click.echo(
            f"truncated to fit {n_ctx} tokens: {r['original_tokens']} -> "
            f"{r['kept_tokens']} tokens of content, cut {what}",
            err=True,
        )


def _vocab(model_ref: str | None) -> tuple[Any, int | None]:
    """(vocabulary, trained context) of --model, else o200k_harmony and no cap."""
    from edge_guard.harmony.vocab import Vocab, o200k_harmony_vocab

    if not model_ref:
        return o200k_harmony_vocab(), None
    from edge_guard.gguf.check import check_model_file
    from edge_guard.registry import resolve

    path = resolve(model_ref).path
    info = check_model_file(path)
    return Vocab.from_gguf(path), int(info.arch_key("context_length") or 0) or None
