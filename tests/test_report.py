"""Reports: HTML with the tables, inline SVG plots and escaped hostile texts; Markdown; the
ToxicChat reference figures; `edge-guard report`; the toxic_chat.py script end to end."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_guard.cli import main
from edge_guard.errors import EdgeGuardError
from edge_guard.harmony.vocab import Vocab
from edge_guard.report import build_report, write_report
from edge_guard.runs.batch import run_dataset
from edge_guard.runs.metrics import fmt_ci
from edge_guard.runs.outcomes import evaluate_run
from edge_guard.store import Store
from tests.runs_helpers import labelled_rows, make_classifier, steer_by_want, wants_of, write_jsonl

REPO = Path(__file__).resolve().parent.parent
HOSTILE = "<script>alert(0)</script> & <b>bold</b> | pipe"


@pytest.fixture(scope="module")
def two_runs(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Path
) -> Iterator[tuple[Store, list[str]]]:
    """Two steered runs (two policies) on a dataset whose misclassified rows hold hostile HTML,
    made once for the module's tests (they only read them), in a data dir of their own."""
    from edge_guard.backends.local import release_engine
    from edge_guard.classification.classifier import Classifier
    from tests.runs_helpers import SHORT

    tmp = tmp_path_factory.mktemp("two_runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGE_GUARD_HOME", str(tmp / "home"))
        rows = labelled_rows(21, hostile_every=10)
        assert rows[0]["text"] == HOSTILE and rows[0]["want"] != str(rows[0]["label"])
        data = write_jsonl(tmp / "toxic-chat-sample.jsonl", rows)
        steer = steer_by_want(Vocab.from_gguf(tiny_model), wants_of(rows))
        clf = make_classifier(tiny_model)  # the store of that data dir
        names = [run_dataset(data, clf, name="run <one>", steer=steer).name]
        clf2 = Classifier("toxic_chat", tiny_model, sampling=SHORT, store=clf.store)
        names.append(run_dataset(data, clf2, steer=steer).name)
        release_engine()
    yield clf.store, names
    clf.store.close()


def test_html_report_has_tables_plots_and_escaped_texts(tmp_path: Path, two_runs) -> None:  # type: ignore[no-untyped-def]
    store, names = two_runs
    out = write_report(names, tmp_path / "r.html", store=store, n_resamples=200)
    html = out.read_text()
    assert not (tmp_path / "r.html.partial").exists()
    for section in ("Policy × model", "All runs", "Plots", "Run details", "Misclassified examples"):
        assert f"<h2>{section}</h2>" in html
    assert html.count("<svg") == 4  # F1 bars, PR curves, confusion matrices, score histograms
    assert "<th>F1 (95% CI)</th>" in html
    assert "undetermined excluded (headline)" in html
    # hostile text only ever appears escaped; the page runs no script
    assert "&lt;script&gt;alert(0)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in html
    assert "<script" not in html.lower() and "<b>bold" not in html
    assert "run &lt;one&gt;" in html and "run <one>" not in html
    assert "Content-Security-Policy" in html
    # the dataset is named like ToxicChat: reference figures are shown beside ours
    assert "Reference figures (ToxicChat)" in html and "79.9" in html and "0.676" in html
    # the policy × model table shows each run's headline F1 and CI exactly as eval has them
    cells = re.findall(r"F1 (\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\])<br>", html)
    evals = [evaluate_run(store, n, n_resamples=200) for n in names]  # the report's settings
    assert sorted(cells) == sorted(fmt_ci(e["f1"]) for e in evals)
    assert len(cells) == 2


def test_markdown_report_escapes_and_embeds_plots(tmp_path: Path, two_runs) -> None:  # type: ignore[no-untyped-def]
    store, names = two_runs
    md = write_report(names, tmp_path / "r.md", store=store, n_resamples=100).read_text()
    assert md.startswith("# edge\\_guard evaluation report\n")
    assert "## Policy × model" in md and "data:image/svg+xml;base64," in md
    assert "<script" not in md and "&lt;script&gt;" in md
    table_lines = [line for line in md.splitlines() if line.startswith("| ")]
    assert all("<" not in line for line in table_lines)


def test_report_reference_can_be_turned_off_and_bad_inputs(tmp_path: Path, two_runs) -> None:  # type: ignore[no-untyped-def]
    store, names = two_runs
    rep = build_report(names[:1], store, n_resamples=50, benchmark=None, plots=False)
    assert rep.benchmark is None and rep.plots == {}
    with pytest.raises(EdgeGuardError, match=r"use \.html or \.md"):
        write_report(names, tmp_path / "r.pdf", store=store)
    with pytest.raises(EdgeGuardError, match="no run named 'missing'"):
        write_report(["missing"], tmp_path / "r.html", store=store)


def test_report_command(tmp_path: Path, two_runs, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    store, names = two_runs
    monkeypatch.setenv("EDGE_GUARD_HOME", str(Path(store.path).parent))  # its default store
    out = tmp_path / "cli.html"
    res = CliRunner().invoke(
        main, ["report", *names, "--out", str(out), "--resamples", "50", "--reference", "none"]
    )
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == f"wrote {out}"
    html = out.read_text()
    assert "<svg" in html and "Reference figures" not in html


def _script(args: list[str], capfd: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """`python scripts/toxic_chat.py ARGS` run in this process (as `__main__`, argv and all):
    its exit status and what it wrote to stderr."""
    import runpy

    from edge_guard.backends.local import release_engine

    capfd.readouterr()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "argv", args)
        with pytest.raises(SystemExit) as exit_:
            runpy.run_path(args[0], run_name="__main__")
    release_engine()
    return int(exit_.value.code or 0), capfd.readouterr().err


def test_toxic_chat_script_runs_offline_end_to_end(
    tmp_path: Path,
    tiny_o200k_model: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    data = write_jsonl(tmp_path / "local.jsonl", labelled_rows(8, hostile_every=4))
    out = tmp_path / "tc.html"
    monkeypatch.setenv("EDGE_GUARD_HOME", str(tmp_path / "home"))
    args = [
        str(REPO / "scripts" / "toxic_chat.py"),
        "--models",
        str(tiny_o200k_model),
        "--dataset",
        str(data),
        "-n",
        "4",
        "--max-tokens",
        "6",
        "--out",
        str(out),
    ]
    returncode, stderr = _script(args, capfd)
    assert returncode == 0, stderr
    html = out.read_text()
    assert "toxic_simple" in html and "toxic_chat" in html  # both shipped policies
    assert "Reference figures (ToxicChat)" in html and "<svg" in html
    runs = Store(tmp_path / "home" / "edge_guard.db").query(
        "SELECT name, n_items, status FROM runs"
    )
    assert sorted((r["n_items"], r["status"]) for r in runs) == [(4, "done"), (4, "done")]
    # the first run printed each run's progress, ending at 4/4
    model = str(tiny_o200k_model)
    assert [ln for ln in stderr.splitlines() if not ln.startswith("  ")] == [
        f"{model} × toxic_simple",
        f"{model} × toxic_chat",
    ]
    assert sum(ln.startswith("  4/4 · ") for ln in stderr.splitlines()) == 2
    # rerunning resumes: nothing new to classify, so no progress lines at all
    returncode, stderr = _script(args, capfd)
    assert returncode == 0, stderr
    assert stderr.splitlines() == [f"{model} × toxic_simple", f"{model} × toxic_chat"]
