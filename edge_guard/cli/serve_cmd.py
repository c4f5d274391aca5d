"""`edge-guard serve`: load the model once and answer HTTP requests (uvicorn) until stopped.

The server's settings resolve like every command's (flag > environment > config.toml >
default, `edge_guard.settings.resolve`): its prompt, reasoning-path and sampling flags become the
defaults of every request (a `/v1/classify` request may override each), its engine flags
load the model. It refuses at start what `classify` refuses with the same flags.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import signal
from contextlib import asynccontextmanager
from typing import Any

import click

from edge_guard.cli.options import (
    db_option,
    engine_options,
    model_option,
    pass_opts,
    prompt_options,
    sampling_options,
    settings_from_opts,
)
from edge_guard.errors import EdgeGuardError

GRACE_S = 8.0  # seconds in-flight requests get to finish after SIGTERM / Ctrl-C
MAX_TOKENS_LIMIT = 8192  # a request's max_tokens cap (or the server's default, if higher)
_ORIGIN = re.compile(r"^https?://[^/\s?#]+$")
_KEY = re.compile(r"^[\x21-\x7e]+$")  # visible ASCII: what every HTTP client can send


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_api_key(var: str | None, host: str) -> str | None:
    """The key from env var `var`; a non-loopback `host` without one is refused, and so is
    a key that HTTP clients cannot all send (anything but visible ASCII)."""
    key = None
    if var:
        key = os.environ.get(var, "")
        if not key.strip():
            raise EdgeGuardError(
                f"--api-key-env {var}: that environment variable is empty or unset"
            )
        key = key.strip()
        if not _KEY.match(key):
            raise EdgeGuardError(
                f"--api-key-env {var}: the key must be visible ASCII "
                "characters (no spaces or accents): clients send it as "
                "header bytes"
            )
    if key is None and not is_loopback(host):
        raise EdgeGuardError(
            f"refusing to bind {host} without an API key: pass --api-key-env VAR "
            "(or bind 127.0.0.1)"
        )
    return key


def check_origins(origins: tuple[str, ...]) -> tuple[str, ...]:
    for origin in origins:
        if not _ORIGIN.match(origin.rstrip("/")):
            raise click.BadParameter(
                f"{origin!r} is not an origin like https://app.example:8443 "
                "(exact origins only, no '*')",
                param_hint="'--cors-origin'",
            )
    return tuple(o.rstrip("/") for o in origins)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=8089, show_default=True)
@click.option(
    "--policy",
    "-p",
    "policies",
    multiple=True,
    help="Policy to preload and use when a request names none (repeatable).",
)
@click.option("--set", "policy_set", default=None, help="Policy set to preload (the default).")
@click.option(
    "--api-key-env",
    "key_env",
    default=None,
    metavar="VAR",
    help="Environment variable holding the bearer key clients must send.",
)
@click.option(
    "--allow-inline-policies",
    is_flag=True,
    help="Accept policy text in /v1/classify requests (built-in parsers only).",
)
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    metavar="ORIGIN",
    help="A browser origin allowed to call (repeatable); other Origins are refused.",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    metavar="NAME",
    help="A Host name to answer besides the bound address and localhost "
    "(repeatable; other names are refused: DNS rebinding).",
)
@click.option(
    "--max-texts",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Texts per request.",
)
@click.option(
    "--max-text-chars",
    type=click.IntRange(min=1),
    default=64_000,
    show_default=True,
    help="Characters per text.",
)
@click.option(
    "--max-body",
    type=click.IntRange(min=1),
    default=4 << 20,
    show_default=True,
    help="Request body bytes (larger: 413).",
)
@click.option(
    "--deadline",
    type=click.FloatRange(min=0, min_open=True),
    default=600.0,
    show_default=True,
    help="Seconds a request may take (then 504; completed labels stay stored).",
)
@click.option(
    "--log-level",
    default="warning",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
@click.option(
    "--truncate",
    is_flag=True,
    help="Default for requests: cut texts too long for the context instead of failing.",
)
@click.option(
    "--uds",
    default=None,
    metavar="PATH",
    help="Listen on this Unix socket instead of TCP (mode 0600, in a directory of "
    "yours; connections from other users are refused).",
)
@click.option(
    "--keep-alive",
    "idle_exit",
    default=None,
    metavar="DURATION",
    help="Exit after this long without a request (300, 90s, 5m; default: never).",
)
@db_option
@engine_options
@sampling_options
@prompt_options
@model_option
@pass_opts
def serve(opts: dict[str, Any]) -> None:
    """Serve the model over HTTP: /v1/moderations (OpenAI shape), /v1/classify, /docs.

    The prompt, reasoning and sampling flags are the defaults of every request."""
    host, port = opts["host"], opts["port"]
    api_key = read_api_key(opts["key_env"], host)
    cors = check_origins(opts["cors_origins"])
    from edge_guard.warm.listen import listener_from_options

    listener = listener_from_options(opts["uds"], opts["idle_exit"])  # binds before the load
    app, core = build_app(opts, api_key=api_key, cors=cors)
    where = f"unix:{opts['uds']}" if opts["uds"] else f"http://{host}:{port}"
    click.echo(
        f"edge-guard serve: model {core.backend.model_ref} on {where} "
        f"(docs at /docs; Ctrl-C stops)",
        err=True,
    )
    run_server(app, core, host, port, opts["log_level"], listener=listener)


def build_app(
    opts: dict[str, Any], *, api_key: str | None = None, cors: tuple[str, ...] = ()
) -> tuple[Any, Any]:
    """The app and its core from the command's options (settings resolved, model loaded,
    default policies checked under the default settings and their prefixes preloaded)."""
    from edge_guard.service.app import create_app
    from edge_guard.service.guard import HostRule

    core = build_core(opts)
    app = create_app(
        core,
        api_key=api_key,
        version=_version(),
        cors_origins=cors,
        hosts=HostRule(opts["host"], opts["allowed_hosts"]),
    )
    app.router.lifespan_context = _lifespan(core)
    return app, core


def build_core(opts: dict[str, Any]) -> Any:
    """Settings (flags > env > config.toml), the backend and store they name, the policies."""
    from edge_guard.api import build_backend
    from edge_guard.service.core import Limits, ServiceCore
    from edge_guard.store import Store

    policies = list(opts["policies"])
    if opts["policy_set"] and policies:
        raise EdgeGuardError("give --policy or --set, not both")
    # serve runs the model here ([backend] in config.toml is for its clients)
    settings = settings_from_opts(opts).replace(backend="local")
    backend = build_backend(settings)
    limits = Limits(
        max_body_bytes=opts["max_body"],
        max_texts=opts["max_texts"],
        max_text_chars=opts["max_text_chars"],
        deadline_s=opts["deadline"],
        max_tokens=max(MAX_TOKENS_LIMIT, settings.max_tokens),
    )
    core = ServiceCore(
        backend,
        Store(settings.db),
        settings,
        default_policies=policies,
        default_set=opts["policy_set"],
        allow_inline=opts["allow_inline_policies"],
        limits=limits,
    )
    try:
        core.preload()
    except BaseException:
        core.shutdown(grace_s=0)
        core.store.close()
        raise
    return core


def run_server(
    app: Any, core: Any, host: str, port: int, log_level: str, listener: Any = None
) -> None:
    """uvicorn until SIGTERM/Ctrl-C: running requests get GRACE_S, then a 503. `listener`
    (`edge_guard.warm.listen`): a Unix socket instead of TCP and/or the idle exit."""
    import uvicorn

    if listener is not None:
        app = listener.wrap(app)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=math.ceil(GRACE_S) + 5,
        access_log=False,
        **(listener.config_kwargs() if listener is not None else {}),
    )

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            core.begin_shutdown(GRACE_S)  # running requests: GRACE_S to finish, then 503
            super().handle_exit(sig, frame)

    server = Server(config)
    if listener is not None:
        listener.started(core.backend.model_ref, server)
    previous = _catch_sigterm()
    terminated = False
    try:
        server.run()
    except _Terminated:
        terminated = True
    finally:
        if previous is not None:  # a second SIGTERM must not cut the cleanup short
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if listener is not None:
            listener.close()
        core.shutdown(grace_s=0)
        core.store.close()  # checkpoints the WAL: the labels are in the store's own file
        if previous is not None:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if terminated else previous)
    if terminated:  # end as uvicorn would have: by the signal (the exit status says so)
        os.kill(os.getpid(), signal.SIGTERM)


class _Terminated(BaseException):
    """SIGTERM, which uvicorn re-raises after its graceful stop."""


def _catch_sigterm() -> Any:
    """uvicorn re-raises SIGTERM after its graceful stop with the handler it found: with
    the default one the process dies there and `run_server`'s cleanup never runs. This
    handler raises `_Terminated` instead (main thread only); returns the one it replaced
    (None when it could not be set)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def terminated(_sig: int, _frame: Any) -> None:
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, terminated)
    return signal.SIG_DFL if previous is None else previous  # None: not set from Python


def _lifespan(core: Any) -> Any:
    @asynccontextmanager
    async def lifespan(_app: Any) -> Any:
        yield
        import asyncio

        # uvicorn has waited for open requests (graceful timeout); cancel what is left.
        await asyncio.to_thread(core.shutdown, 0.0)

    return lifespan


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("edge-guard")
    except PackageNotFoundError:
        return "0"
