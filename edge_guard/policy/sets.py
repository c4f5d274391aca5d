"""Policy sets: several policies checked together, and how their verdicts combine.

A set is a TOML file `policies/sets/<file>.toml` (searched like policies, see
`paths.policy_search_path()`), found by its `name` (else its file name), its file name, or
one of its `aliases` (`set_index`: the one lookup of the CLI, the API and the service):

    name = "community"
    description = "What a forum checks every post for."
    policies = ["toxic_chat", "spam"]

    [thresholds]          # optional: flag a member when P(violation) >= threshold
    toxic_chat = 0.3

How a set's verdicts combine and its thresholds apply is `policy.thresholds`.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_guard.errors import PolicyError
from edge_guard.paths import policy_search_path
from edge_guard.policy.core import Policy, load_policy

SETS_DIR = "sets"
SET_KEYS = ("name", "description", "policies", "thresholds", "aliases")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_MEMBERS = 32


@dataclass(frozen=True)
class SetMember:
    """One policy of a set: how the set file names it, the loaded policy, its threshold."""

    ref: str
    policy: Policy
    threshold: float | None = None

    @property
    def name(self) -> str:
        return self.policy.name


@dataclass(frozen=True)
class PolicySet:
    """A named, ordered group of distinct policies."""

    name: str
    members: tuple[SetMember, ...]
    description: str = ""
    path: Path | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()  # other names it answers to (`find_set`)
    adhoc: bool = False  # policies given one by one (`adhoc_set`): a name no server knows

    @property
    def policies(self) -> list[Policy]:
        return [m.policy for m in self.members]

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.members]

    def member(self, name: str) -> SetMember:
        for m in self.members:
            if m.name == name:
                return m
        raise PolicyError(
            f"set {self.name}: no policy named {name!r} (has {', '.join(self.names)})"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "path": str(self.path) if self.path else None,
            "aliases": list(self.aliases),
            "policies": [
                {
                    "name": m.name,
                    "ref": m.ref,
                    "kind": m.policy.output.kind,
                    "hash": m.policy.hash,
                    "threshold": m.threshold,
                }
                for m in self.members
            ],
        }


def _thresholdable(policy: Policy) -> bool:
    """P(violation) exists only for closed outputs with violating labels."""
    return policy.output.closed and bool(policy.output.violation)


def _check_threshold(where: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PolicyError(f"{where}: threshold for {name!r} must be a number, got {value!r}")
    v = float(value)
    if not 0.0 < v <= 1.0:
        raise PolicyError(f"{where}: threshold for {name!r} must be in (0, 1], got {value!r}")
    return v


def set_from_dict(
    meta: Mapping[str, Any], where: str, path: Path | None = None, default_name: str | None = None
) -> PolicySet:
    """Validate a set's fields and load its policies; every problem is one PolicyError line."""
    unknown = [k for k in meta if k not in SET_KEYS]
    if unknown:
        raise PolicyError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))} (allowed: {', '.join(SET_KEYS)})"
        )
    name = meta.get("name", default_name)
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise PolicyError(
            f"{where}: `name` must be 1-64 letters, digits, '.', '_' or '-' (got {name!r})"
        )
    desc = meta.get("description", "")
    if not isinstance(desc, str):
        raise PolicyError(f"{where}: `description` must be a string")
    refs = meta.get("policies")
    if (
        not isinstance(refs, list)
        or not refs
        or not all(isinstance(r, str) and r.strip() for r in refs)
    ):
        raise PolicyError(f"{where}: `policies` must be a non-empty list of policy names")
    if len(refs) > MAX_MEMBERS:
        raise PolicyError(f"{where}: {len(refs)} policies; a set holds at most {MAX_MEMBERS}")
    raw_thresholds = meta.get("thresholds", {})
    if not isinstance(raw_thresholds, dict):
        raise PolicyError(f"{where}: `thresholds` must be a table of policy = number")
    base = path.parent if path is not None else None
    members: list[SetMember] = []
    seen: dict[str, str] = {}
    for ref in refs:
        policy = _load_member(ref, base, where)
        if policy.name in seen:
            raise PolicyError(
                f"{where}: policy {policy.name!r} is listed twice "
                f"({seen[policy.name]!r} and {ref!r})"
            )
        seen[policy.name] = ref
        members.append(SetMember(ref, policy))
    judged = {getattr(m.policy, "judges", "any") for m in members} - {"any"}
    if len(judged) > 1:
        what = ", ".join(f"{m.name} judges {getattr(m.policy, 'judges', 'any')}" for m in members)
        raise PolicyError(
            f"{where}: its policies judge different inputs ({what}); a set's "
            "policies must judge the same thing"
        )
    by_name = {m.name: m for m in members} | {m.ref: m for m in members}
    thresholds: dict[str, float] = {}
    for key, value in raw_thresholds.items():
        m = by_name.get(key)
        if m is None:
            raise PolicyError(f"{where}: threshold for {key!r}, which is not in `policies`")
        if not _thresholdable(m.policy):
            raise PolicyError(
                f"{where}: threshold for {m.name!r}: its output ({m.policy.output.kind}) "
                "has no P(violation) to threshold"
            )
        thresholds[m.name] = _check_threshold(where, key, value)
    members = [SetMember(m.ref, m.policy, thresholds.get(m.name)) for m in members]
    return PolicySet(name, tuple(members), desc, path, thresholds, _aliases(meta, where))


