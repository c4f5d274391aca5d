"""Defaults and environment variables: every default value edge_guard shares, and the ONE
table of `EDGE_GUARD_*` environment variables with the one accessor that reads them.

A module needing a shared default imports it from here; a module reading an `EDGE_GUARD_*`
variable calls `env(NAME)` (a name missing from `ENV` is a KeyError: a new variable is
added to the table, and so to the docs, first). docs/configuration.md holds the same table
(`python -m edge_guard.defaults` prints it; tests/test_config_table.py checks it). This
module imports nothing from edge_guard: every layer may use it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

# -- shared defaults --------------------------------------------------------------------
DEFAULT_MODEL = "gpt-oss-safeguard-20b:mxfp4"  # the model reference when none is given
DEFAULT_CTX = 16384  # context size in tokens
DEFAULT_PARALLEL = 8  # sequences decoded together (local engine; server width fallback)
DEFAULT_MAX_TOKENS = 4096  # output tokens per answer (reasoning included)
DEFAULT_STYLE = "harmony"  # prompt format: harmony | chat-template
DEFAULT_EFFORT = "medium"  # reasoning effort: low | medium | high
DEFAULT_REASONING = "full"  # reasoning path: full | none | none-empty-analysis
DEFAULT_SERVER_TIMEOUT_S = 600.0  # seconds per request to a model server
DEFAULT_KEEP_ALIVE_S = 300.0  # seconds a warm engine stays loaded after its last request
PARSER_TIME_LIMIT_S = 5.0  # seconds a custom parse() gets per answer
PROBE_TIMEOUT_S = 300.0  # seconds the first load of a model file may take (load probe)
PREFIX_STORE_MB = 1024  # cap of the prefix snapshot files on disk


@dataclass(frozen=True)
class EnvVar:
    """One environment variable: its name, what it sets, its default (as the docs say it)
    and the `Settings` field it feeds (None: read where it is used)."""

    name: str
    meaning: str
    default: str
    setting: str | None = None


ENV: tuple[EnvVar, ...] = (
    # settings (`edge_guard.settings.resolve.resolve_settings`: flag > environment > config.toml)
    EnvVar(
        "EDGE_GUARD_MODEL",
        "Model reference (manifest id, .gguf path, hf:…, synth:…)",
        DEFAULT_MODEL,
        "model",
    ),
    EnvVar("EDGE_GUARD_CTX", "Context size in tokens", str(DEFAULT_CTX), "ctx"),
    EnvVar("EDGE_GUARD_GPU_LAYERS", "Layers offloaded to the GPU", "auto", "gpu_layers"),
    EnvVar("EDGE_GUARD_PARALLEL", "Sequences decoded together", str(DEFAULT_PARALLEL), "parallel"),
    EnvVar(
        "EDGE_GUARD_KEEP_ALIVE",
        "Seconds (or 90s, 5m, 1h) a warm engine stays loaded; "
        "0 loads the model in the command's own process",
        "5m (0 under CI or pytest)",
        "keep_alive",
    ),
    EnvVar("EDGE_GUARD_STYLE", "Prompt format: harmony or chat-template", DEFAULT_STYLE, "style"),
    EnvVar("EDGE_GUARD_EFFORT", "Reasoning effort: low, medium or high", DEFAULT_EFFORT, "effort"),
    EnvVar("EDGE_GUARD_DATE", "Date in the system message (YYYY-MM-DD)", "none", "date"),
    EnvVar(
        "EDGE_GUARD_REASONING",
        "Reasoning path: full, none or none-empty-analysis",
        DEFAULT_REASONING,
        "reasoning",
    ),
    EnvVar(
        "EDGE_GUARD_CASCADE",
        "Cascade band LOW:HIGH (one pass, full reasoning between)",
        "off",
        "cascade",
    ),
    EnvVar("EDGE_GUARD_TEMPERATURE", "Sampling temperature", "0.0", "temperature"),
    EnvVar("EDGE_GUARD_SEED", "Sampling seed", "0", "seed"),
    EnvVar(
        "EDGE_GUARD_MAX_TOKENS", "Output tokens per answer", str(DEFAULT_MAX_TOKENS), "max_tokens"
    ),
    EnvVar("EDGE_GUARD_DB", "Result store (SQLite file)", "$EDGE_GUARD_HOME/edge_guard.db", "db"),
    EnvVar("EDGE_GUARD_BACKEND", "Where classification runs: local or server", "local", "backend"),
    EnvVar(
        "EDGE_GUARD_SERVER_URL",
        "OpenAI-compatible server (llama-server, vLLM, edge-guard)",
        "none",
        "url",
    ),
    EnvVar(
        "EDGE_GUARD_SERVER_API_KEY_ENV",
        "Name of the variable holding the server's API key",
        "none",
        "api_key_env",
    ),
    EnvVar(
        "EDGE_GUARD_SERVER_CONCURRENCY",
        "Requests in flight to the server",
        "the server's slots (vLLM: 32)",
        "concurrency",
    ),
    EnvVar(
        "EDGE_GUARD_SERVER_TIMEOUT",
        "Seconds per server request",
        f"{DEFAULT_SERVER_TIMEOUT_S:g}",
        "timeout",
    ),
    EnvVar(
        "EDGE_GUARD_SERVER_KIND",
        "Server dialect: auto, llama-server, vllm, openai, edge-guard",
        "auto",
        "server_kind",
    ),
    # files and folders
    EnvVar(
        "EDGE_GUARD_HOME",
        "Data folder (store, models, config.toml, policies)",
        "$XDG_DATA_HOME/edge-guard, else ~/.local/share/edge-guard",
    ),
    EnvVar("EDGE_GUARD_CONFIG", "Config file", "$EDGE_GUARD_HOME/config.toml"),
    EnvVar(
        "EDGE_GUARD_POLICIES", "Extra policy folders searched first (os.pathsep-separated)", "none"
    ),
    EnvVar(
        "EDGE_GUARD_MODELS_DIR", "Where `models pull` puts model files", "$EDGE_GUARD_HOME/models"
    ),
    EnvVar(
        "EDGE_GUARD_MANIFESTS",
        "Manifest folders, instead of the shipped and user ones (os.pathsep-separated)",
        "models/ and $EDGE_GUARD_HOME/manifests",
    ),
    # engine
    EnvVar(
        "EDGE_GUARD_THREADS", "CPU threads of llama.cpp (and of `models quantize`)", "every core"
    ),
    EnvVar("EDGE_GUARD_PREFIX_STORE", "0 turns off prefix snapshots on disk", "on"),
    EnvVar(
        "EDGE_GUARD_PREFIX_STORE_MB",
        "Cap of the prefix snapshots on disk (MB)",
        str(PREFIX_STORE_MB),
    ),
    EnvVar(
        "EDGE_GUARD_PROBE_TIMEOUT",
        "Seconds the first (probe) load of a model file may take",
        f"{PROBE_TIMEOUT_S:g}",
    ),
    # other
    EnvVar("EDGE_GUARD_REVIEWER", "Who records review decisions", "the login name"),
    EnvVar("EDGE_GUARD_DEBUG", "Any value: internal errors show their traceback", "off"),
    # set by edge-guard itself for a warm engine it starts (not for users)
    EnvVar("EDGE_GUARD_WARM_SPEC", "Internal: the spec of a warm engine being started", "none"),
    EnvVar("EDGE_GUARD_WARM_READY_FD", "Internal: where a starting warm engine says ready", "none"),
    # read by the test suite only (tests/), not by edge_guard
    EnvVar(
        "EDGE_GUARD_TEST_MODELS",
        "Tests: cache of the synthetic test models",
        "~/.cache/edge_guard/test-models",
    ),
    EnvVar(
        "EDGE_GUARD_TEST_LLAMA_SERVER",
        "Tests: the llama-server binary of the real-server tests",
        "../shared/bin/llama-server",
    ),
)
_BY_NAME = {v.name: v for v in ENV}
ENV_BY_SETTING = {v.setting: v.name for v in ENV if v.setting is not None}


def env(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The value of the `EDGE_GUARD_*` variable `name` (in `environ`, default `os.environ`);
    None when it is unset or blank. `name` must be in `ENV`."""
    if name not in _BY_NAME:
        raise KeyError(f"{name} is not in edge_guard.defaults.ENV")
    value = (os.environ if environ is None else environ).get(name)
    return value if value is not None and value.strip() else None


def take_env(name: str) -> str | None:
    """`env(name)`, removing the variable from this process's environment (a value meant
    for this process only, which its own children must not inherit)."""
    value = env(name)
    os.environ.pop(name, None)
    return value


def env_markdown() -> str:
    """The table of docs/configuration.md."""
    rows = ["| Variable | Meaning | Default |", "| --- | --- | --- |"]
    for v in ENV:
        meaning = v.meaning + (f" (setting `{v.setting}`)" if v.setting else "")
        cells = (f"`{v.name}`", meaning, v.default)
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(env_markdown(), end="")
