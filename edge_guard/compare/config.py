"""Comparison configs: the grammar `MODEL[,key=value...]`, parsing, validation and labels.

A config is a model reference followed by comma-separated `key=value` modifiers, e.g.
`gpt-oss-safeguard-20b:mxfp4,style=chat-template` or
`gpt-oss-safeguard-20b:mxfp4,backend=server,url=http://gpu-box:8080`. Several configs are
separated by `;` (`--configs "A;B"`) or given as repeated `--config` options; the first
is the reference. A config made only of modifiers (`style=chat-template`) uses `--model`.
Keys are the shared classify options (see `KEYS`); values may not contain `,` or `;`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from edge_guard.config import BACKEND_KINDS, SERVER_KINDS
from edge_guard.errors import EdgeGuardError
from edge_guard.harmony.render import EFFORTS, STYLES
from edge_guard.settings.values import REASONING_MODES

GRAMMAR = "MODEL[,key=value...] (configs separated by ';')"


def _choice(choices: Sequence[str]) -> Callable[[str], str]:
    def check(v: str) -> str:
        if v not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return v

    return check


def _int(minimum: int | None = None) -> Callable[[str], int]:
    def check(v: str) -> int:
        try:
            n = int(v)
        except ValueError:
            raise ValueError("must be an integer") from None
        if minimum is not None and n < minimum:
            raise ValueError(f"must be >= {minimum}")
        return n

    return check


def _float(v: str) -> float:
    try:
        x = float(v)
    except ValueError:
        raise ValueError("must be a number") from None
    if x < 0:
        raise ValueError("must be >= 0")
    return x


def _gpu_layers(v: str) -> str:
    if v != "auto":
        _int()(v)
    return v


def _text(v: str) -> str:
    return v


def _cascade(v: str) -> str:
    from edge_guard.settings.values import parse_bounds

    try:
        parse_bounds(v)
    except EdgeGuardError as exc:
        raise ValueError(
            str(exc).replace(f"cascade {v!r} ", "").replace("cascade b", "b")
        ) from None
    return v


# key -> value checker/converter (the names of `@classify_options`' parameters).
KEYS: dict[str, Callable[[str], Any]] = {
    "style": _choice(STYLES),
    "effort": _choice(EFFORTS),
    "reasoning": _choice(REASONING_MODES),
    "cascade": _cascade,
    # several policies: separate (one prompt per policy), combined (one prompt for all) or
    # taxonomy (one prompt for all, a 0/1 per policy: scored in one pass with reasoning=none)
    "mode": _choice(("separate", "combined", "taxonomy")),
    "date": _text,
    "max_tokens": _int(1),
    "temperature": _float,
    "seed": _int(),
    "ctx": _int(1),
    "gpu_layers": _gpu_layers,
    "threads": _int(1),
    "parallel": _int(1),
    "backend": _choice(BACKEND_KINDS),
    "url": _text,
    "server_kind": _choice(SERVER_KINDS),
    "api_key_env": _text,
    "concurrency": _int(1),
    "timeout": _float,
    "name": _text,
}
ALIASES = {"label": "name", "n_gpu_layers": "gpu_layers", "n_ctx": "ctx"}
_KEY_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class CompareConfig:
    """One side of a comparison: a model reference (None = `--model`) and its modifiers."""

    model: str | None
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def opts(self) -> dict[str, Any]:
        """The modifiers as `@classify_options` values (without `name`)."""
        return {k: v for k, v in self.options if k != "name"}

    @property
    def name(self) -> str | None:
        return dict(self.options).get("name")

    def with_option(self, key: str, value: Any) -> CompareConfig:
        kept = tuple((k, v) for k, v in self.options if k != key)
        return replace(self, options=(*kept, (key, value)))

    def spec(self) -> str:
        """The config written back in the grammar (canonical: one line, as parsed)."""
        parts = [self.model or ""] + [f"{k}={v}" for k, v in self.options]
        return ",".join(parts) if self.model else ",".join(parts[1:])

    def label(self, default_model: str | None = None) -> str:
        """A short unique-ish label: `name=` if given, else the model's short name + modifiers."""
        if self.name:
            return str(self.name)
        from edge_guard.report import short_model

        model = self.model or default_model or "default model"
        mods = "".join(f",{k}={v}" for k, v in self.options if k not in ("name", "url"))
        url = dict(self.options).get("url")
        if url:
            from edge_guard.backends.redact import safe_url

            url = safe_url(url)  # never show a user:password@ in a label
        return short_model(str(model)) + mods + (f" @ {url}" if url else "")


