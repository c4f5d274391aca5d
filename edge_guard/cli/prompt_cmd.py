"""`edge-guard prompt`: print exactly what the model sees for a policy and a text or conversation."""

from __future__ import annotations

import sys

import click

from edge_guard.conversation import TARGETS, Conversation, item_content
from edge_guard.errors import EdgeGuardError
from edge_guard.harmony.render import DEFAULT_EFFORT, DEFAULT_STYLE, EFFORTS, STYLES
from edge_guard.sanitize import term, term_json


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
            raise EdgeGuardError(
                f"{ref}: cannot read messages ({exc.strerror or exc})"
            ) from None
    if len(data) > MAX_MESSAGES_BYTES:
        raise EdgeGuardError(f"{ref}: messages file over {MAX_MESSAGES_BYTES} bytes")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise EdgeGuardError(
            f"{ref}: messages are not UTF-8 (bad byte at {exc.start})"
        ) from None
    return Conversation.from_json(text, target, "stdin" if ref == "-" else ref)


def text_or_messages(
    text: str | None, messages: str | None, target: str | None
) -> str | Conversation:
    """The input of classify/prompt: TEXT, or the conversation of --messages (one of them)."""
    if text is None and messages is None:
        raise click.UsageError("Missing argument 'TEXT'. Give TEXT or --messages FILE.")
    if text is not None and messages is not None:
        raise click.UsageError("give TEXT or --messages FILE, not both")
    if messages is not None:
        return read_messages(messages, target)
    if target is not None:
        raise click.UsageError("--target needs --messages")
    return read_text_arg(text)  # type: ignore[arg-type]


messages_option = click.option(
    "--messages", default=None, metavar="FILE",
    help='A conversation to classify instead of TEXT: a JSON list of {"role", "content"} '
         '(or {"messages": [...], "target": ...}); `-` reads stdin.',
)  # fmt: skip
target_option = click.option(
    "--target", type=click.Choice(TARGETS), default=None,
    help="Which message of --messages to judge: last (default), user, assistant, all.",
)  # fmt: skip


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
    "--model", "-m", default=None, help="Use this model's vocabulary (default: o200k_harmony)."
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print {style, effort, text, token_ids, n_tokens}."
)
@messages_option
@target_option
@click.argument("text", required=False)
def prompt(policy: str, style: str, effort: str, date: str | None, model: str | None,
           as_json: bool, messages: str | None, target: str | None,
           text: str | None) -> None:  # fmt: skip
    """Show the exact harmony prompt (specials visible) for POLICY and TEXT (`-` = stdin)
    or a conversation (--messages FILE)."""
    item = text_or_messages(text, messages, target)
    from edge_guard.harmony.render import PromptConfig, PromptRenderer
    from edge_guard.harmony.vocab import Vocab, o200k_harmony_vocab
    from edge_guard.policy.core import load_policy

    pol = load_policy(policy)
    config = PromptConfig(style=style, effort=effort, date=date)
    if model:
        from edge_guard.engine.gguf_check import check_model_file
        from edge_guard.registry import resolve

        path = resolve(model).path
        check_model_file(path)
        vocab = Vocab.from_gguf(path)
    else:
        vocab = o200k_harmony_vocab()
    renderer = PromptRenderer(vocab)
    rendered = renderer.render(pol.text, item_content(item), config)
    shown = renderer.display(rendered)
    if as_json:
        out = {
            "style": style,
            "effort": effort,
            "date": rendered.config.date,
            "policy": pol.name,
            "text": shown,
            "token_ids": rendered.token_ids,
            "n_tokens": len(rendered.token_ids),
            "prefix_len": rendered.prefix_len,
        }
        click.echo(term_json(out))
    else:
        click.echo(term(shown))  # control characters shown as escapes, never obeyed
