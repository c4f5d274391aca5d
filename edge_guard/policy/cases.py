"""Golden cases of a policy: read `cases.jsonl` / `cases.csv` and check each expected answer.

A case is `{"text": ..., "expected": ..., "id": ..., "note": ..., "tags": [...]}`, or a
conversation case with `"messages": [{"role", "content"}, ...]` (a JSON string in CSV) and an
optional `"target"` (last/user/assistant/all) instead of `text`; `expected`
is an answer in the policy's output kind ("0"/"1" for binary, "1".."5" for likert, one of the
labels for labels, the violation 0/1 for json). Any bad line is an error naming that line.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_guard.conversation import Conversation, ConversationError, Item
from edge_guard.errors import PolicyError
from edge_guard.policy.core import OutputSpec, Policy, check_regular_file

CASE_FIELDS = ("id", "text", "expected", "note", "tags", "messages", "target")
MAX_CASES_BYTES = 64 << 20  # a cases file is read whole


class CasesError(PolicyError):
    """A cases file that cannot be used (the message names the file and line)."""


@dataclass(frozen=True)
class Case:
    """One golden case. `key` matches the same case across policy versions (id, else text)."""

    text: str
    expected: str
    id: str | None = None
    note: str = ""
    tags: tuple[str, ...] = ()
    line: int = 0
    conversation: Conversation | None = None  # a conversation case (`text` = judged message)

    @property
    def key(self) -> str:
        if self.id:
            return f"id:{self.id}"
        return f"conv:{self.conversation.canonical()}" if self.conversation else f"text:{self.text}"

    @property
    def item(self) -> Item:
        """What is classified: the conversation, else the text."""
        return self.conversation if self.conversation is not None else self.text

    @property
    def name(self) -> str:
        """A short display name: the id, else the start of the text."""
        if self.id:
            return self.id
        flat = " ".join(self.text.split())
        return flat if len(flat) <= 40 else flat[:39] + "…"

    def to_dict(self) -> dict[str, Any]:
        out = {
            "id": self.id,
            "text": self.text,
            "expected": self.expected,
            "note": self.note,
            "tags": list(self.tags),
        }
        if self.conversation is not None:
            out.update(self.conversation.to_dict())
        return out


def normalize_expected(value: Any, spec: OutputSpec, where: str) -> str:
    """The expected answer as the label string the policy's parser produces."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise CasesError(f"{where}: 'expected' is missing")
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int | str):
        raise CasesError(f"{where}: 'expected' must be a string or a number, not {value!r}")
    raw = str(value).strip()
    if spec.kind == "json":
        allowed: Sequence[str] = ("0", "1")
        mapped = {"false": "0", "true": "1"}.get(raw.lower(), raw)
        if mapped in allowed:
            return mapped
        raise CasesError(f"{where}: expected {value!r} is not a violation value (0 or 1)")
    if spec.kind == "labels":
        for label in spec.labels:
            if label.casefold() == raw.casefold():
                return label
    elif re.fullmatch(r"[+-]?\d+", raw) and str(int(raw)) in spec.labels:
        return str(int(raw))
    raise CasesError(
        f"{where}: expected {value!r} is not an answer of this {spec.kind} policy "
        f"(one of {', '.join(spec.labels)})"
    )


def _tags(value: Any, where: str) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return tuple(t.strip() for t in re.split(r"[;,]", value) if t.strip())
    if isinstance(value, list) and all(isinstance(t, str) for t in value):
        return tuple(t.strip() for t in value if t.strip())
    raise CasesError(f"{where}: 'tags' must be a list of strings or a comma-separated string")


def make_case(obj: dict[str, Any], spec: OutputSpec, where: str, line: int = 0) -> Case:
    """Validate one case object (from JSONL, CSV or Python)."""
    conversation = None
    if obj.get("messages") not in (None, ""):
        if obj.get("text") not in (None, ""):
            raise CasesError(f"{where}: give 'text' or 'messages', not both")
        try:
            conversation = Conversation.from_json(
                obj["messages"], obj.get("target") or None, "'messages'"
            )
        except ConversationError as exc:
            raise CasesError(f"{where}: {exc}") from None
    elif obj.get("target") not in (None, ""):
        raise CasesError(f"{where}: 'target' needs 'messages'")
    text = conversation.judged_text if conversation is not None else obj.get("text")
    if not isinstance(text, str) or not text.strip():
        raise CasesError(f"{where}: 'text' must be a non-empty string (or give 'messages')")
    cid = obj.get("id")
    if cid is not None and not isinstance(cid, str | int):
        raise CasesError(f"{where}: 'id' must be a string")
    note = obj.get("note") or ""
    if not isinstance(note, str):
        raise CasesError(f"{where}: 'note' must be a string")
    return Case(
        text=text,
        expected=normalize_expected(obj.get("expected"), spec, where),
        id=(str(cid).strip() or None) if cid is not None else None,
        note=note,
        tags=_tags(obj.get("tags"), where),
        line=line,
        conversation=conversation,
    )


