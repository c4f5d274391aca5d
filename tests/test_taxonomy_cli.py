"""`--mode taxonomy` at the CLI's set doors: `classify --set S --mode taxonomy` and `run` give
every binary policy of the set from one prompt per text (with `--reasoning none`: the cheap
path), under the same stored rows: what classify computed, run reads back; a taxonomy run
is named and resumed apart from a separate-mode run; what taxonomy mode cannot do is one
line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from edge_guard.cli import main
from tests.runs_helpers import write_jsonl
from tests.test_policy_sets import NAMES, write_policy


@pytest.fixture
def abc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "pols"
    for n in NAMES:
        write_policy(folder, n)
    write_policy(folder, "delta", kind="json")
    (folder / "sets").mkdir()
    (folder / "sets" / "abc.toml").write_text(
        'policies = ["alpha", "beta", "gamma"]\n[thresholds]\nbeta = 0.3\n'
    )
    (folder / "sets" / "abd.toml").write_text('policies = ["alpha", "delta"]\n')
    monkeypatch.setenv("EDGE_GUARD_POLICIES", str(folder))
    return folder


def cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def test_classify_and_run_share_the_taxonomy_rows(
    tiny_o200k_model: Path, tmp_path: Path, abc: Path
) -> None:
    common = ["--model", str(tiny_o200k_model), "--db", str(tmp_path / "s.db")]
    one = [*common, "--set", "abc", "--mode", "taxonomy", "--reasoning", "none", "--json"]
    first = cli("classify", *one, "hello there")
    assert first.exit_code == 0, first.output
    out = json.loads(first.output)
    assert out["mode"] == "taxonomy" and list(out["results"]) == NAMES
    for res in out["results"].values():
        assert res["metadata"]["mode"] == "taxonomy" and res["metadata"]["path"] == "one-pass"
        assert not res["cached"]
    again = json.loads(cli("classify", *one, "hello there").output)
    for name, res in again["results"].items():
        assert res["cached"] and res["key"] == out["results"][name]["key"]
        assert res["metadata"]["p_violation"] == out["results"][name]["metadata"]["p_violation"]
    data = write_jsonl(tmp_path / "d.jsonl", [{"text": "hello there"}, {"text": "other"}])
    run = [*common, "--set", "abc", "--reasoning", "none", "--json"]
    got = cli("run", str(data), *run, "--mode", "taxonomy")
    assert got.exit_code == 0, got.output
    summary = json.loads(got.output[got.output.index('{"summary"') :])["summary"]
    # the text classify saw is read back (its 3 rows), the other is computed
    assert (summary["n_new"], summary["n_cached"]) == (3, 3)
    assert summary["name"].endswith("__taxonomy")
    sep = cli("run", str(data), *run)  # separate mode: a run of its own, nothing reused
    assert sep.exit_code == 0, sep.output
    sep_summary = json.loads(sep.output[sep.output.index('{"summary"') :])["summary"]
    assert sep_summary["name"] != summary["name"] and sep_summary["n_new"] == 6


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-p", "alpha"], "--mode taxonomy needs several policies or a set"),
        (["--set", "abd"], "taxonomy mode needs binary (0/1) policies; delta is not"),
        (["--set", "abc", "--cascade", "0.2:0.8"], "taxonomy mode has no cascade"),
    ],
)
def test_what_taxonomy_mode_cannot_do_is_one_line(
    tiny_o200k_model: Path, tmp_path: Path, abc: Path, args: list[str], message: str
) -> None:
    res = cli(
        "classify",
        *args,
        "--mode",
        "taxonomy",
        "--model",
        str(tiny_o200k_model),
        "--db",
        str(tmp_path / "s.db"),
        "x",
    )
    assert res.exit_code != 0
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], res.output
