"""Shared click options (model, prompt, sampling, engine, store) and their conversion.

Every command that classifies uses `@classify_options` and `build_classifier(...)`, so
`classify`, `run`, `study`, `compare` and `policies test` accept the same flags. The flags
are `edge_guard.settings.resolve.Settings` fields: `pass_opts` resolves them (flag > environment >
config.toml > default) and the core `edge_guard.api.build_classifier` builds from them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click
from click.core import ParameterSource

from edge_guard.config import BACKEND_KINDS, SERVER_KINDS
from edge_guard.defaults import DEFAULT_MAX_TOKENS, DEFAULT_MODEL
from edge_guard.harmony.render import DEFAULT_EFFORT, DEFAULT_STYLE, EFFORTS, STYLES
from edge_guard.settings.resolve import (
    DEFAULT_CTX,
    SETTING_NAMES,
    Settings,
    resolve_settings,
    setting_flags,
)
from edge_guard.settings.values import REASONING_MODES

_DEFAULTED = (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)
_FLAGS = ("force", "yes", "truncate")


def model_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--model",
        "-m",
        default=None,
        help="Model: manifest id (name:tag), .gguf path, hf:REPO/FILE.gguf[@REV], or synth:PRESET. "
        f"Default: $EDGE_GUARD_MODEL or {DEFAULT_MODEL}.",
    )(f)


def db_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--db",
        default=None,
        type=click.Path(dir_okay=False),
        help="Result store (default: $EDGE_GUARD_HOME/edge_guard.db).",
    )(f)


def prompt_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option(
        "--cascade",
        default=None,
        metavar="LOW:HIGH",
        help="Score every text in one pass; texts with P(violation) in "
        "[LOW, HIGH] go on to full reasoning (e.g. 0.2:0.8).",
    )(f)
    f = click.option(
        "--reasoning",
        type=click.Choice(REASONING_MODES),
        default="full",
        show_default=True,
        help="full: reason, then answer; none: one forward pass scores the "
        "labels (closed output kinds); none-empty-analysis: the same after an "
        "empty analysis message.",
    )(f)
    f = click.option("--date", default=None, help="Current date line, YYYY-MM-DD.")(f)
    f = click.option(
        "--effort",
        type=click.Choice(EFFORTS),
        default=DEFAULT_EFFORT,
        show_default=True,
        help="Reasoning effort.",
    )(f)
    f = click.option(
        "--style",
        type=click.Choice(STYLES),
        default=DEFAULT_STYLE,
        show_default=True,
        help="Prompt format: harmony (developer message) or chat-template (server style).",
    )(f)
    return f


def sampling_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option(
        "--max-tokens",
        type=int,
        default=DEFAULT_MAX_TOKENS,
        show_default=True,
        help="Most tokens to generate (reasoning + answer).",
    )(f)
    f = click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed.")(f)
    f = click.option(
        "--temperature",
        type=float,
        default=0.0,
        show_default=True,
        help="0 = greedy (reproducible).",
    )(f)
    return f


def engine_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option(
        "--parallel",
        type=int,
        default=None,
        help="Sequences decoded at once (default 8 for batches).",
    )(f)
    f = click.option("--threads", type=int, default=None, help="CPU threads (default: all cores).")(
        f
    )
    f = click.option(
        "--gpu-layers",
        default="auto",
        show_default=True,
        help="Layers to offload to the GPU ('auto' = all when the build has a GPU).",
    )(f)
    f = click.option(
        "--ctx", type=int, default=DEFAULT_CTX, show_default=True, help="Context size (tokens)."
    )(f)
    f = click.option(
        "--yes", "-y", is_flag=True, help="Answer yes to prompts (e.g. pulling a model)."
    )(f)
    f = click.option(
        "--force", is_flag=True, help="Load the model even if it does not fit the free RAM/VRAM."
    )(f)
    return f


def backend_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Where to run: the local engine or an OpenAI-compatible server (defaults: config file/env)."""
    f = click.option(
        "--server-kind",
        type=click.Choice(SERVER_KINDS),
        default=None,
        help="Server dialect (default: detected; $EDGE_GUARD_SERVER_KIND).",
    )(f)
    f = click.option(
        "--timeout",
        type=float,
        default=None,
        help="Seconds per server request (default 600; $EDGE_GUARD_SERVER_TIMEOUT).",
    )(f)
    f = click.option(
        "--concurrency",
        type=int,
        default=None,
        help="Server requests in flight (default: llama-server's slots, 32 for vLLM).",
    )(f)
    f = click.option(
        "--api-key-env",
        default=None,
        metavar="VAR",
        help="Environment variable holding the server's API key.",
    )(f)
    f = click.option(
        "--url",
        default=None,
        help="Server URL, e.g. http://gpu-box:8080 (llama-server or vLLM; "
        "$EDGE_GUARD_SERVER_URL). --model must name a local copy of the served "
        "GGUF: its tokenizer renders the prompts.",
    )(f)
    f = click.option(
        "--backend",
        type=click.Choice(BACKEND_KINDS),
        default=None,
        help="local (llama.cpp here) or server (default: $EDGE_GUARD_BACKEND, "
        "config.toml [backend], else local).",
    )(f)
    return f