def _read(path: Path) -> str:
    check_regular_file(path, MAX_CASES_BYTES, "cases file")
    try:
        return path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise CasesError(f"{path}: cannot read cases ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise CasesError(f"{path}: cases file is not UTF-8 (bad byte at {exc.start})") from None


def _jsonl_objects(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    for n, raw in enumerate(_read(path).splitlines(), 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise CasesError(
                f"{path}:{n}: invalid JSON ({exc.msg} at column {exc.colno})"
            ) from None
        except RecursionError:
            raise CasesError(f"{path}:{n}: invalid JSON (nested too deeply)") from None
        if not isinstance(obj, dict):
            raise CasesError(f"{path}:{n}: each line must be a JSON object with text and expected")
        try:
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise CasesError(
                f"{path}:{n}: invalid Unicode (a lone surrogate escape such as \\udc80)"
            ) from None
        yield n, obj


def _csv_objects(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(_read(path), newline=""))
    header = [h.strip() for h in reader.fieldnames or []]
    if not {"text", "messages"} & set(header) or "expected" not in header:
        raise CasesError(
            f"{path}:1: the header must name the columns 'text' (or 'messages') and 'expected'"
        )
    reader.fieldnames = header
    try:
        for row in reader:
            if None in row:
                raise CasesError(f"{path}:{reader.line_num}: more fields than header columns")
            if not any((v or "").strip() for v in row.values()):
                continue
            yield reader.line_num, {k: v for k, v in row.items() if k in CASE_FIELDS}
    except csv.Error as exc:
        raise CasesError(f"{path}:{reader.line_num}: bad CSV ({exc})") from None


def load_cases(path: str | Path, spec: OutputSpec) -> list[Case]:
    """Read and validate a `.jsonl` or `.csv` cases file; ids must be unique."""
    path = Path(path)
    if path.suffix.lower() not in (".jsonl", ".csv"):
        raise CasesError(f"{path}: cases must be a .jsonl or .csv file")
    if not path.is_file():
        raise CasesError(f"{path}: cases file not found")
    objects = _csv_objects(path) if path.suffix.lower() == ".csv" else _jsonl_objects(path)
    cases: list[Case] = []
    seen: dict[str, int] = {}
    for line, obj in objects:
        case = make_case(obj, spec, f"{path}:{line}", line)
        if case.key in seen:
            what = f"id {case.id!r}" if case.id else "text"
            raise CasesError(
                f"{path}:{line}: duplicate case {what} (first on line {seen[case.key]})"
            )
        seen[case.key] = line
        cases.append(case)
    if not cases:
        raise CasesError(f"{path}: no cases (one JSON object or CSV row per case)")
    return cases


def policy_cases(policy: Policy, path: str | Path | None = None) -> list[Case]:
    """The cases of a policy: `path` if given, else its folder's cases.jsonl / cases.csv."""
    where = path or policy.cases_path
    if where is None:
        raise CasesError(
            f"policy {policy.name} has no cases: add cases.jsonl (or cases.csv) next to its "
            'policy.md, one {"text": ..., "expected": ...} per line'
        )
    return load_cases(where, policy.output)


def filter_cases(cases: Sequence[Case], tags: Iterable[str] | None) -> list[Case]:
    """Cases having any of `tags` (comma-separated strings allowed); all when no tags."""
    wanted = {t.strip() for tag in tags or () for t in tag.split(",") if t.strip()}
    if not wanted:
        return list(cases)
    return [c for c in cases if wanted & set(c.tags)]


def cases_hash(cases: Sequence[Case]) -> str:
    blob = json.dumps([c.to_dict() for c in cases], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def append_cases(path: str | Path, objects: Sequence[dict[str, Any]], spec: OutputSpec) -> Path:
    """Append case objects to a `.jsonl` cases file (created if missing), one JSON line each.

    Each object is validated first (`make_case`; extra keys such as `provenance` are kept
    on the line and ignored when loading); existing lines are never rewritten: the new
    lines go in one write after the file's last byte (a newline is added first if the last
    line lacks one), flushed to disk before returning.
    """
    import os

    path = Path(path)
    if path.suffix.lower() != ".jsonl":
        raise CasesError(f"{path}: cases can only be appended to a .jsonl file")
    for n, obj in enumerate(objects, 1):
        make_case(obj, spec, f"new case {n}")
    if not objects:
        return path
    lines = "".join(json.dumps(obj, ensure_ascii=False) + "\n" for obj in objects)
    if path.exists():
        check_regular_file(path, MAX_CASES_BYTES, "cases file")
    with open(path, "ab+") as fh:
        if fh.tell() > 0:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                lines = "\n" + lines
        fh.write(lines.encode("utf-8"))
        fh.flush()
        os.fsync(fh.fileno())
    return path