def parse_config(text: str) -> CompareConfig:
    """`MODEL[,key=value...]` -> CompareConfig; one-line `EdgeGuardError` on bad input."""
    raw = text.strip()
    if not raw:
        raise EdgeGuardError(f"empty config: write {GRAMMAR}")
    parts = [p.strip() for p in raw.split(",")]
    model: str | None = None
    first = parts[0]
    key_like = "=" in first and _KEY_RE.match(first.split("=", 1)[0].strip())
    if not key_like:
        if not first:
            raise EdgeGuardError(f"config {raw!r}: no model before the first ','; write {GRAMMAR}")
        model, parts = first, parts[1:]
    options: dict[str, Any] = {}
    for part in parts:
        if not part:
            raise EdgeGuardError(f"config {raw!r}: empty modifier (two ',' in a row?)")
        if "=" not in part:
            raise EdgeGuardError(
                f"config {raw!r}: modifier {part!r} is not key=value (a config is {GRAMMAR})"
            )
        key, value = (s.strip() for s in part.split("=", 1))
        key = ALIASES.get(key.replace("-", "_").lower(), key.replace("-", "_").lower())
        if key not in KEYS:
            raise EdgeGuardError(
                f"config {raw!r}: unknown key {key!r} (known: {', '.join(sorted(KEYS))})"
            )
        if key in options:
            raise EdgeGuardError(f"config {raw!r}: {key}= is given twice")
        if not value:
            raise EdgeGuardError(f"config {raw!r}: {key}= has no value")
        try:
            options[key] = KEYS[key](value)
        except ValueError as exc:
            raise EdgeGuardError(f"config {raw!r}: {key}={value!r} {exc}") from None
    return CompareConfig(model, tuple(options.items()))


def split_configs(values: Iterable[str]) -> list[str]:
    """Split `--configs`/`--config` values on ';' (empty pieces, e.g. a trailing ';', dropped)."""
    return [piece.strip() for v in values for piece in v.split(";") if piece.strip()]


def parse_styles(text: str) -> list[str]:
    styles = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in styles if s not in STYLES]
    if bad or not styles:
        raise EdgeGuardError(
            f"--styles {text!r}: use a comma-separated list of {', '.join(STYLES)}"
        )
    if len(set(styles)) != len(styles):
        raise EdgeGuardError(f"--styles {text!r} names a style twice")
    return styles


def expand_styles(configs: Sequence[CompareConfig], styles: Sequence[str]) -> list[CompareConfig]:
    """One config per style for each config (no configs: the `--model` default)."""
    base = list(configs) or [CompareConfig(None)]
    out = []
    for cfg in base:
        if "style" in dict(cfg.options):
            raise EdgeGuardError(f"config {cfg.spec()!r} sets style= and --styles is also given")
        out += [cfg.with_option("style", s) for s in styles]
    return out


def build_configs(values: Iterable[str], styles: str | None = None) -> list[CompareConfig]:
    """Parse `--configs`/`--config` values and the `--styles` shortcut into the config list."""
    configs = [parse_config(s) for s in split_configs(values)]
    if styles:
        configs = expand_styles(configs, parse_styles(styles))
    return configs


def check_configs(configs: Sequence[CompareConfig], default_model: str | None) -> list[str]:
    """Refuse fewer than two or repeated configs; the labels (unique) otherwise."""
    if len(configs) < 2:
        raise EdgeGuardError(
            f"a comparison needs at least two configs (a reference and a candidate), got "
            f"{len(configs)}: pass --configs 'REF;CAND', --config twice, or --styles"
        )
    seen: dict[tuple[Any, ...], int] = {}
    for k, cfg in enumerate(configs, 1):
        ident = (
            cfg.model or default_model,
            tuple(sorted((a, str(b)) for a, b in cfg.opts.items())),
        )
        if ident in seen:
            raise EdgeGuardError(
                f"config {k} ({cfg.spec()!r}) repeats config {seen[ident]}: nothing to compare"
            )
        seen[ident] = k
    labels = [c.label(default_model) for c in configs]
    dup = next((lab for lab in labels if labels.count(lab) > 1), None)
    if dup is not None:
        raise EdgeGuardError(f"two configs are both labelled {dup!r}: give one a name=LABEL")
    return labels
