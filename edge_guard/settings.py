"""`Settings`: every choice that shapes a classification, resolved in one place.

Model reference, backend and server options, engine (load) settings, prompt style/effort/
date, sampling, the store and the cache policy. The CLI (flags), the TUI, `compare`,
`study`, `policies test`, the scripts, the server and the Python API (keywords) all build
a `Settings` with `resolve_settings(flags)` — flag > environment > `config.toml` > default —
and hand it to `edge_guard.api.build_classifier`.

Environment variables (besides the backend's, see `edge_guard.config`): `EDGE_GUARD_MODEL`,
`EDGE_GUARD_CTX`, `EDGE_GUARD_GPU_LAYERS`, `EDGE_GUARD_PARALLEL`,
`EDGE_GUARD_STYLE`, `EDGE_GUARD_EFFORT`, `EDGE_GUARD_DATE`, `EDGE_GUARD_REASONING`,
`EDGE_GUARD_CASCADE`, `EDGE_GUARD_TEMPERATURE`,
`EDGE_GUARD_SEED`, `EDGE_GUARD_MAX_TOKENS`, `EDGE_GUARD_DB` (`EDGE_GUARD_THREADS` is read by
the engine when `threads` is unset).

`Model` and `InferenceBackend` let seed code (`model=Model.GPT_OSS_20B,
backend=InferenceBackend.API_INJECT_HARMONY`) run unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_guard.config import (
    BACKEND_KINDS,
    DEFAULT_TIMEOUT,
    SERVER_KINDS,
    BackendConfig,
    backend_config,
    config_path,
    load_config,
)
from edge_guard.engine.sampling import DEFAULT_MAX_TOKENS, SamplingConfig
from edge_guard.errors import EdgeGuardError
from edge_guard.harmony.render import DEFAULT_EFFORT, DEFAULT_STYLE, EFFORTS, STYLES, PromptConfig
from edge_guard.onepass import REASONING_MODES

if TYPE_CHECKING:
    from edge_guard.backends.local import EngineSettings

DEFAULT_CTX = 16384


class Model(StrEnum):
    """The seed's model names; each is the manifest name whose default build it means."""

    GPT_OSS_20B = "gpt-oss-20b"
    GPT_OSS_SAFEGUARD_20B = "gpt-oss-safeguard-20b"


class InferenceBackend(StrEnum):
    """The seed's prompt formats: the harmony developer message, or the chat template."""

    API_INJECT_HARMONY = "harmony"
    API = "chat-template"


@dataclass(frozen=True)
class Settings:
    """Everything besides the policies and texts that a classifier is built from."""

    # model: a manifest id (name:tag), .gguf path, hf:..., synth:PRESET; None = the default
    model: str | None = None
    # backend and server options (see edge_guard.config.BackendConfig)
    backend: str = "local"
    url: str | None = None
    api_key_env: str | None = None
    concurrency: int | None = None
    timeout: float = DEFAULT_TIMEOUT
    server_kind: str = "auto"
    # engine (how a local model is loaded)
    ctx: int = DEFAULT_CTX
    gpu_layers: int | str = "auto"
    threads: int | None = None
    parallel: int | None = None
    force: bool = False
    yes: bool = False
    # prompt
    style: str = DEFAULT_STYLE
    effort: str = DEFAULT_EFFORT
    date: str | None = None
    # reasoning path: full | none | none-empty-analysis; cascade "LOW:HIGH" (edge_guard.cascade)
    reasoning: str = "full"
    cascade: str | None = None
    # sampling
    temperature: float = 0.0
    seed: int = 0
    max_tokens: int = DEFAULT_MAX_TOKENS
    # store and cache policy
    db: str | None = None
    use_cache: bool = True
    truncate: bool = False

    def __post_init__(self) -> None:
        for f in fields(self):
            value = _convert(f.name, getattr(self, f.name), "settings")
            object.__setattr__(self, f.name, value)
        if self.backend == "server" and self.url is None:
            raise EdgeGuardError("the server backend needs a URL (url=...)")

    def replace(self, **changes: Any) -> Settings:
        """A copy with `changes` applied (validated like any `Settings`)."""
        unknown = sorted(set(changes) - SETTING_NAMES)
        if unknown:
            raise EdgeGuardError(f"unknown setting(s) {', '.join(unknown)}")
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    # -- the objects the classifier and the backends take ----------------------------------
    def sampling(self) -> SamplingConfig:
        return SamplingConfig(temperature=self.temperature, seed=self.seed,
                              max_tokens=self.max_tokens)  # fmt: skip

    def prompt_config(self) -> PromptConfig:
        return PromptConfig(style=self.style, effort=self.effort, date=self.date)

    def engine_settings(self) -> EngineSettings:
        from edge_guard.backends.local import EngineSettings

        return EngineSettings(n_ctx=self.ctx, n_gpu_layers=self.gpu_layers,
                              n_threads=self.threads, n_parallel=self.parallel or 8,
                              extra={"force": True} if self.force else {})  # fmt: skip

    def backend_config(self) -> BackendConfig:
        return BackendConfig(kind=self.backend, url=self.url, api_key_env=self.api_key_env,
                             concurrency=self.concurrency, timeout=self.timeout,
                             server_kind=self.server_kind, source="settings")  # fmt: skip