def classify_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Model + prompt + sampling + engine + backend + store options."""
    for deco in (
        db_option,
        backend_options,
        engine_options,
        sampling_options,
        prompt_options,
        model_option,
    ):
        f = deco(f)
    return click.option(
        "--truncate",
        is_flag=True,
        help="Cut texts too long for the context (the middle is dropped; "
        "recorded in the result) instead of failing them.",
    )(f)


def build_classifier(
    policy: Any, opts: dict[str, Any], *, use_cache: bool = True, model: str | None = None
) -> Any:
    """A `Classifier` from the options collected by `@classify_options` (popped from `opts`).

    The options become a `Settings` (flag > env > config.toml > default) and the core
    builder `edge_guard.api.build_classifier` does the rest.
    """
    from edge_guard.api import build_classifier as build
    from edge_guard.api import is_interactive

    settings = settings_from_opts(opts, model=model)
    settings = settings.replace(use_cache=settings.use_cache and use_cache)
    return build(policy, settings, interactive=is_interactive(), warm=True)


def settings_from_opts(opts: dict[str, Any], *, model: str | None = None) -> Settings:
    """Pop the `Settings` fields from `opts` and resolve them (None = unset)."""
    flags = setting_flags(opts)
    for name in flags:
        del opts[name]
    if model is not None:
        flags["model"] = model
    return resolve_settings(_unset_flags_off(flags), door="cli")


def _unset_flags_off(flags: dict[str, Any]) -> dict[str, Any]:
    """An on/off flag left off is unset (config or environment may turn it on)."""
    return {k: (None if k in _FLAGS and v is False else v) for k, v in flags.items()}


def pass_opts(f: Callable[..., Any]) -> Callable[..., Any]:
    """Collect all keyword options into one dict argument `opts` (after the named ones).

    The `Settings` fields among them are resolved at once (an option left at its default
    yields to the environment and config.toml), so `opts` holds the values in effect.
    """

    @functools.wraps(f)
    def wrapper(**kwargs: Any) -> Any:
        ctx = click.get_current_context(silent=True)
        flags: dict[str, Any] = {}
        for name in [k for k in kwargs if k in SETTING_NAMES]:
            source = ctx.get_parameter_source(name) if ctx is not None else None
            flags[name] = None if source in _DEFAULTED else kwargs[name]
        if flags:
            resolved = resolve_settings(_unset_flags_off(flags), door="cli")
            kwargs.update({name: getattr(resolved, name) for name in flags})
        return f(opts=kwargs)

    return wrapper
