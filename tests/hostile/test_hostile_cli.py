"""Bad command lines: one `error:` line and exit status 2, never click's usage block or a
traceback; the console script and `python -m edge_guard` go through `edge_guard.cli.run`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edge_guard.cli import run


def invoke(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        run(argv)
    out = capsys.readouterr()
    return int(info.value.code or 0), out.out, out.err


@pytest.mark.parametrize(
    ("argv", "phrase"),
    [
        (
            ["classify", "-p", "toxic_simple", "--ctx", "lots", "hi"],
            "Invalid value for '--ctx': 'lots' is not a valid integer.",
        ),
        (
            ["classify", "-p", "toxic_simple", "--effort", "max", "hi"],
            "'max' is not one of 'low', 'medium', 'high'",
        ),
        (["classify", "-p", "toxic_simple"], "Missing argument 'TEXT'."),
        (["classify", "hi"], "Missing option '--policy'"),
        (["classify", "-p", "x", "--no-such-flag", "hi"], "No such option '--no-such-flag'"),
        (["no-such-command"], "No such command 'no-such-command'."),
        (["cache", "export", "--db"], "Option '--db' requires an argument."),
        (["classify", "-p", "x", "--temperature", "warm", "hi"], "'warm' is not a valid float"),
    ],
)
def test_usage_errors_are_one_line_with_exit_2(
    argv: list[str], phrase: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = invoke(argv, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and phrase in lines[0], err
    assert "Usage:" not in err and "Traceback" not in err and out == ""
    assert "--help'" in lines[0]  # says where to look


def test_help_and_version_still_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = invoke(["classify", "--help"], capsys)
    assert code == 0 and "--truncate" in out and "--force" in out
    code, out, _ = invoke(["--version"], capsys)
    assert code == 0 and "version" in out


def test_edge_guard_errors_keep_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = invoke(["prompt", "-p", "no_such_policy_xyz", "hi"], capsys)
    assert code == 1 and err.strip().splitlines() == [
        "error: policy 'no_such_policy_xyz' not found (a folder, a .md/.py file, or a name in "
        "policies/)"
    ]


def test_declined_confirmation_is_one_line(tmp_path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import io

    from edge_guard.store import Store

    db = tmp_path / "s.db"
    Store(db).put({"key": "k", "text": "t", "verdict": "undetermined"})
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    code, _, err = invoke(["cache", "clear", "--db", str(db)], capsys)
    assert code == 1 and err.strip().endswith("aborted")
    assert Store(db).query("SELECT count(*) AS n FROM results")[0]["n"] == 1


def test_python_m_edge_guard_uses_the_one_line_form() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "edge_guard", "classify", "--max-tokens", "x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: Invalid value for '--max-tokens'")
    assert len(proc.stderr.strip().splitlines()) == 1
