"""Hostile data on the way out: terminal escapes, Markdown and CSV formulas never pass through
a printer or a writer (issue 16 item 5), and output files and odd input files are user errors
(item 10)."""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_guard.cli import main
from edge_guard.store import Store

OSC = "\x1b]0;pwned\x07"  # retitles the terminal
CLEAR = "\x1b[2J"  # clears it
EVIL_NAME = f"run [/] x{OSC}"
EVIL_NAME_SHOWN = "run [/] x\\x1b]0;pwned\\x07"
TEXTS = [
    f"hello {CLEAR} world",
    '=HYPERLINK("http://x","click")',
    "@SUM(A1)",
    "-2+3",
    f"two\nlines{OSC}",
]


def _cli(*args: str) -> object:
    return CliRunner().invoke(main, list(args))


def _raw_controls(s: str) -> list[str]:
    return sorted({c for c in s if c in "\x1b\x07\x9b"})


@pytest.fixture
def hostile_run(tmp_path: Path, tiny_model: Path) -> tuple[str, str]:
    data = tmp_path / "h.jsonl"
    data.write_text(
        "".join(json.dumps({"text": t, "label": k % 2}) + "\n" for k, t in enumerate(TEXTS)),
        encoding="utf-8",
    )
    db = str(tmp_path / "s.db")
    r = _cli(
        "run",
        str(data),
        "-p",
        "toxic_simple",
        "-m",
        str(tiny_model),
        "--max-tokens",
        "2",
        "--db",
        db,
        "--name",
        EVIL_NAME,
    )
    assert r.exit_code == 0, r.output
    assert _raw_controls(r.output) == []
    assert f"run {EVIL_NAME_SHOWN}: 5 items (new)" in r.stderr
    return db, EVIL_NAME


def test_eval_and_json_print_run_names_escaped(hostile_run: tuple[str, str]) -> None:
    db, name = hostile_run
    r = _cli("eval", name, "--db", db, "--resamples", "20")
    assert r.exit_code == 0, r.output
    assert _raw_controls(r.output) == []
    assert r.stdout.startswith(f"run {EVIL_NAME_SHOWN} — policy toxic_simple, model /")
    r = _cli("eval", name, "--db", db, "--resamples", "20", "--json")
    assert _raw_controls(r.stdout) == [] and "\\u001b]0;pwned\\u0007" in r.stdout
    assert json.loads(r.stdout)["run"] == name  # same JSON value, escaped


def test_markdown_report_and_csv_export_are_neutralised(
    hostile_run: tuple[str, str], tmp_path: Path
) -> None:
    db, name = hostile_run
    md = tmp_path / "r.md"
    r = _cli(
        "report", name, "--db", db, "--out", str(md), "--reference", "none", "--resamples", "20"
    )
    assert r.exit_code == 0, r.output
    text = md.read_text(encoding="utf-8")
    assert _raw_controls(text) == []
    assert "run \\[/\\] x\\\\x1b\\]0;pwned\\\\x07" in text  # the run name, Markdown-escaped
    out = tmp_path / "x.csv"
    r = _cli("cache", "export", str(out), "--db", db)
    assert r.exit_code == 0, r.output
    with open(out, encoding="utf-8", newline="") as fh:
        cells = sorted(row["text"] for row in csv.DictReader(fh))
    assert cells == sorted(
        [
            '\'=HYPERLINK("http://x","click")',
            "'@SUM(A1)",
            "'-2+3",
            f"hello {CLEAR} world",
            f"two\nlines{OSC}",
        ]
    )


def test_study_analyze_prints_texts_escaped_on_one_line(tmp_path: Path) -> None:
    rows = [
        {"text": f"t{k}", "model_SG": (k % 5) / 4, "model_BASE": ((k + 2) % 5) / 4}
        for k in range(6)
    ]
    rows[2]["text"] = f"evil{CLEAR}\nFAKE LINE{OSC}"
    rows[3]["model_SG"] = None
    rows[3]["text"] = f"unparsed{OSC}"
    results = tmp_path / "results.json"
    results.write_text(json.dumps(rows), encoding="utf-8")
    r = _cli("study", "analyze", str(results))
    assert r.exit_code == 0, r.output
    assert _raw_controls(r.stdout) == []
    assert "[4] unparsed\\x1b]0;pwned\\x07 — null" in r.stdout
    assert "evil\\x1b[2J FAKE LINE\\x1b]0;pwned\\x07" in r.stdout
    assert not any(line.startswith("FAKE LINE") for line in r.stdout.splitlines())
    r = _cli("study", "analyze", str(results), "--json")
    assert _raw_controls(r.stdout) == [] and json.loads(r.stdout)["study"]["models"] == [
        "SG",
        "BASE",
    ]


