"""Shared click options (model, prompt, sampling, engine, store) and their conversion.

Every command that classifies uses `@classify_options` and `build_classifier(...)`, so
`classify`, `run`, `study`, `compare` and `policies test` accept the same flags.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import click

from edge_guard.config import BACKEND_KINDS, SERVER_KINDS, backend_config
from edge_guard.engine.sampling import DEFAULT_MAX_TOKENS
from edge_guard.harmony.render import DEFAULT_EFFORT, DEFAULT_STYLE, EFFORTS, STYLES

# click option name -> `config.backend_config` key.
_BACKEND_KEYS = {"backend": "kind", "url": "url", "api_key_env": "api_key_env",
                 "concurrency": "concurrency", "timeout": "timeout", "server_kind": "server_kind"}  # fmt: skip


def model_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--model", "-m", default=None,
        help="Model: manifest id (name:tag), .gguf path, hf:REPO/FILE.gguf[@REV], or synth:PRESET. "
        "Default: $EDGE_GUARD_MODEL or gpt-oss-safeguard-20b:mxfp4.",
    )(f)  # fmt: skip


def db_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--db", default=None, type=click.Path(dir_okay=False),
                        help="Result store (default: $EDGE_GUARD_HOME/edge_guard.db).")(f)  # fmt: skip


def prompt_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--date", default=None, help="Current date line, YYYY-MM-DD.")(f)
    f = click.option("--effort", type=click.Choice(EFFORTS), default=DEFAULT_EFFORT, show_default=True,
                     help="Reasoning effort.")(f)  # fmt: skip
    f = click.option("--style", type=click.Choice(STYLES), default=DEFAULT_STYLE, show_default=True,
                     help="Prompt format: harmony (developer message) or chat-template (server style).")(f)  # fmt: skip
    return f


def sampling_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS, show_default=True,
                     help="Most tokens to generate (reasoning + answer).")(f)  # fmt: skip
    f = click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed.")(f)
    f = click.option("--temperature", type=float, default=0.0, show_default=True,
                     help="0 = greedy (reproducible).")(f)  # fmt: skip
    return f


def engine_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--parallel", type=int, default=None,
                     help="Sequences decoded at once (default 8 for batches).")(f)  # fmt: skip
    f = click.option("--threads", type=int, default=None, help="CPU threads (default: all cores).")(
        f
    )
    f = click.option("--gpu-layers", default="auto", show_default=True,
                     help="Layers to offload to the GPU ('auto' = all when the build has a GPU).")(f)  # fmt: skip
    f = click.option(
        "--ctx", type=int, default=16384, show_default=True, help="Context size (tokens)."
    )(f)
    f = click.option(
        "--yes", "-y", is_flag=True, help="Answer yes to prompts (e.g. pulling a model)."
    )(f)
    f = click.option("--force", is_flag=True,
                     help="Load the model even if it does not fit the free RAM/VRAM.")(f)  # fmt: skip
    return f


def backend_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Where to run: the local engine or an OpenAI-compatible server (defaults: config file/env)."""
    f = click.option("--server-kind", type=click.Choice(SERVER_KINDS), default=None,
                     help="Server dialect (default: detected; $EDGE_GUARD_SERVER_KIND).")(f)  # fmt: skip
    f = click.option("--timeout", type=float, default=None,
                     help="Seconds per server request (default 600; $EDGE_GUARD_SERVER_TIMEOUT).")(f)  # fmt: skip
    f = click.option("--concurrency", type=int, default=None,
                     help="Server requests in flight (default: llama-server's slots, 32 for vLLM).")(f)  # fmt: skip
    f = click.option("--api-key-env", default=None, metavar="VAR",
                     help="Environment variable holding the server's API key.")(f)  # fmt: skip
    f = click.option("--url", default=None,
                     help="Server URL, e.g. http://gpu-box:8080 (llama-server or vLLM; "
                     "$EDGE_GUARD_SERVER_URL). --model must name a local copy of the served "
                     "GGUF: its tokenizer renders the prompts.")(f)  # fmt: skip
    f = click.option("--backend", type=click.Choice(BACKEND_KINDS), default=None,
                     help="local (llama.cpp here) or server (default: $EDGE_GUARD_BACKEND, "
                     "config.toml [backend], else local).")(f)  # fmt: skip
    return f


def classify_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Model + prompt + sampling + engine + backend + store options."""
    for deco in (db_option, backend_options, engine_options, sampling_options, prompt_options,
                 model_option):  # fmt: skip
        f = deco(f)
    return click.option("--truncate", is_flag=True,
                        help="Cut texts too long for the context (the middle is dropped; "
                        "recorded in the result) instead of failing them.")(f)  # fmt: skip


def build_classifier(policy: str, opts: dict[str, Any], *, use_cache: bool = True,
                     model: str | None = None) -> Any:  # fmt: skip
    """A `Classifier` from the options collected by `@classify_options` (popped from `opts`)."""
    from edge_guard.backends.local import EngineSettings
    from edge_guard.classifier import Classifier, make_backend
    from edge_guard.engine.sampling import SamplingConfig
    from edge_guard.store import Store

    sampling = SamplingConfig(
        temperature=opts.pop("temperature", 0.0),
        seed=opts.pop("seed", 0),
        max_tokens=opts.pop("max_tokens", DEFAULT_MAX_TOKENS),
    )
    parallel = opts.pop("parallel", None)
    settings = EngineSettings(
        n_ctx=opts.pop("ctx", 16384),
        n_gpu_layers=opts.pop("gpu_layers", "auto"),
        n_threads=opts.pop("threads", None),
        n_parallel=parallel or 8,
        extra={"force": True} if opts.pop("force", False) else {},
    )
    model_ref = model if model is not None else opts.pop("model", None)
    backend_factory = opts.pop("backend_factory", None)
    yes = opts.pop("yes", False)
    backend_cfg = backend_config({key: opts.pop(opt, None) for opt, key in _BACKEND_KEYS.items()})
    if backend_factory is not None:
        backend = backend_factory(model_ref, settings)
    elif backend_cfg.kind == "server":
        from edge_guard.backends.server import server_backend_from_config

        backend = server_backend_from_config(backend_cfg, model_ref)
    else:
        backend = make_backend(model_ref, settings, yes=yes, interactive=_interactive())
    return Classifier(
        policy,
        backend,
        style=opts.pop("style", DEFAULT_STYLE),
        effort=opts.pop("effort", DEFAULT_EFFORT),
        date=opts.pop("date", None),
        sampling=sampling,
        store=Store(opts.pop("db", None)),
        use_cache=use_cache,
        parallel=parallel,
        truncate=opts.pop("truncate", False),
    )


def _interactive() -> bool:
    import sys

    return sys.stdin.isatty() and sys.stderr.isatty() and not os.environ.get("CI")


def pass_opts(f: Callable[..., Any]) -> Callable[..., Any]:
    """Collect all keyword options into one dict argument `opts` (after the named ones)."""

    @functools.wraps(f)
    def wrapper(**kwargs: Any) -> Any:
        return f(opts=kwargs)

    return wrapper
