"""The keep-alive setting: how long a warm engine stays loaded after its last request.

`parse_keep_alive(value)` reads seconds (`300`, `2.5`) or a duration with a unit (`90s`,
`5m`, `1h`); `0` means "never start a warm engine". `default_keep_alive()` is what a
command uses when neither the flag, `$EDGE_GUARD_KEEP_ALIVE` nor `config.toml`
(`[engine] keep_alive`) sets it: `DEFAULT_KEEP_ALIVE_S`, except under CI (`$CI`) or
pytest (`$PYTEST_CURRENT_TEST`), where it is 0 so that no test or CI job leaves a
service running by accident (set the variable to opt in there).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping

from edge_guard.defaults import DEFAULT_KEEP_ALIVE_S

ENV_VAR = "EDGE_GUARD_KEEP_ALIVE"
MAX_KEEP_ALIVE_S = 7 * 24 * 3600.0
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)\s*$", re.IGNORECASE)
RULE = "must be seconds >= 0 or a duration such as 90s, 5m or 1h (0: no warm engine)"


def parse_keep_alive(value: object) -> float:
    """Seconds from `value` (a number, or text such as "300", "90s", "5m", "1h");
    `ValueError(RULE)` for anything else (negative, not finite, over a week, a bool)."""
    if isinstance(value, bool):
        raise ValueError(RULE)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        m = _DURATION.match(value)
        if m is None:
            raise ValueError(RULE)
        seconds = float(m.group(1)) * _UNITS[m.group(2).lower()]
    else:
        raise ValueError(RULE)
    if not math.isfinite(seconds) or seconds < 0 or seconds > MAX_KEEP_ALIVE_S:
        raise ValueError(RULE)
    return seconds


def default_keep_alive(env: Mapping[str, str] | None = None) -> float:
    """The keep-alive when nothing sets one: 0 under CI or pytest, else the default."""
    env = os.environ if env is None else env
    if env.get("CI") or env.get("PYTEST_CURRENT_TEST"):
        return 0.0
    return DEFAULT_KEEP_ALIVE_S


def format_seconds(seconds: float) -> str:
    """`300.0` -> "5m", `90` -> "90s", `5400` -> "1.5h" (for `edge-guard ps`)."""
    if seconds >= 3600 and seconds % 360 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 6 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:.0f}s" if seconds >= 1 or seconds == 0 else f"{seconds:.1f}s"