def _hostile_policy(folder: Path) -> Path:
    folder.mkdir()
    (folder / "policy.md").write_text("Answer 1 if the text is toxic, else 0.\n")
    (folder / "policy.toml").write_text(
        'name = "pol [/] \\u001b[2J"\ndescription = "d \\u001b]0;t\\u0007"\n'
    )
    (folder / "cases.jsonl").write_text(
        json.dumps({"id": f"c1{OSC}", "text": f"kill {CLEAR}", "expected": 1}) + "\n"
    )
    return folder


def test_policies_check_list_and_test_print_names_escaped(tmp_path: Path, tiny_model: Path) -> None:
    pol = _hostile_policy(tmp_path / "evil")
    r = _cli("policies", "check", str(pol))
    assert r.exit_code == 0, r.output
    assert _raw_controls(r.output) == []
    assert r.stdout.startswith("ok: pol [/] \\x1b[2J — output binary")
    r = _cli(
        "policies",
        "test",
        str(pol),
        "-m",
        str(tiny_model),
        "--max-tokens",
        "2",
        "--db",
        str(tmp_path / "s.db"),
    )
    assert r.exit_code == 1, r.output  # undetermined: the test fails, but prints safely
    assert _raw_controls(r.output) == []
    assert r.stdout.startswith("pol [/] \\x1b[2J v1 (")
    assert "c1\\x1b]0;pwned\\x07" in r.stdout and "kill \\x1b[2J" in r.stdout


def test_prompt_shows_control_characters_escaped() -> None:
    r = _cli("prompt", "-p", "toxic_simple", f"hi {OSC}{CLEAR}")
    assert r.exit_code == 0, r.output
    assert _raw_controls(r.stdout) == [] and "hi \\x1b]0;pwned\\x07\\x1b[2J" in r.stdout
    r = _cli("prompt", "-p", "toxic_simple", "--json", f"hi {OSC}")
    assert _raw_controls(r.stdout) == [] and f"hi {OSC}" in json.loads(r.stdout)["text"]


def test_compare_refuses_an_existing_report_before_running(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "a"}\n')
    out = tmp_path / "r.md"
    out.write_text("keep me")
    r = _cli(
        "compare",
        "-d",
        str(data),
        "-p",
        "toxic_simple",
        "--config",
        "synth:tiny",
        "--config",
        "synth:tiny,effort=low",
        "-o",
        str(out),
    )
    assert (r.exit_code, r.stderr) == (1, f"error: {out} exists: pass --force to overwrite it\n")
    assert out.read_text() == "keep me"


def test_error_lines_are_escaped(tmp_path: Path) -> None:
    out = tmp_path / f"x.c{CLEAR}sv"
    r = _cli("cache", "export", str(out), "--db", str(tmp_path / "s.db"))
    assert r.exit_code == 1 and _raw_controls(r.output) == []
    assert r.stderr == ("error: unknown export format .c\\x1b[2jsv: use .jsonl, .csv or .parquet\n")


