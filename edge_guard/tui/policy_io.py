"""Policy helpers for the TUI: names, format checks, and saving an edit as a new policy folder.

Saving never overwrites: a new folder `<data dir>/policies/<name>/` is written (policy.md,
policy.toml with the same output spec, the parser and test cases copied along), each file
through a temp file + `os.replace`, and the folder appears only once complete.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_guard.errors import PolicyError
from edge_guard.policy.core import Policy, find_policy, list_policies

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def policy_choices() -> list[tuple[str, str]]:
    """(display name, path) for every policy on the search path."""
    out = []
    for path in list_policies():
        name = path.name if path.is_dir() else path.stem
        out.append((name, str(path)))
    return out


PLAIN_TEXT_JUDGES = ("any", "user")  # policies that classify a plain text
OPENING_POLICY = "toxic_simple"


def opening_policy(store: Any, given: str | None = None) -> str:
    """The Workbench's first policy: `given`, else the last plain-text policy used (the
    newest stored result's that judges a text), else `toxic_simple`."""
    if given:
        return given
    from edge_guard.policy.core import load_policy

    rows = store.query(
        "SELECT policy_name FROM results WHERE policy_name IS NOT NULL "
        "ORDER BY created_at DESC LIMIT 200"
    )
    for name in dict.fromkeys(r["policy_name"] for r in rows):
        path = find_policy(name)
        if path is None:
            continue
        try:
            policy = load_policy(path)
        except PolicyError:
            continue
        if getattr(policy, "judges", "any") in PLAIN_TEXT_JUDGES:
            return name
    return OPENING_POLICY


def next_free_name(base: str) -> str:
    """`base-2`, `base-3`, … : the first name no policy on the search path uses."""
    stem = re.sub(r"-\d+$", "", base) or "policy"
    n = 2
    while find_policy(f"{stem}-{n}") is not None:
        n += 1
    return f"{stem}-{n}"


@dataclass(frozen=True)
class FormatCheck:
    """What the policy declares and what looks wrong with it."""

    summary: str
    warnings: tuple[str, ...]


def check_format(policy: Policy, text: str) -> FormatCheck:
    """Output kind, labels, parser; warn when the text never names the answers."""
    out = policy.output
    if out.kind == "binary":
        what = f"binary 0/1 (violation: {', '.join(out.violation)})"
    elif out.kind == "likert":
        what = f"likert {out.labels[0]}–{out.labels[-1]}"
        if out.violation:
            what += f" (violation: {', '.join(out.violation)})"
    elif out.kind == "labels":
        what = f"labels {'/'.join(out.labels)}"
    else:
        what = "json answer"
    parser = "custom parse()" if policy.parser is not None else "built-in parser"
    warnings: list[str] = []
    if not text.strip():
        warnings.append("policy text is empty")
    elif out.kind == "json":
        if "json" not in text.lower():
            warnings.append("the text never asks for JSON")
    elif out.labels:
        missing = [lab for lab in out.labels if lab not in text]
        if len(missing) == len(out.labels) or (out.kind != "likert" and missing):
            warnings.append(f"the text never mentions the answer(s) {', '.join(missing)}")
    return FormatCheck(f"{what} · {parser}", tuple(warnings))


def _atomic_write(path: Path, data: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _toml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def policy_toml(policy: Policy, name: str, description: str) -> str:
    out = policy.output
    lines = [f"name = {_toml_str(name)}", f"description = {_toml_str(description)}"]
    if policy.name and policy.name != name:
        lines.append(f"derived_from = {_toml_str(policy.name)}")
    lines += ["", "[output]", f"kind = {_toml_str(out.kind)}"]
    if out.kind == "likert":
        lines += [f"min = {int(out.labels[0])}", f"max = {int(out.labels[-1])}"]
    elif out.kind == "labels":
        lines.append(f"labels = [{', '.join(_toml_str(x) for x in out.labels)}]")
    if out.kind != "json":
        lines.append(f"violation = [{', '.join(_toml_str(x) for x in out.violation)}]")
    return "\n".join(lines) + "\n"


def save_policy_as(
    policy: Policy, text: str, name: str, description: str = "", base: Path | None = None
) -> Path:
    """Write `text` (with `policy`'s output spec and parser) as a new policy `name`."""
    from edge_guard.paths import data_dir

    name = name.strip()
    if not NAME_RE.match(name):
        raise PolicyError(
            f"policy name {name!r} must start with a letter or digit and use only "
            "letters, digits, '.', '_' or '-' (at most 64 characters)"
        )
    if not text.strip():
        raise PolicyError("policy text is empty; nothing to save")
    root = base or (data_dir() / "policies")
    dest = root / name
    existing = find_policy(name)
    if dest.exists() or existing is not None:
        raise PolicyError(f"a policy named {name!r} already exists ({existing or dest})")
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}."))
    try:
        _atomic_write(staging / "policy.md", text if text.endswith("\n") else text + "\n")
        _atomic_write(staging / "policy.toml", policy_toml(policy, name, description))
        src = policy.path
        if src is not None and src.is_dir():
            for extra in ("parse.py", "cases.jsonl", "cases.csv"):
                if (src / extra).is_file():
                    shutil.copy2(src / extra, staging / extra)
        elif policy.parser is not None and policy.parser_source:
            _atomic_write(staging / "parse.py", policy.parser_source)
        os.replace(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest
