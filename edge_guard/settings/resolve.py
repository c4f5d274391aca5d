"""`Settings`: the one request spec. Every choice that shapes a classification, resolved once.

Model reference, backend and server options, engine (load) settings, prompt style/effort/
date, reasoning path and cascade, sampling, truncation, the store and the cache policy.
Every door — the CLI (flags), the TUI (its controls), `compare`, `study`, `policies test`,
the scripts, the server (its flags as defaults, request fields over them) and the Python
API (keywords) — builds its `Settings` with ONE function, `resolve_settings`: given values
over the environment over `config.toml` over the defaults (or over a `base` spec, e.g. a
server's defaults). A `Settings` is frozen and validated: every number is checked here, so
nothing below a door reads a flag or a default of its own. It goes to
`edge_guard.api.build_classifier`, and from there unchanged into the engine requests and
the store key (`edge_guard.classification.classifier.cache_key`).

Errors speak the door's language (`door=`): a bad value is one line naming the flag
(`--seed`, CLI), the keyword (`seed=`, Python), the request field (`seed`, HTTP) or the
control (TUI); `SettingError.setting` names the field. The seed is a non-negative integer
(0 to 2**63-1): a negative seed is refused, never passed on to the sampler.

The fields marked `request` (`request_options()`) are the options a single request may
set: they change what is sent to the model or how its answer is decided, so they are part
of every door's request (tests/test_parity.py checks each door against the CLI for each).

Environment variables: each field's is in `edge_guard.defaults.ENV` (`ENV_BY_SETTING`; the
backend's are read by `edge_guard.config`; `EDGE_GUARD_THREADS` by the engine when
`threads` is unset).

`Model` and `InferenceBackend` let seed code (`model=Model.GPT_OSS_20B,
backend=InferenceBackend.API_INJECT_HARMONY`) run unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from edge_guard import defaults
from edge_guard.config import (
    DEFAULT_TIMEOUT,
    BackendConfig,
    backend_config,
    config_path,
    load_config,
)
from edge_guard.errors import EdgeGuardError
from edge_guard.harmony.render import DEFAULT_EFFORT, DEFAULT_STYLE, PromptConfig
from edge_guard.settings.values import DOORS, SettingError, convert, option_name

if TYPE_CHECKING:
    from edge_guard.backends.local import EngineSettings
    from edge_guard.engine.sampling import SamplingConfig

DEFAULT_CTX = defaults.DEFAULT_CTX
__all__ = [
    "DOORS",
    "InferenceBackend",
    "Model",
    "SettingError",
    "Settings",
    "option_name",
    "request_options",
    "resolve_settings",
    "setting_flags",
]


class Model(StrEnum):
    """The seed's model names; each is the manifest name whose default build it means."""

    GPT_OSS_20B = "gpt-oss-20b"
    GPT_OSS_SAFEGUARD_20B = "gpt-oss-safeguard-20b"


class InferenceBackend(StrEnum):
    """The seed's prompt formats: the harmony developer message, or the chat template."""

    API_INJECT_HARMONY = "harmony"
    API = "chat-template"


def _request(default: Any) -> Any:
    """A field a single request may set (see `request_options`)."""
    return field(default=default, metadata={"request": True})


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
    # seconds a warm engine stays loaded after its last request (`edge_guard.warm`); None:
    # the door's default (commands: `settings.keep_alive.default_keep_alive()`; Python: in-process)
    keep_alive: float | None = None
    # prompt
    style: str = _request(DEFAULT_STYLE)
    effort: str = _request(DEFAULT_EFFORT)
    date: str | None = _request(None)
    # reasoning path: full | none | none-empty-analysis; cascade "LOW:HIGH" (edge_guard.classification.cascade)
    reasoning: str = _request("full")
    cascade: str | None = _request(None)
    # sampling
    temperature: float = _request(0.0)
    seed: int = _request(0)
    max_tokens: int = _request(defaults.DEFAULT_MAX_TOKENS)
    # store and cache policy
    db: str | None = None
    use_cache: bool = True
    truncate: bool = _request(False)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = convert(f.name, getattr(self, f.name), "settings", "python")
            object.__setattr__(self, f.name, value)
        if self.backend == "server" and self.url is None:
            raise SettingError("the server backend needs a URL (url=...)", "url")

    def replace(self, **changes: Any) -> Settings:
        """A copy with `changes` applied (validated like any `Settings`)."""
        unknown = sorted(set(changes) - SETTING_NAMES)
        if unknown:
            raise SettingError(f"unknown setting(s) {', '.join(unknown)}", unknown[0])
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def request(self) -> dict[str, Any]:
        """The request options (`request_options()`) and their values."""
        return {name: getattr(self, name) for name in request_options()}

    # -- the objects the classifier and the backends take ----------------------------------
    def sampling(self) -> SamplingConfig:
        from edge_guard.engine.sampling import SamplingConfig  # numpy: only when sampling

        return SamplingConfig(
            temperature=self.temperature, seed=self.seed, max_tokens=self.max_tokens
        )

    def prompt_config(self) -> PromptConfig:
        return PromptConfig(style=self.style, effort=self.effort, date=self.date)

    def engine_settings(self) -> EngineSettings:
        from edge_guard.backends.local import EngineSettings

        return EngineSettings(
            n_ctx=self.ctx,
            n_gpu_layers=self.gpu_layers,
            n_threads=self.threads,
            n_parallel=self.parallel or defaults.DEFAULT_PARALLEL,
            extra={"force": True} if self.force else {},
        )

    def backend_config(self) -> BackendConfig:
        return BackendConfig(
            kind=self.backend,
            url=self.url,
            api_key_env=self.api_key_env,
            concurrency=self.concurrency,
            timeout=self.timeout,
            server_kind=self.server_kind,
            source="settings",
        )


