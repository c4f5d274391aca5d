"""Checking and converting one setting's value, and naming it in the terms of each door.

`convert(name, value, where, door)` turns a value (a flag, a keyword, a request field, a
control's content, or a string from the environment or `config.toml`) into the type the
`Settings` field takes, or raises `SettingError`: one line naming the value where the user
gave it — `--seed -1` on the command line, `seed=-1` in Python, the request field `seed`
over HTTP, the control in the TUI, `$EDGE_GUARD_SEED` or the config file's table otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

from edge_guard.config import BACKEND_KINDS, SERVER_KINDS
from edge_guard.errors import EdgeGuardError
from edge_guard.harmony.render import EFFORTS, STYLES, PromptConfig

# Reasoning modes: full reasoning, or one of the one-pass modes (no reasoning generated).
FULL = "full"
NONE = "none"
NONE_EMPTY_ANALYSIS = "none-empty-analysis"
REASONING_MODES = (FULL, NONE, NONE_EMPTY_ANALYSIS)
ONE_PASS_MODES = (NONE, NONE_EMPTY_ANALYSIS)


def check_mode(mode: str) -> str:
    if mode not in REASONING_MODES:
        raise EdgeGuardError(
            f"unknown reasoning mode {mode!r} (choose {', '.join(REASONING_MODES)})"
        )
    return mode


def parse_bounds(value: str | Sequence[float] | None) -> tuple[float, float] | None:
    """`"LOW:HIGH"` (or a pair) -> (low, high) with 0 <= low <= high <= 1; None passes."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        parts = value.split(":")
        try:
            pair = [float(p) for p in parts]
        except ValueError:
            pair = []
        if len(parts) != 2 or len(pair) != 2:
            raise EdgeGuardError(f"cascade {value!r} is not LOW:HIGH (e.g. 0.2:0.8)")
    else:
        pair = list(value)
        if len(pair) != 2 or not all(isinstance(x, int | float) for x in pair):
            raise EdgeGuardError(f"cascade {value!r} is not a (low, high) pair of numbers")
    low, high = float(pair[0]), float(pair[1])
    if not 0.0 <= low <= high <= 1.0:
        raise EdgeGuardError(f"cascade bounds must satisfy 0 <= LOW <= HIGH <= 1, got {low}:{high}")
    return low, high


# The doors a request comes through; each names a setting its own way (`option_name`).
DOORS = ("cli", "python", "http", "tui")
GIVEN = "given"  # `where` for a value the door itself was given (flag, keyword, field, control)
MAX_SEED = 2**63 - 1

# The TUI's controls (fields without one come from its command flags, env or config.toml).
TUI_CONTROLS = {
    "model": "the model box",
    "style": "the style choice",
    "effort": "the effort choice",
    "reasoning": "the reasoning choice",
    "max_tokens": "the max tokens box",
}
_CLI_FLAGS = {"use_cache": "--no-cache"}

_INTS: dict[str, tuple[int | None, int | None]] = {
    "ctx": (0, None),
    "threads": (1, None),
    "parallel": (1, None),
    "seed": (0, MAX_SEED),
    "max_tokens": (1, None),
    "concurrency": (1, None),
}
_BOOLS = ("force", "yes", "use_cache", "truncate")
_CHOICES = {
    "style": STYLES,
    "effort": EFFORTS,
    "backend": BACKEND_KINDS,
    "reasoning": REASONING_MODES,
    "server_kind": SERVER_KINDS,
}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class SettingError(EdgeGuardError):
    """A setting that cannot be used: one line in the door's terms (a usage error, exit 2).
    `setting` is the `Settings` field (an HTTP error's `param`), `door` where it came in."""

    exit_code = 2

    def __init__(self, message: str, setting: str | None = None, door: str = "python") -> None:
        super().__init__(message)
        self.setting, self.door = setting, door


def option_name(name: str, door: str) -> str:
    """How `door` spells the setting `name`: `--max-tokens`, `max_tokens=`, the request field
    `max_tokens`, or the TUI's control."""
    if door == "cli":
        return _CLI_FLAGS.get(name, "--" + name.replace("_", "-"))
    if door == "http":
        return f"request field {name!r}"
    if door == "tui":
        return TUI_CONTROLS.get(name) or _CLI_FLAGS.get(name, "--" + name.replace("_", "-"))
    return f"{name}="


def _what(name: str, value: Any, where: str, door: str) -> str:
    shown = repr(value) if isinstance(value, str) else str(value)
    if where == "settings":  # Settings(...) built directly: Python's terms
        where, door = GIVEN, "python"
    if where != GIVEN:
        return f"{name} = {value!r} (from {where})"
    if door == "python":
        return f"{name}={value!r}"
    if door == "cli" or (door == "tui" and name not in TUI_CONTROLS):  # a command flag
        return f"{option_name(name, door)} {shown}"
    return f"{option_name(name, door)} = {shown}"


def convert(name: str, value: Any, where: str, door: str = "python") -> Any:
    """`value` as the type `name` takes (strings from env/files are parsed), or a one-line
    `SettingError` naming it as `door` does (`where`: GIVEN, "settings" or the source)."""
    if value is None:
        return None

    def bad(rule: str) -> SettingError:
        return SettingError(f"{_what(name, value, where, door)}: {rule}", name, door)

    if name in _BOOLS:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise bad("must be true or false")
    if name in _INTS:
        low, high = _INTS[name]
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise bad("must be an integer")
        try:
            n = int(value)
        except ValueError:
            raise bad("must be an integer") from None
        if (low is not None and n < low) or (high is not None and n > high):
            raise bad(f"must be >= {low}" if high is None else f"must be from {low} to {high}")
        return n
    if name in ("temperature", "timeout"):
        try:
            x = float(value)
        except (TypeError, ValueError):
            raise bad("must be a number") from None
        if not math.isfinite(x) or x < 0 or (name == "timeout" and x == 0):
            raise bad(f"must be a finite number {'>' if name == 'timeout' else '>='} 0")
        return x
    if name == "keep_alive":  # seconds, or 90s / 5m / 1h
        from edge_guard.settings.keep_alive import RULE, parse_keep_alive

        try:
            return parse_keep_alive(value)
        except ValueError:
            raise bad(RULE) from None
    if name == "gpu_layers":
        text = str(value).strip().lower()
        if text == "auto":
            return "auto"
        try:
            n = int(text)
        except ValueError:
            raise bad("must be 'auto' or a number of layers") from None
        if n < -1:
            raise bad("must be 'auto', -1 (all) or a number of layers >= 0")
        return n
    if isinstance(value, Path) and name in ("model", "db"):
        return str(value)
    if name == "cascade":  # "LOW:HIGH" or a (low, high) pair -> "LOW:HIGH", checked
        try:
            bounds = parse_bounds(value)
        except EdgeGuardError as exc:
            raise bad(
                str(exc).removeprefix(f"cascade {value!r} ").removeprefix("cascade ")
            ) from None
        return None if bounds is None else f"{bounds[0]!r}:{bounds[1]!r}"
    if isinstance(value, StrEnum):
        value = str(value.value)
    if not isinstance(value, str):
        raise bad("must be a string")
    if name in _CHOICES and value not in _CHOICES[name]:
        raise bad(f"must be one of {', '.join(_CHOICES[name])}")
    if name == "date":
        try:
            PromptConfig(date=value)  # YYYY-MM-DD, a calendar date
        except EdgeGuardError:
            raise bad("must be a calendar date written YYYY-MM-DD") from None
    if name == "url":
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise bad("must start with http:// or https://")
    return value