SETTING_NAMES = frozenset(f.name for f in fields(Settings))

# Settings name -> `config.backend_config` key.
_BACKEND_KEYS = {"backend": "kind", "url": "url", "api_key_env": "api_key_env",
                 "concurrency": "concurrency", "timeout": "timeout", "server_kind": "server_kind"}  # fmt: skip

# Settings name -> (config.toml table, "" = top level; environment variable or None).
_SOURCES: dict[str, tuple[str, str | None]] = {
    "model": ("", "EDGE_GUARD_MODEL"),
    "truncate": ("", None),
    "ctx": ("engine", "EDGE_GUARD_CTX"),
    "gpu_layers": ("engine", "EDGE_GUARD_GPU_LAYERS"),
    "threads": ("engine", None),  # unset: the engine reads $EDGE_GUARD_THREADS itself
    "parallel": ("engine", "EDGE_GUARD_PARALLEL"),
    "force": ("engine", None),
    "yes": ("engine", None),
    "style": ("prompt", "EDGE_GUARD_STYLE"),
    "effort": ("prompt", "EDGE_GUARD_EFFORT"),
    "date": ("prompt", "EDGE_GUARD_DATE"),
    "reasoning": ("prompt", "EDGE_GUARD_REASONING"),
    "cascade": ("prompt", "EDGE_GUARD_CASCADE"),
    "temperature": ("sampling", "EDGE_GUARD_TEMPERATURE"),
    "seed": ("sampling", "EDGE_GUARD_SEED"),
    "max_tokens": ("sampling", "EDGE_GUARD_MAX_TOKENS"),
    "db": ("store", "EDGE_GUARD_DB"),
    "use_cache": ("store", None),
}
_TABLES = {table for table, _ in _SOURCES.values() if table}


def resolve_settings(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config: str | os.PathLike[str] | Mapping[str, Any] | None = None,
) -> Settings:
    """Settings from `flags` (None = unset) over `env` (default `os.environ`) over the config
    file (a path, an already parsed mapping, or None = `config_path()`) over the defaults.

    Seed values are accepted: `model=Model.X`, `backend=InferenceBackend.Y` (a prompt style:
    the backend kind then comes from env/config/default).
    """
    env = os.environ if env is None else env
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    unknown = sorted(set(flags) - SETTING_NAMES)
    if unknown:
        raise EdgeGuardError(
            f"unknown setting(s) {', '.join(unknown)} (known: {', '.join(sorted(SETTING_NAMES))})"
        )
    if isinstance(flags.get("backend"), InferenceBackend):
        style = str(flags.pop("backend").value)
        if flags.get("style") not in (None, style):
            raise EdgeGuardError(
                f"backend={style!r} prompt format conflicts with style={flags['style']!r}"
            )
        flags["style"] = style
    if isinstance(config, Mapping):
        file, where = dict(config), "the given config"
    else:
        file, where = load_config(config), str(config or config_path())
    _check_file(file, where)
    values: dict[str, Any] = {}
    for name, (table, var) in _SOURCES.items():
        section = file.get(table, {}) if table else file
        if name in flags:
            values[name] = _convert(name, flags[name], "the command line")
        elif var is not None and env.get(var):
            values[name] = _convert(name, env[var], f"${var}")
        elif name in section:
            values[name] = _convert(name, section[name], f"[{table or 'top level'}] in {where}")
    cfg = backend_config({key: flags.get(name) for name, key in _BACKEND_KEYS.items()},
                         config if not isinstance(config, Mapping) else None,
                         env=env, file=file)  # fmt: skip
    values.update(backend=cfg.kind, url=cfg.url, api_key_env=cfg.api_key_env,
                  concurrency=cfg.concurrency, timeout=cfg.timeout, server_kind=cfg.server_kind)  # fmt: skip
    return Settings(**values)