SETTING_NAMES = frozenset(f.name for f in fields(Settings))


def request_options() -> tuple[str, ...]:
    """The `Settings` fields one request may set (prompt, reasoning path, sampling,
    truncation), in field order: what every door must carry or refuse."""
    return tuple(f.name for f in fields(Settings) if f.metadata.get("request"))


# Settings name -> `config.backend_config` key.
_BACKEND_KEYS = {
    "backend": "kind",
    "url": "url",
    "api_key_env": "api_key_env",
    "concurrency": "concurrency",
    "timeout": "timeout",
    "server_kind": "server_kind",
}

# Settings name -> config.toml table ("" = top level); its environment variable, if it has
# one, is `defaults.ENV_BY_SETTING[name]` (`threads` has none: unset, the engine reads
# $EDGE_GUARD_THREADS itself).
_TABLE_OF = {
    name: table
    for table, names in (
        ("", ("model", "truncate")),
        ("engine", ("ctx", "gpu_layers", "threads", "parallel", "force", "yes", "keep_alive")),
        ("prompt", ("style", "effort", "date", "reasoning", "cascade")),
        ("sampling", ("temperature", "seed", "max_tokens")),
        ("store", ("db", "use_cache")),
    )
    for name in names
}
_SOURCES: dict[str, tuple[str, str | None]] = {
    name: (table, defaults.ENV_BY_SETTING.get(name)) for name, table in _TABLE_OF.items()
}
_TABLES = {table for table, _ in _SOURCES.values() if table}


def resolve_settings(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    *,
    base: Settings | None = None,
    door: str = "python",
) -> Settings:
    """THE resolution of every door: `flags` (None = unset) over `env` (default
    `os.environ`) over the config file (a path, a parsed mapping, or None = `config_path()`)
    over the defaults — or, with `base`, `flags` over that spec (env and file are already in
    it). `door` ("cli", "python", "http", "tui") names a bad given value in its own terms.

    Seed values are accepted: `model=Model.X`, `backend=InferenceBackend.Y` (a prompt style:
    the backend kind then comes from env/config/default).
    """
    if door not in DOORS:
        raise ValueError(f"unknown door {door!r}")
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    unknown = sorted(set(flags) - SETTING_NAMES)
    if unknown:
        raise SettingError(
            f"unknown setting(s) {', '.join(unknown)} (known: {', '.join(sorted(SETTING_NAMES))})",
            unknown[0],
            door,
        )
    if isinstance(flags.get("backend"), InferenceBackend):
        style = str(flags.pop("backend").value)
        if flags.get("style") not in (None, style):
            raise SettingError(
                f"backend={style!r} prompt format conflicts with "
                f"{option_name('style', door)} {flags['style']!r}",
                "style",
                door,
            )
        flags["style"] = style
    given = {name: convert(name, value, "given", door) for name, value in flags.items()}
    if base is not None:
        return replace(base, **given)
    env = os.environ if env is None else env
    if isinstance(config, Mapping):
        file, where = dict(config), "the given config"
    else:
        file, where = load_config(config), str(config or config_path())
    _check_file(file, where)
    values: dict[str, Any] = {}
    for name, (table, var) in _SOURCES.items():
        section = file.get(table, {}) if table else file
        if name in given:
            values[name] = given[name]
        elif var is not None and defaults.env(var, env):
            values[name] = convert(name, env[var], f"${var}", door)
        elif name in section:
            values[name] = convert(
                name, section[name], f"[{table or 'top level'}] in {where}", door
            )
    cfg = backend_config(
        {key: given.get(name) for name, key in _BACKEND_KEYS.items()},
        config if not isinstance(config, Mapping) else None,
        env=env,
        file=file,
    )
    values.update(
        backend=cfg.kind,
        url=cfg.url,
        api_key_env=cfg.api_key_env,
        concurrency=cfg.concurrency,
        timeout=cfg.timeout,
        server_kind=cfg.server_kind,
    )
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
