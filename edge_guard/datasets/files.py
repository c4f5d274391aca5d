"""Datasets for batch runs: load JSONL/CSV/Parquet rows (and a label column), name ToxicChat.

A row is a text, or a conversation (a `messages` column, or a prompt + a response column:
see `datasets.conversations`) whose judged message is the row's `text`.

Loading never drops a row silently: a row that cannot be used (invalid JSON, invalid UTF-8,
missing or non-string text) becomes a `Malformed(line, reason)` that callers report. Gold
labels are mapped (and rows sampled) in `datasets.gold`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, overload

from edge_guard.conversation import Conversation, Item
from edge_guard.datasets.conversations import ConversationFields, conversation_fields
from edge_guard.errors import EdgeGuardError

TEXT_FIELDS = ("text", "user_input", "prompt", "content", "input", "message", "comment_text")
LABEL_FIELDS = ("label", "toxicity", "gold", "is_toxic", "toxic", "target", "violation")
ID_FIELDS = ("id", "conv_id", "item_id", "uid", "example_id")
FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
SAMPLES = ("natural", "balanced")


@dataclass
class Row:
    """One usable row: its line (JSONL/CSV) or row number (Parquet), text, raw label, id."""

    line: int
    text: str
    label: Any = None
    item_id: str | None = None
    conversation: Conversation | None = None  # `text` is then its judged message

    @property
    def item(self) -> Item:
        """What is classified: the conversation, else the text."""
        return self.conversation if self.conversation is not None else self.text


@dataclass
class Malformed:
    line: int
    reason: str


@dataclass
class Dataset:
    path: Path
    format: str
    sha256: str
    text_field: str
    label_field: str | None
    id_field: str | None
    rows: list[Row]
    malformed: list[Malformed] = field(default_factory=list)
    conversation: ConversationFields | None = None  # a conversation dataset

    @property
    def unit(self) -> str:
        return "row" if self.format == "parquet" else "line"

    def malformed_summary(self, first: int = 5) -> str | None:
        """'3 malformed rows skipped (line 4: invalid JSON, line 9: ...)', or None."""
        return describe_problems(self.malformed, self.unit, first)


def describe_problems(
    problems: Sequence[Malformed], unit: str = "line", first: int = 5
) -> str | None:
    if not problems:
        return None
    shown = ", ".join(f"{unit} {m.line}: {m.reason}" for m in problems[:first])
    more = f", and {len(problems) - first} more" if len(problems) > first else ""
    noun = "row" if len(problems) == 1 else "rows"
    return f"{len(problems)} malformed {noun} skipped ({shown}{more})"


# -- loading ---------------------------------------------------------------------------------
def load_dataset(
    path: str | os.PathLike[str],
    *,
    text_field: str | None = None,
    label_field: str | None = None,
    id_field: str | None = None,
    messages_field: str | None = None,
    prompt_field: str | None = None,
    response_field: str | None = None,
    target: str | None = None,
) -> Dataset:
    """Read a JSONL, CSV/TSV or Parquet file; fields are auto-detected when not given.

    A `messages` column (or `messages_field`), or `prompt_field` + `response_field`, makes
    each row a conversation judged at `target`.
    """
    from edge_guard.datasets.known import resolve_dataset
    from edge_guard.store import sha256_file

    p = resolve_dataset(path)
    fmt = FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise EdgeGuardError(
            f"{p}: unknown dataset format {p.suffix or '(none)'}: use .jsonl, .csv, .tsv or .parquet"
        )
    if fmt == "jsonl":
        records, bad = _read_jsonl(p)
    elif fmt == "parquet":
        records, bad = _read_parquet(p)
    else:
        records, bad = _read_csv(p, "\t" if fmt == "tsv" else ",")
    columns: list[str] = []
    for _line, rec in records[:1000]:
        columns += [k for k in rec if k not in columns]
    conv = conversation_fields(
        columns,
        p,
        text_field=text_field,
        messages_field=messages_field,
        prompt_field=prompt_field,
        response_field=response_field,
        target=target,
    )
    tf = (
        conv.text_field
        if conv
        else _pick(columns, text_field, TEXT_FIELDS, "text", p, required=True)
    )
    lf = _pick(columns, label_field, LABEL_FIELDS, "label", p)
    idf = _pick(columns, id_field, ID_FIELDS, "id", p)
    rows: list[Row] = []
    for line, rec in records:
        conversation, reason = conv.conversation(rec) if conv else (None, _text_problem(rec, tf))
        if reason:
            bad.append(Malformed(line, reason))
            continue
        item_id = rec.get(idf) if idf else None
        text = conversation.judged_text if conversation is not None else rec[tf]
        rows.append(
            Row(
                line,
                text,
                rec.get(lf) if lf else None,
                None if item_id is None else str(item_id),
                conversation,
            )
        )
    bad.sort(key=lambda m: m.line)
    return Dataset(p, fmt, sha256_file(p), tf, lf, idf, rows, bad, conv)


def usable_dataset(
    dataset: str | os.PathLike[str] | Dataset,
    *,
    text_field: str | None = None,
    label_field: str | None = None,
    id_field: str | None = None,
    **conversation: Any,
) -> Dataset:
    """A loaded dataset (or `dataset` itself) that has at least one usable row.

    `conversation`: load_dataset's messages_field / prompt_field / response_field / target.
    """
    ds = (
        dataset
        if isinstance(dataset, Dataset)
        else load_dataset(
            dataset,
            text_field=text_field,
            label_field=label_field,
            id_field=id_field,
            **conversation,
        )
    )
    if not ds.rows:
        raise EdgeGuardError(
            f"{ds.path}: no usable rows ({ds.malformed_summary() or 'empty file'})"
        )
    return ds


@overload
def _pick(
    columns: list[str],
    given: str | None,
    candidates: Sequence[str],
    what: str,
    path: Path,
    required: Literal[True],
) -> str: ...
@overload
def _pick(
    columns: list[str],
    given: str | None,
    candidates: Sequence[str],
    what: str,
    path: Path,
    required: bool = False,
) -> str | None: ...
def _pick(
    columns: list[str],
    given: str | None,
    candidates: Sequence[str],
    what: str,
    path: Path,
    required: bool = False,
) -> str | None:
    if given is not None:
        if given not in columns:
            raise EdgeGuardError(
                f"{path}: no {what} field {given!r} (fields: {', '.join(columns) or 'none'})"
            )
        return given
    lower = {c.lower(): c for c in columns}
    found = next((lower[c] for c in candidates if c in lower), None)
    if found is None and required:
        raise EdgeGuardError(
            f"{path}: no text field found (fields: {', '.join(columns) or 'none'}); "
            f"pass --{what}-field"
        )
    return found


def _text_problem(rec: dict[str, Any], tf: str) -> str | None:
    if tf not in rec or rec[tf] is None:
        return f"missing text field {tf!r}"
    text = rec[tf]
    if isinstance(text, bytes):
        return "invalid UTF-8 in text"
    if not isinstance(text, str):
        return f"text is {type(text).__name__}, not a string"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "text contains an unpaired surrogate (invalid Unicode)"
    if not text.strip():
        return "empty text"
    return None


Records = list[tuple[int, dict[str, Any]]]


def _read_jsonl(p: Path) -> tuple[Records, list[Malformed]]:
    records: Records = []
    bad: list[Malformed] = []
    with open(p, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                s = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                bad.append(Malformed(lineno, f"invalid UTF-8 at byte {exc.start}"))
                continue
            try:
                obj = json.loads(s)
            except (json.JSONDecodeError, RecursionError) as exc:
                msg = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
                bad.append(Malformed(lineno, f"invalid JSON ({msg})"))
                continue
            if not isinstance(obj, dict):
                bad.append(Malformed(lineno, f"not a JSON object ({type(obj).__name__})"))
                continue
            records.append((lineno, obj))
    return records, bad


def _read_csv(p: Path, delimiter: str) -> tuple[Records, list[Malformed]]:
    """Rows of a CSV/TSV file; a row with more fields than the header (an unquoted delimiter
    inside a text), a quote that never closes and any other bad quoting are malformed rows with
    their line numbers. A bad record never swallows the lines after it: parsing resumes on the
    line after the one it started on."""
    text = p.read_bytes().decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    csv.field_size_limit(1 << 30)
    lines = io.StringIO(text, newline="").readlines()  # the physical lines csv counts
    records: Records = []
    bad: list[Malformed] = []
    header: list[str] | None = None
    first = 0  # index of the line the current reader starts on
    while first < len(lines):
        reader = csv.reader(iter(lines[first:]), delimiter=delimiter, strict=True)
        start, resume = 1, None
        while True:
            try:
                values = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                eof = "unexpected end of data" in str(exc)  # a quoted field ran to the end
                bad.append(
                    Malformed(
                        first + start,
                        "unclosed quote (its field would run to the end of the file)"
                        if eof
                        else f"invalid CSV ({exc})",
                    )
                )
                if eof or reader.line_num > start:  # it swallowed later lines: read them again
                    resume = first + start
                    break
                start = reader.line_num + 1
                continue
            line, start = first + start, reader.line_num + 1
            if header is None:
                header = values
                continue
            if not values:
                continue
            if len(values) > len(header):
                bad.append(
                    Malformed(
                        line,
                        f"{len(values)} fields but the header has "
                        f"{len(header)} (quote a text that contains "
                        f"{delimiter!r})",
                    )
                )
                continue
            rec = dict(zip(header, values, strict=False))
            if any(
                isinstance(v, str) and any("\udc80" <= c <= "\udcff" for c in v) for v in values
            ):
                bad.append(Malformed(line, "invalid UTF-8"))
                continue
            records.append((line, rec))
        if resume is None:
            break
        first = resume
    return records, bad


def _read_parquet(p: Path) -> tuple[Records, list[Malformed]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise EdgeGuardError("reading Parquet needs pyarrow (pip install pyarrow)") from None
    try:
        rows = pq.read_table(p).to_pylist()
    except Exception as exc:
        raise EdgeGuardError(f"{p}: cannot read Parquet ({exc})") from None
    records: Records = []
    for i, rec in enumerate(rows, 1):
        fixed = {}
        for k, v in rec.items():
            if isinstance(v, bytes):
                with contextlib.suppress(UnicodeDecodeError):  # bytes: reported if the text
                    v = v.decode("utf-8")
            fixed[k] = v
        records.append((i, fixed))
    return records, []


def column_values(ds: Dataset, column: str) -> list[Any]:
    """The raw value of `column` for each usable row of `ds` (None where a row lacks it);
    a column the file does not have is a one-line error. Re-reads the file."""
    if ds.format == "jsonl":
        records, _ = _read_jsonl(ds.path)
    elif ds.format == "parquet":
        records, _ = _read_parquet(ds.path)
    else:
        records, _ = _read_csv(ds.path, "\t" if ds.format == "tsv" else ",")
    columns = {k for _line, rec in records[:1000] for k in rec}
    if column not in columns:
        raise EdgeGuardError(
            f"{ds.path}: no label field {column!r} (fields: {', '.join(sorted(columns)) or 'none'})"
        )
    by_line = {line: rec for line, rec in records}
    return [by_line.get(r.line, {}).get(column) for r in ds.rows]


# -- known datasets (ToxicChat) --------------------------------------------------------------