def setting_flags(opts: Mapping[str, Any]) -> dict[str, Any]:
    """The `Settings` fields among `opts` (e.g. command options), other keys left out."""
    return {k: v for k, v in opts.items() if k in SETTING_NAMES}


def _check_file(file: Mapping[str, Any], where: str) -> None:
    """Known keys in the tables `Settings` reads (other tables belong to other modules)."""
    top = {n for n, (t, _) in _SOURCES.items() if not t}
    bad = sorted(k for k, v in file.items() if not isinstance(v, dict) and k not in top)
    for table in sorted(_TABLES):
        section = file.get(table, {})
        if not isinstance(section, dict):
            raise EdgeGuardError(f"{where}: [{table}] must be a table")
        known = {n for n, (t, _) in _SOURCES.items() if t == table}
        bad += [f"{table}.{k}" for k in sorted(set(section) - known)]
    if bad:
        raise EdgeGuardError(f"{where}: unknown setting(s) {', '.join(bad)}")


_INTS = {"ctx": 0, "threads": 1, "parallel": 1, "seed": None, "max_tokens": 1, "concurrency": 1}
_BOOLS = ("force", "yes", "use_cache", "truncate")
_CHOICES = {"style": STYLES, "effort": EFFORTS, "backend": BACKEND_KINDS,
            "reasoning": REASONING_MODES,
            "server_kind": SERVER_KINDS}  # fmt: skip
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _convert(name: str, value: Any, where: str) -> Any:
    """`value` as the type `name` takes (strings from env/files are parsed), or a one-line error."""
    if value is None:
        return None
    what = f"{name} = {value!r} (from {where})"
    if name in _BOOLS:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise EdgeGuardError(f"{what}: must be true or false")
    if name in _INTS:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise EdgeGuardError(f"{what}: must be an integer")
        try:
            n = int(value)
        except ValueError:
            raise EdgeGuardError(f"{what}: must be an integer") from None
        low = _INTS[name]
        if low is not None and n < low:
            raise EdgeGuardError(f"{what}: must be >= {low}")
        return n
    if name in ("temperature", "timeout"):
        try:
            x = float(value)
        except (TypeError, ValueError):
            raise EdgeGuardError(f"{what}: must be a number") from None
        if x < 0 or (name == "timeout" and x == 0) or x != x:
            raise EdgeGuardError(f"{what}: must be {'>' if name == 'timeout' else '>='} 0")
        return x
    if name == "gpu_layers":
        text = str(value).strip().lower()
        if text == "auto":
            return "auto"
        try:
            return int(text)
        except ValueError:
            raise EdgeGuardError(f"{what}: must be 'auto' or a number of layers") from None
    if isinstance(value, Path) and name in ("model", "db"):
        return str(value)
    if name == "cascade":  # "LOW:HIGH" or a (low, high) pair -> "LOW:HIGH", checked
        from edge_guard.cascade import parse_bounds

        bounds = parse_bounds(value)
        return None if bounds is None else f"{bounds[0]!r}:{bounds[1]!r}"
    if isinstance(value, StrEnum):
        value = str(value.value)
    if not isinstance(value, str):
        raise EdgeGuardError(f"{what}: must be a string")
    if name in _CHOICES and value not in _CHOICES[name]:
        raise EdgeGuardError(f"{what}: must be one of {', '.join(_CHOICES[name])}")
    if name == "date":
        PromptConfig(date=value)  # YYYY-MM-DD, a calendar date
    if name == "url":
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise EdgeGuardError(f"{what}: must start with http:// or https://")
    return value