def _aliases(meta: Mapping[str, Any], where: str) -> tuple[str, ...]:
    """A set's `aliases = [...]`: other names it answers to (e.g. a hosted model's name)."""
    raw = meta.get("aliases", [])
    if not isinstance(raw, list) or not all(isinstance(a, str) and NAME_RE.match(a) for a in raw):
        raise PolicyError(
            f"{where}: `aliases` must be a list of names (1-64 letters, digits, '.', '_' or '-')"
        )
    return tuple(dict.fromkeys(raw))


def _load_member(ref: str, base: Path | None, where: str) -> Policy:
    """A member policy: a name on the search path, or a path relative to the set file."""
    candidates: list[str | Path] = []
    if base is not None and any(s in ref for s in "/\\"):
        candidates.append(base / ref)
    candidates.append(ref)
    last: PolicyError | None = None
    for c in candidates:
        if isinstance(c, Path) and not c.exists():
            continue
        try:
            return load_policy(c)
        except PolicyError as exc:
            last = exc
            break
    raise PolicyError(f"{where}: policy {ref!r}: {last or 'not found'}")


def set_file_names(path: Path) -> tuple[str, tuple[str, ...]]:
    """(the name a set file shows: its `name`, else its file name; its valid `aliases`),
    read without loading its policies. A broken file answers to its file name only (loading
    it by that name reports why)."""
    try:
        meta = tomllib.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return path.stem, ()
    name = meta.get("name", path.stem)
    raw = meta.get("aliases", [])
    aliases = (
        [a for a in raw if isinstance(a, str) and NAME_RE.match(a)] if isinstance(raw, list) else []
    )
    return (name if isinstance(name, str) and NAME_RE.match(name) else path.stem), tuple(aliases)


def set_index(
    names: Callable[[Path], tuple[str, tuple[str, ...]]] = set_file_names,
) -> dict[str, Path]:
    """THE set lookup (`find_set`, `--set`, the service): every name a set answers to -> its
    file. A set's shown name (`policies sets`) wins over a file name, which wins over an
    alias; within each, the first on the policy search path. `names` reads a file's names
    (the service passes a cached reader)."""
    shown: dict[str, Path] = {}
    stems: dict[str, Path] = {}
    aliases: dict[str, Path] = {}
    for path in list_sets():
        name, also = names(path)
        shown.setdefault(name, path)
        stems.setdefault(path.stem, path)
        for alias in also:
            aliases.setdefault(alias, path)
    return {**aliases, **stems, **shown}


def find_set(name: str) -> Path | None:
    """The set file answering to `name` (`set_index`), or None."""
    return set_index().get(name) if NAME_RE.match(name) else None


def is_set_ref(ref: Any) -> bool:
    """True for a PolicySet, a .toml path, or a set name (a policy of that name wins)."""
    if isinstance(ref, PolicySet):
        return True
    if not isinstance(ref, str | Path):
        return False
    s = str(ref)
    if s.endswith(".toml"):
        return True
    from edge_guard.policy.core import find_policy

    return find_set(s) is not None and find_policy(s) is None


def load_set(ref: str | Path | PolicySet) -> PolicySet:
    """Load a set from its name, its .toml file, or return a ready `PolicySet`."""
    if isinstance(ref, PolicySet):
        return ref
    path = Path(ref)
    if not path.is_file():
        found = find_set(str(ref)) if not any(s in str(ref) for s in "/\\") else None
        if found is None:
            known = ", ".join(sorted({set_file_names(p)[0] for p in list_sets()})) or "none"
            raise PolicyError(
                f"policy set {str(ref)!r} not found (a .toml file or a name in "
                f"policies/sets/; known: {known})"
            )
        path = found
    try:
        raw = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read policy set ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise PolicyError(
            f"{path}: policy set is not UTF-8 (bad byte at offset {exc.start})"
        ) from None
    try:
        meta = tomllib.loads(raw)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{path}: invalid TOML ({str(exc).splitlines()[0]})") from None
    return set_from_dict(meta, str(path), path, default_name=path.stem)


def list_sets() -> list[Path]:
    """Set files found on the search path (first of each name wins)."""
    seen: dict[str, Path] = {}
    for base in policy_search_path():
        folder = base / SETS_DIR
        if not folder.is_dir():
            continue
        for p in sorted(folder.glob("*.toml")):
            if not p.name.startswith((".", "_")):
                seen.setdefault(p.stem, p)
    return list(seen.values())


def adhoc_set(refs: Sequence[str | Path | Policy], name: str | None = None) -> PolicySet:
    """A set from policies given one by one (`-p a -p b`); duplicates are an error."""
    members: list[SetMember] = []
    seen: set[str] = set()
    for ref in refs:
        policy = load_policy(ref)
        if policy.name in seen:
            raise PolicyError(f"policy {policy.name!r} given twice")
        seen.add(policy.name)
        members.append(SetMember(str(ref) if not isinstance(ref, Policy) else ref.name, policy))
    if not members:
        raise PolicyError("no policies given")
    return PolicySet(name or "+".join(m.name for m in members), tuple(members), adhoc=True)


def resolve_policies(policies: Iterable[str] = (), set_ref: str | None = None) -> PolicySet:
    """The set named by `--set`, else the `-p` policies as an ad-hoc set (CLI helper)."""
    refs = list(policies)
    if set_ref is not None:
        if refs:
            raise PolicyError("give either --set or --policy/-p, not both")
        return load_set(set_ref)
    if len(refs) == 1 and is_set_ref(refs[0]):
        return load_set(refs[0])
    return adhoc_set(refs)