# -- item 10: files ------------------------------------------------------------------------------
def test_exports_and_reports_refuse_to_overwrite_without_force(tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    Store(db).put({"key": "k", "text": "t", "verdict": "violation", "policy_name": "p"})
    out = tmp_path / "x.csv"
    out.write_text("keep me")
    r = _cli("cache", "export", str(out), "--db", db)
    assert (r.exit_code, r.stderr) == (1, f"error: {out} exists: pass --force to overwrite it\n")
    assert out.read_text() == "keep me"
    r = _cli("cache", "export", str(out), "--db", db, "--force")
    assert r.exit_code == 0 and out.read_text().startswith("key,created_at,")
    report = tmp_path / "r.md"
    report.write_text("keep me")
    r = _cli("report", "anyrun", "--db", db, "--out", str(report))
    assert (r.exit_code, r.stderr) == (1, f"error: {report} exists: pass --force to overwrite it\n")
    r = _cli("study", "report", "--db", db, "--out", str(report))
    assert (r.exit_code, r.stderr) == (1, f"error: {report} exists: pass --force to overwrite it\n")
    assert report.read_text() == "keep me"


def test_exporting_into_a_missing_folder_is_a_user_error(tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    out = tmp_path / "nope" / "x.csv"
    r = _cli("cache", "export", str(out), "--db", db)
    assert (r.exit_code, r.stderr) == (
        1,
        f"error: cannot write {out}: folder {out.parent} does not exist\n",
    )
    r = _cli("study", "analyze", "--db", db, "--export", str(out))
    assert r.exit_code == 1 and r.stderr.startswith(f"error: cannot write {out}: folder")


def test_a_read_only_store_is_a_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store the user cannot write (read-only file or folder; simulated with a read-only
    connection because tests may run as root, who can write anything)."""
    import edge_guard.store as store_mod

    db = str(tmp_path / "s.db")
    Store(db).put({"key": "k", "text": "t", "verdict": "violation", "policy_name": "p"})

    def read_only(path: str) -> sqlite3.Connection:
        return sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )

    monkeypatch.setattr(store_mod, "_connect", read_only)
    r = _cli("cache", "clear", "--yes", "--db", db)
    assert r.exit_code == 1
    assert r.stderr == (
        "error: cannot write the result store: attempt to write a readonly "
        "database (check the file's permissions and free space, or pass --db "
        "to use another file)\n"
    )


def _cli_process(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`edge-guard ARGS` in a child with a 4 GiB address-space limit and a timeout, so code that
    reads /dev/zero or blocks on a FIFO fails the test instead of taking the machine down."""
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    return subprocess.run(
        [sys.executable, "-m", "edge_guard", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=limit,
    )


def test_devices_and_fifos_are_not_policies(tmp_path: Path) -> None:
    fifo = tmp_path / "p.md"
    os.mkfifo(fifo)
    for ref in ("/dev/zero", str(fifo)):
        proc = _cli_process("policies", "check", ref, timeout=60)
        assert (proc.returncode, proc.stderr) == (
            1,
            f"error: {ref}: policy is not a regular file\n",
        )
    cases = tmp_path / "c.jsonl"
    os.mkfifo(cases)
    proc = _cli_process("policies", "test", "toxic_simple", "--cases", str(cases), timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith(f"error: {cases}: ")


def test_devices_and_fifos_are_not_models(tmp_path: Path) -> None:
    from edge_guard.errors import ModelNotFound
    from edge_guard.registry import lookup

    fifo = tmp_path / "m.gguf"
    os.mkfifo(fifo)
    for ref in ("/dev/zero", str(fifo)):
        with pytest.raises(ModelNotFound, match=f"^{ref} is not a regular file, so not a .gguf"):
            lookup(ref)
        proc = _cli_process("classify", "-m", ref, "-p", "toxic_simple", "hi", timeout=60)
        assert (proc.returncode, proc.stderr) == (
            1,
            f"error: {ref} is not a regular file, so not a .gguf model\n",
        )


def test_read_header_refuses_a_device(tmp_path: Path) -> None:
    from edge_guard.errors import BadModelFile
    from edge_guard.gguf.check import read_header

    with pytest.raises(BadModelFile, match=r"^/dev/zero: not a regular file, so not a GGUF model$"):
        read_header("/dev/zero")


def test_oversized_policy_and_cases_files_are_refused(tmp_path: Path) -> None:
    from edge_guard.errors import PolicyError
    from edge_guard.policy.cases import load_cases
    from edge_guard.policy.core import OutputSpec, load_policy

    big = tmp_path / "big.md"
    with open(big, "wb") as fh:
        fh.truncate((1 << 20) + 1)  # sparse: no disk used
    with pytest.raises(
        PolicyError, match=r"big\.md: policy is 1048577 bytes; the limit is 1048576"
    ):
        load_policy(big)
    cases = tmp_path / "c.jsonl"
    with open(cases, "wb") as fh:
        fh.truncate((64 << 20) + 1)
    with pytest.raises(PolicyError, match=r"c\.jsonl: cases file is 67108865 bytes; the limit"):
        load_cases(cases, OutputSpec())


def test_parse_py_calling_sys_exit_at_import_is_a_policy_error(tmp_path: Path) -> None:
    pol = tmp_path / "quitter"
    pol.mkdir()
    (pol / "policy.md").write_text("Answer 1 or 0.\n")
    (pol / "parse.py").write_text("import sys\nsys.exit(3)\n")
    r = _cli("policies", "check", str(pol))
    assert (r.exit_code, r.stderr) == (
        1,
        f"error: {pol / 'parse.py'}: importing it called sys.exit(3)\n",
    )


def test_a_lone_surrogate_in_cases_names_the_line(tmp_path: Path) -> None:
    pol = tmp_path / "pol"
    pol.mkdir()
    (pol / "policy.md").write_text("Answer 1 or 0.\n")
    (pol / "cases.jsonl").write_text(
        '{"text": "fine", "expected": 0}\n{"text": "bad \\udc80", "expected": 1}\n'
    )
    r = _cli("policies", "test", str(pol), "-m", "synth:tiny")
    assert (r.exit_code, r.stderr) == (
        2,
        f"error: {pol / 'cases.jsonl'}:2: invalid Unicode (a lone surrogate escape such as "
        "\\udc80)\n",
    )
