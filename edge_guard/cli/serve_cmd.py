"""`edge-guard serve`: load the model once and answer HTTP requests (uvicorn) until stopped."""

from __future__ import annotations

import ipaddress
import os
from contextlib import asynccontextmanager
from typing import Any

import click

from edge_guard.cli.options import db_option, engine_options, model_option, prompt_options
from edge_guard.engine.sampling import DEFAULT_MAX_TOKENS
from edge_guard.errors import EdgeGuardError

GRACE_S = 8.0  # seconds in-flight requests get to finish after SIGTERM / Ctrl-C


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_api_key(var: str | None, host: str) -> str | None:
    """The key from env var `var`; a non-loopback `host` without one is refused."""
    key = None
    if var:
        key = os.environ.get(var, "")
        if not key.strip():
            raise EdgeGuardError(
                f"--api-key-env {var}: that environment variable is empty or unset"
            )
        key = key.strip()
    if key is None and not is_loopback(host):
        raise EdgeGuardError(
            f"refusing to bind {host} without an API key: pass --api-key-env VAR "
            "(or bind 127.0.0.1)"
        )
    return key


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=int, default=8089, show_default=True)
@click.option("--policy", "-p", "policies", multiple=True,
              help="Policy to preload and use when a request names none (repeatable).")  # fmt: skip
@click.option("--set", "policy_set", default=None, help="Policy set to preload (the default).")
@click.option("--api-key-env", default=None, metavar="VAR",
              help="Environment variable holding the bearer key clients must send.")  # fmt: skip
@click.option("--allow-inline-policies", is_flag=True,
              help="Accept policy text in /v1/classify requests (built-in parsers only).")  # fmt: skip
@click.option("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS, show_default=True,
              help="Tokens to generate per label when a request sets none.")  # fmt: skip
@click.option("--max-texts", type=int, default=256, show_default=True, help="Texts per request.")
@click.option("--max-text-chars", type=int, default=64_000, show_default=True,
              help="Characters per text.")  # fmt: skip
@click.option("--max-body", type=int, default=4 << 20, show_default=True,
              help="Request body bytes (larger: 413).")  # fmt: skip
@click.option("--deadline", type=float, default=600.0, show_default=True,
              help="Seconds a request may take (then 504; completed labels stay stored).")  # fmt: skip
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))  # fmt: skip
@db_option
@engine_options
@prompt_options
@model_option
def serve(**opts: Any) -> None:
    """Serve the model over HTTP: /v1/moderations (OpenAI shape), /v1/classify, /docs."""
    import uvicorn

    host, port = opts["host"], opts["port"]
    api_key = read_api_key(opts["api_key_env"], host)
    for name, lo in (("--max-texts", 1), ("--max-text-chars", 1), ("--max-body", 1),
                     ("--max-tokens", 1), ("--port", 0)):  # fmt: skip
        value = opts[name[2:].replace("-", "_")]
        if value < lo:
            raise EdgeGuardError(f"{name} must be >= {lo}, got {value}")
    core = build_core(opts)
    from edge_guard.service.app import create_app

    version = _version()
    app = create_app(core, api_key=api_key, version=version)
    app.router.lifespan_context = _lifespan(core)
    click.echo(f"edge-guard serve: model {core.backend.model_ref} on http://{host}:{port} "
               f"(docs at /docs; Ctrl-C stops)", err=True)  # fmt: skip
    config = uvicorn.Config(app, host=host, port=port, log_level=opts["log_level"],
                            timeout_graceful_shutdown=GRACE_S + 5, access_log=False)  # fmt: skip

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            core.begin_shutdown(GRACE_S)  # running requests: GRACE_S to finish, then 503
            super().handle_exit(sig, frame)

    try:
        Server(config).run()
    finally:
        core.shutdown(grace_s=0)
        core.store.close()


def build_core(opts: dict[str, Any]) -> Any:
    """Load the model, open the store, check and preload the policies."""
    from edge_guard.backends.local import EngineSettings
    from edge_guard.classifier import make_backend
    from edge_guard.service.core import Limits, ServiceCore
    from edge_guard.store import Store

    policies = list(opts["policies"])
    if opts["policy_set"] and policies:
        raise EdgeGuardError("give --policy or --set, not both")
    parallel = opts["parallel"]
    settings = EngineSettings(
        n_ctx=opts["ctx"], n_gpu_layers=opts["gpu_layers"], n_threads=opts["threads"],
        n_parallel=parallel or 8, extra={"force": True} if opts["force"] else {},
    )  # fmt: skip
    backend = make_backend(opts["model"], settings, yes=opts["yes"], interactive=False)
    limits = Limits(max_body_bytes=opts["max_body"], max_texts=opts["max_texts"],
                    max_text_chars=opts["max_text_chars"], deadline_s=opts["deadline"])  # fmt: skip
    core = ServiceCore(backend, Store(opts["db"]), default_policies=policies,
                       default_set=opts["policy_set"],
                       allow_inline=opts["allow_inline_policies"], parallel=parallel,
                       limits=limits, max_tokens=opts["max_tokens"])  # fmt: skip
    core.preload(opts["style"], opts["effort"])
    return core


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
