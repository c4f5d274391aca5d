"""Where edge_guard keeps its files: the data dir (store, models, prefix states) and policies."""

from __future__ import annotations

import os
from pathlib import Path

from edge_guard.defaults import env


def data_dir() -> Path:
    """`$EDGE_GUARD_HOME`, else `$XDG_DATA_HOME/edge-guard`, else `~/.local/share/edge-guard`."""
    home = env("EDGE_GUARD_HOME")
    if home:
        path = Path(home).expanduser()
    else:
        xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        path = Path(xdg) / "edge-guard"
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_db_path() -> Path:
    return data_dir() / "edge_guard.db"


def synth_dir() -> Path:
    """Synthetic models built on demand for `synth:PRESET` references."""
    path = data_dir() / "synth"
    path.mkdir(parents=True, exist_ok=True)
    return path


def repo_root() -> Path:
    """The source checkout (holds `policies/`, `models/`) for an editable install."""
    return Path(__file__).resolve().parent.parent


def policy_search_path() -> list[Path]:
    """Folders searched for a policy given by name, first match wins."""
    paths = []
    extra = env("EDGE_GUARD_POLICIES")
    if extra:
        paths += [Path(p).expanduser() for p in extra.split(os.pathsep) if p]
    paths += [Path.cwd() / "policies", data_dir() / "policies", repo_root() / "policies"]
    seen, out = set(), []
    for p in paths:
        rp = p.resolve()
        if rp not in seen:
            seen.add(rp)
            out.append(p)
    return out
