"""Policies: the text the model reads, its declared output format, and its parser.

A policy is one of:
- a folder `policies/<name>/` with `policy.md`, optional `policy.toml` (name, description,
  `[output]` kind/labels/violation, `[input] judges` = any/user/assistant/conversation:
  what it classifies, checked against each input) and optional `parse.py` defining `parse(response)`;
- a seed-style Python module (or `.py` file) with a `POLICY` string (or a sibling
  `<module>.md`) and a `parse(response: ModelResponse) -> ClassificationResult`;
- a plain `.md`/`.txt` file (binary 0/1 output);
- a shipped policy's name (searched in `paths.policy_search_path()`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import math
import stat
import sys
import tomllib
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_guard.errors import PolicyError
from edge_guard.paths import policy_search_path

OUTPUT_KINDS = ("binary", "likert", "json", "labels")
# Policy files (policy.md, policy.toml, parse.py, a module) are read whole: a policy is a few
# thousand tokens, so 1 MiB is generous; /dev/zero, a FIFO or a huge file is refused.
MAX_POLICY_BYTES = 1 << 20


def check_regular_file(path: Path, limit: int, what: str) -> None:
    """PolicyError unless `path` is a regular file of at most `limit` bytes (checked before it
    is opened, so a FIFO never blocks and a device is never read)."""
    try:
        st = path.stat()
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise PolicyError(f"{path}: {what} is not a regular file")
    if st.st_size > limit:
        raise PolicyError(f"{path}: {what} is {st.st_size} bytes; the limit is {limit} bytes")


# The keys an `[output]` table may have and the type of each (`check_output`).
OUTPUT_KEYS: dict[str, type] = {
    "kind": str,
    "labels": list,
    "violation": list,
    "min": int,
    "max": int,
    "threshold": float,
}
_TYPE_NAMES = {str: "a string", list: "a list of strings", int: "an integer", float: "a number"}


class OutputError(PolicyError):
    """An `[output]` table that is not valid: one line naming where it came from (a
    policy.toml, a module, `policy_output`) and the key (`key`: "labels", "labels[2]",
    "" for the table itself); `why` is the reason alone."""

    def __init__(self, where: str, key: str, why: str) -> None:
        super().__init__(f"{where}: [output] {key} {why}" if key else f"{where}: [output] {why}")
        self.where, self.key, self.why = where, key, why


def _number(value: Any, kind: type) -> bool:
    if isinstance(value, bool):
        return False
    if kind is float:
        return isinstance(value, int | float) and math.isfinite(value)
    return isinstance(value, kind)


def _check_strings(values: list[Any], where: str, key: str, numbers: bool) -> tuple[str, ...]:
    """A list of non-empty strings (integers too where `numbers`: a likert `violation`),
    without NUL or lone surrogates, none listed twice."""
    out: list[str] = []
    for i, item in enumerate(values):
        if numbers and isinstance(item, int) and not isinstance(item, bool):
            item = str(item)
        if not isinstance(item, str) or not item.strip() or "\x00" in item:
            raise OutputError(where, f"{key}[{i}]", "must be a non-empty string without NUL")
        try:
            item.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise OutputError(
                where, f"{key}[{i}]", f"has an unpaired surrogate at character {exc.start}"
            ) from None
        if item in out:
            raise OutputError(where, key, f"lists {item!r} twice")
        out.append(item)
    return tuple(out)


def check_output(d: Any, where: str) -> dict[str, Any]:
    """THE check of an `[output]` table (policy.toml, a module's OUTPUT, the service's
    inline `policy_output`): a table of known keys of the right types, lists of distinct
    non-empty strings. Returns it with the lists as tuples of strings; `OutputError` else."""
    if not isinstance(d, dict):
        raise OutputError(where, "", "must be a table")
    out: dict[str, Any] = {}
    for key, value in d.items():
        kind = OUTPUT_KEYS.get(key)
        if kind is None:
            raise OutputError(
                where, str(key), f"is not a known key (known: {', '.join(OUTPUT_KEYS)})"
            )
        if not _number(value, kind):
            raise OutputError(where, key, f"must be {_TYPE_NAMES[kind]}")
        out[key] = _check_strings(value, where, key, key == "violation") if kind is list else value
    return out


@dataclass(frozen=True)
class OutputSpec:
    """The declared answer format. `labels` are the closed set of answers (not for json)."""

    kind: str = "binary"
    labels: tuple[str, ...] = ("0", "1")
    violation: tuple[str, ...] = ("1",)
    threshold: float = 0.5  # one-pass scoring: violation iff P(violation) >= threshold

    @property
    def closed(self) -> bool:
        return self.kind in ("binary", "likert", "labels")

    @classmethod
    def from_dict(cls, d: Any, where: str) -> OutputSpec:
        """The spec of an `[output]` table, checked (`check_output`, then each kind's rules)."""
        d = check_output(d, where)
        kind = d.get("kind", "binary")
        if kind not in OUTPUT_KINDS:
            raise OutputError(where, "kind", f"{kind!r} is not one of {', '.join(OUTPUT_KINDS)}")
        if kind == "binary":
            labels: tuple[str, ...] = ("0", "1")
            violation = d.get("violation", ("1",))
        elif kind == "likert":
            lo, hi = d.get("min", 1), d.get("max", 5)
            if not (lo < hi and hi - lo <= 20):
                raise OutputError(
                    where, "min", f"must be below max, by at most 20 (got {lo}..{hi})"
                )
            labels = tuple(str(i) for i in range(lo, hi + 1))
            violation = d.get("violation", ())
        elif kind == "labels":
            labels = d.get("labels", ())
            if len(labels) < 2:
                raise OutputError(where, "labels", "must list >= 2 labels for kind 'labels'")
            violation = d.get("violation", ())
        else:  # json
            labels, violation = (), ()
        bad = [v for v in violation if labels and v not in labels]
        if bad:
            raise OutputError(
                where, "violation", f"value(s) {bad} are not among the labels {list(labels)}"
            )
        threshold = d.get("threshold", 0.5)
        if not 0 <= threshold <= 1:
            raise OutputError(where, "threshold", f"must be a number in [0, 1], got {threshold!r}")
        return cls(kind, labels, violation, float(threshold))

    def as_dict(self) -> dict[str, Any]:
        d = {"kind": self.kind, "labels": list(self.labels), "violation": list(self.violation)}
        return d if self.threshold == 0.5 else {**d, "threshold": self.threshold}


@dataclass
class Policy:
    """A loaded policy. `parser` is a custom parse function, or None for the built-in one."""

    name: str
    text: str
    output: OutputSpec = field(default_factory=OutputSpec)
    description: str = ""
    path: Path | None = None
    parser: Callable[[Any], Any] | None = None
    parser_source: str = ""
    cases_path: Path | None = None
    # What the policy judges: "any" text, "user" messages, "assistant" replies (in their
    # conversation), or a whole "conversation" (policy.toml `[input] judges = ...`).
    judges: str = "any"

    @property
    def text_hash(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    @property
    def hash(self) -> str:
        """Policy version: its text, its parser's source and its output spec."""
        h = hashlib.sha256()
        for part in (
            self.text,
            self.parser_source,
            json.dumps(self.output.as_dict(), sort_keys=True),
        ):
            h.update(part.encode("utf-8"))
            h.update(b"\0")
        return h.hexdigest()


def _read_text(path: Path) -> str:
    check_regular_file(path, MAX_POLICY_BYTES, "policy")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read policy ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(
            f"{path}: policy is not UTF-8 text (bad byte at offset {exc.start})"
        ) from None
    why = policy_text_problem(text)
    if why:
        raise PolicyError(f"{path}: policy {why}")
    return text


def policy_text_problem(text: str) -> str | None:
    """Why `text` cannot be a policy's text (a file's or the service's inline one), or None."""
    if "\x00" in text:
        return "contains NUL bytes"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"has an unpaired surrogate at character {exc.start}"
    return None if text.strip() else "text is empty"


def _import_file(path: Path, name: str) -> types.ModuleType:
    check_regular_file(path, MAX_POLICY_BYTES, "policy code")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PolicyError(f"{path}: cannot import")
    module = importlib.util.module_from_spec(spec)
    try:
        # From the source, never a cached .pyc: an edit that keeps the file's size within the
        # same second (the .pyc's stamp) would otherwise run the code loaded before.
        exec(compile(path.read_bytes(), str(path), "exec", dont_inherit=True), vars(module))
    except SystemExit as exc:
        raise PolicyError(f"{path}: importing it called sys.exit({exc.code!r})") from None
    except Exception as exc:
        raise PolicyError(f"{path}: importing it failed: {type(exc).__name__}: {exc}") from None
    return module


def _parser_of(module: types.ModuleType, where: str) -> tuple[Callable[[Any], Any] | None, str]:
    fn = getattr(module, "parse", None)
    if fn is None:
        return None, ""
    if not callable(fn):
        raise PolicyError(f"{where}: `parse` is not a function")
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        source = getattr(fn, "__qualname__", "parse")
    return fn, source


def _judges(section: Any, where: str) -> str:
    """`[input] judges` of policy.toml (default "any")."""
    from edge_guard.conversation import JUDGES

    if not isinstance(section, dict):
        raise PolicyError(f"{where}: [input] must be a table")
    judges = section.get("judges", "any")
    if judges not in JUDGES:
        raise PolicyError(f"{where}: [input] judges {judges!r} is not one of {', '.join(JUDGES)}")
    return str(judges)


def _from_folder(folder: Path) -> Policy:
    md = folder / "policy.md"
    if not md.is_file():
        raise PolicyError(f"{folder}: a policy folder needs a policy.md")
    text = _read_text(md)
    meta: dict[str, Any] = {}
    toml_path = folder / "policy.toml"
    if toml_path.is_file():
        try:
            meta = tomllib.loads(_read_text(toml_path))
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(f"{toml_path}: invalid TOML ({exc})") from None
    output = OutputSpec.from_dict(meta.get("output", {}), str(toml_path))
    judges = _judges(meta.get("input", {}), str(toml_path))
    parser, source = None, ""
    parse_py = folder / "parse.py"
    if parse_py.is_file():
        parser, source = _parser_of(
            _import_file(parse_py, f"edge_guard_policy_{folder.name}"), str(parse_py)
        )
    cases = next((folder / n for n in ("cases.jsonl", "cases.csv") if (folder / n).is_file()), None)
    return Policy(
        name=str(meta.get("name", folder.name)),
        text=text,
        output=output,
        description=str(meta.get("description", "")),
        path=folder,
        parser=parser,
        parser_source=source,
        cases_path=cases,
        judges=judges,
    )


def _from_module(module: types.ModuleType, where: str, path: Path | None = None) -> Policy:
    text = getattr(module, "POLICY", None)
    if text is None and path is not None:
        sibling = path.with_suffix(".md")
        if sibling.is_file():
            text = _read_text(sibling)
    if not isinstance(text, str) or not text.strip():
        raise PolicyError(
            f"{where}: a policy module needs a non-empty POLICY string (or a sibling .md)"
        )
    parser, source = _parser_of(module, where)
    output = OutputSpec.from_dict(getattr(module, "OUTPUT", {}) or {}, where)
    name = getattr(module, "NAME", None) or module.__name__.rsplit(".", 1)[-1]
    judges = _judges({"judges": getattr(module, "JUDGES", "any")}, where)
    return Policy(
        name, text, output, (module.__doc__ or "").strip(), path, parser, source, judges=judges
    )


def find_policy(name: str) -> Path | None:
    for base in policy_search_path():
        for candidate in (base / name, base / f"{name}.py", base / f"{name}.md"):
            if candidate.exists():
                return candidate
    return None


def load_policy(ref: str | Path | types.ModuleType | Policy) -> Policy:
    """Load a policy from a name, a folder, a file, a module or a `Policy`."""
    if isinstance(ref, Policy):
        return ref
    if isinstance(ref, types.ModuleType):
        file = getattr(ref, "__file__", None)
        return _from_module(ref, ref.__name__, Path(file) if file else None)
    path = Path(ref)
    if not path.exists():
        found = find_policy(str(ref)) if not any(s in str(ref) for s in "/\\") else None
        if found is None:
            raise PolicyError(
                f"policy {ref!r} not found (a folder, a .md/.py file, or a name in policies/)"
            )
        path = found
    if path.is_dir():
        return _from_folder(path)
    if path.suffix == ".py":
        mod_name = f"edge_guard_policy_{path.stem}"
        module = _import_file(path, mod_name)
        sys.modules.setdefault(mod_name, module)
        return _from_module(module, str(path), path)
    return Policy(path.stem, _read_text(path), OutputSpec(), "", path)


def list_policies() -> list[Path]:
    """Policy folders and files found on the search path (first of each name wins)."""
    seen: dict[str, Path] = {}
    for base in policy_search_path():
        if not base.is_dir():
            continue
        for p in sorted(base.iterdir()):
            if p.name.startswith((".", "_")):
                continue
            if (p.is_dir() and (p / "policy.md").is_file()) or p.suffix in (".py", ".md"):
                seen.setdefault(p.stem if p.is_file() else p.name, p)
    return list(seen.values())
