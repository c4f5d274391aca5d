"""`edge-guard prompt`: print exactly what the model sees for a policy and a text."""

from __future__ import annotations

import json
import sys

import click

from edge_guard.harmony.render import DEFAULT_EFFORT, DEFAULT_STYLE, EFFORTS, STYLES


def read_text_arg(text: str) -> str:
    """TEXT `-` reads standard input."""
    if text == "-":
        data = sys.stdin.buffer.read()
        return data.decode("utf-8", "replace")
    return text


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
@click.argument("text")
def prompt(policy: str, style: str, effort: str, date: str | None, model: str | None,
           as_json: bool, text: str) -> None:  # fmt: skip
    """Show the exact harmony prompt (specials visible) for POLICY and TEXT (`-` = stdin)."""
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
    rendered = renderer.render(pol.text, read_text_arg(text), config)
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
        click.echo(json.dumps(out, ensure_ascii=False))
    else:
        click.echo(shown)
