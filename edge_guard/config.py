"""User defaults: `$EDGE_GUARD_HOME/config.toml` and environment variables (flags override both).

The file's tables (every key optional; `edge_guard.settings.resolve.resolve_settings` reads them)::

    model = "gpt-oss-safeguard-20b:mxfp4"   # top-level: the model reference
    truncate = false                 # cut over-long texts instead of failing them

    [backend]
    kind = "server"                  # "local" (default) or "server"
    url = "http://gpu-box:8080"      # an OpenAI-compatible server: llama-server or vLLM
    api_key_env = "EDGE_GUARD_API_KEY"  # name of the env var holding the bearer token
    concurrency = 16                 # requests in flight (default: llama-server's slots; vLLM 32)
    timeout = 600                    # seconds per request
    server_kind = "auto"             # auto | llama-server | vllm | openai | edge-guard

    [engine]    ctx, gpu_layers, threads, parallel, force, keep_alive (seconds or "5m")
    [prompt]    style, effort, date, reasoning, cascade
    [sampling]  temperature, seed, max_tokens
    [store]     db, use_cache

Environment: the `[backend]` keys' variables (`EDGE_GUARD_BACKEND`, `EDGE_GUARD_SERVER_*`) and
`EDGE_GUARD_CONFIG` (another config file) are read here, the others by `edge_guard.settings.resolve`;
all are listed in `edge_guard.defaults.ENV`. Precedence: flag > environment > file > default.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from edge_guard import defaults
from edge_guard.errors import EdgeGuardError

BACKEND_KINDS = ("local", "server")
SERVER_KINDS = ("auto", "llama-server", "vllm", "openai", "edge-guard")
DEFAULT_TIMEOUT = defaults.DEFAULT_SERVER_TIMEOUT_S

# [backend] key -> its environment variable (the `Settings` field of the same meaning's)
_ENV = {
    key: defaults.ENV_BY_SETTING["backend" if key == "kind" else key]
    for key in ("kind", "url", "api_key_env", "concurrency", "timeout", "server_kind")
}


@dataclass(frozen=True)
class BackendConfig:
    """Where classification runs: the local engine, or a server at `url`."""

    kind: str = "local"
    url: str | None = None
    api_key_env: str | None = None
    concurrency: int | None = None
    timeout: float = DEFAULT_TIMEOUT
    server_kind: str = "auto"
    source: str = "default"  # where `kind` came from, for error messages


def config_path() -> Path:
    given = defaults.env("EDGE_GUARD_CONFIG")
    if given:
        return Path(given).expanduser()
    from edge_guard.paths import data_dir

    return data_dir() / "config.toml"


def load_config(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The parsed config file ({} when there is none)."""
    p = Path(path) if path is not None else config_path()
    if not p.is_file():
        return {}
    try:
        with p.open("rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise EdgeGuardError(f"cannot read config file {p}: {exc}") from None


def backend_config(
    overrides: dict[str, Any] | None = None,
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    file: Mapping[str, Any] | None = None,
) -> BackendConfig:
    """Merge flag values (`overrides`, None = unset) over environment, file and defaults.

    `env` defaults to `os.environ`; `file` is an already parsed config file (else `path`,
    else `config_path()`, is read).
    """
    where = path or config_path()
    file_cfg = (load_config(path) if file is None else file).get("backend", {})
    if not isinstance(file_cfg, dict):
        raise EdgeGuardError(f"{where}: [backend] must be a table")
    known = {f.name for f in fields(BackendConfig)} - {"source"}
    unknown = sorted(set(file_cfg) - known)
    if unknown:
        raise EdgeGuardError(
            f"{where}: unknown [backend] key(s) {', '.join(unknown)} "
            f"(known: {', '.join(sorted(known))})"
        )
    values: dict[str, Any] = {}
    source = "default"
    layers = [
        (file_cfg, f"config file {where}"),
        ({k: defaults.env(v, env) for k, v in _ENV.items() if defaults.env(v, env)}, "environment"),
        ({k: v for k, v in (overrides or {}).items() if v is not None}, "command line"),
    ]
    for layer, name in layers:
        if "kind" in layer:
            source = name
        elif name == "command line" and layer.get("url"):
            # `--url` alone means "use that server".
            values["kind"], source = "server", name
        values.update(layer)
    return _validate({**values, "source": source})


def _validate(values: dict[str, Any]) -> BackendConfig:
    src = values.get("source", "default")
    kind = str(values.get("kind", "local")).strip().lower()
    if kind not in BACKEND_KINDS:
        raise EdgeGuardError(
            f"backend {kind!r} (from {src}) is not one of: {', '.join(BACKEND_KINDS)}"
        )
    server_kind = str(values.get("server_kind", "auto")).strip().lower()
    if server_kind not in SERVER_KINDS:
        raise EdgeGuardError(
            f"server kind {server_kind!r} is not one of: {', '.join(SERVER_KINDS)}"
        )
    url = values.get("url") or None
    if url is not None:
        url = str(url).strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise EdgeGuardError(f"server URL {url!r} must start with http:// or https://")
    if kind == "server" and url is None:
        raise EdgeGuardError(
            f"the server backend (chosen by {src}) needs a URL: pass --url URL, set "
            f'EDGE_GUARD_SERVER_URL, or add url = "..." under [backend] in {config_path()}'
        )
    try:
        concurrency = (
            None if values.get("concurrency") in (None, "") else int(values["concurrency"])
        )
        timeout = float(values.get("timeout", DEFAULT_TIMEOUT))
    except (TypeError, ValueError) as exc:
        raise EdgeGuardError(f"bad backend setting: {exc}") from None
    if concurrency is not None and concurrency < 1:
        raise EdgeGuardError(f"concurrency must be >= 1, got {concurrency}")
    if timeout <= 0:
        raise EdgeGuardError(f"timeout must be > 0 seconds, got {timeout:g}")
    return BackendConfig(
        kind=kind,
        url=url,
        api_key_env=values.get("api_key_env") or None,
        concurrency=concurrency,
        timeout=timeout,
        server_kind=server_kind,
        source=src,
    )
