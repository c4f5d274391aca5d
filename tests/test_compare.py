"""`edge-guard compare`: configs, steered comparisons checked against the stored results,
the --styles shortcut, reports (escaped, with plots), and scripts/compare_quants.py."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from sklearn.metrics import cohen_kappa_score, f1_score

from edge_guard.cli import main
from edge_guard.compare.config import build_configs, check_configs, parse_config
from edge_guard.compare.report import build_report, summary_table, write_report
from edge_guard.compare.runner import comparison_runs, run_compare
from edge_guard.compare.stats import agreement_ci, kappa_rows
from edge_guard.errors import EdgeGuardError
from edge_guard.harmony.vocab import Vocab
from edge_guard.report.markdown import md
from edge_guard.runs.outcomes import item_score
from edge_guard.store import Store
from tests.compare_helpers import one_line_error, quant_of, rows, steer_answers
from tests.runs_helpers import write_jsonl

REPO = Path(__file__).resolve().parent.parent


# -- config grammar ----------------------------------------------------------------------------
def test_config_grammar() -> None:
    c = parse_config(" gpt-oss-safeguard-20b:mxfp4 , style=chat-template,effort=low,max-tokens=64")
    assert c.model == "gpt-oss-safeguard-20b:mxfp4"
    assert c.opts == {"style": "chat-template", "effort": "low", "max_tokens": 64}
    assert c.spec() == "gpt-oss-safeguard-20b:mxfp4,style=chat-template,effort=low,max_tokens=64"
    srv = parse_config("m.gguf,backend=server,url=http://gpu-box:8080,concurrency=4,name=hosted")
    assert srv.opts == {"backend": "server", "url": "http://gpu-box:8080", "concurrency": 4}
    assert srv.label() == "hosted"
    assert parse_config("style=chat-template").model is None  # uses --model
    configs = build_configs(["a.gguf;b.gguf,style=chat-template;", "c.gguf"])
    assert [c.model for c in configs] == ["a.gguf", "b.gguf", "c.gguf"]
    assert check_configs(configs, None) == ["a", "b,style=chat-template", "c"]
    styles = build_configs([], "harmony,chat-template")
    assert [(c.model, c.opts) for c in styles] == [
        (None, {"style": "harmony"}),
        (None, {"style": "chat-template"}),
    ]
    assert check_configs(styles, "m.gguf") == ["m,style=harmony", "m,style=chat-template"]


@pytest.mark.parametrize(
    "values, styles, message",
    [
        (["m,style=bogus"], None, "style='bogus' must be one of harmony, chat-template"),
        (["m,colour=red"], None, "unknown key 'colour' (known: "),
        (["m,style"], None, "modifier 'style' is not key=value"),
        (["m,,style=harmony"], None, "empty modifier"),
        (["m,effort=low,effort=high"], None, "effort= is given twice"),
        (["m,max_tokens=lots"], None, "max_tokens='lots' must be an integer"),
        ([",style=harmony"], None, "no model before the first ','"),
        (["m"], None, "needs at least two configs"),
        (["a;a"], None, "config 2 ('a') repeats config 1"),
        (["a,name=x;b,name=x"], None, "both labelled 'x'"),
        (["m,style=harmony"], "harmony", "sets style= and --styles"),
        ([], "harmony,html", "--styles 'harmony,html'"),
    ],
)
def test_config_errors_are_one_line(
    values: list[str], styles: str | None, message: str, tmp_path: Path
) -> None:
    with pytest.raises(EdgeGuardError) as exc:
        check_configs(build_configs(values, styles), None)
    assert message in str(exc.value) and "\n" not in str(exc.value)
    data = write_jsonl(tmp_path / "d.jsonl", rows(2))
    args = ["compare", "-d", str(data), "-p", "toxic_simple"]
    args += [a for v in values for a in ("--config", v)] + (["--styles", styles] if styles else [])
    assert message in one_line_error(CliRunner().invoke(main, args))


@pytest.mark.parametrize("policies", [["-p", "toxic_simple"], ["-p", "toxic_simple", "-p", "spam"]])
def test_compare_cli_errors_name_flags_not_keywords(
    policies: list[str], tmp_path: Path, tiny_model: Path
) -> None:
    """A setting refused while a config resolves speaks the CLI's language (the compare
    CLI passes door="cli" to run_compare and run_multi_compare), never Python keywords."""
    data = write_jsonl(tmp_path / "d.jsonl", rows(2))
    args = [
        "compare",
        "-d",
        str(data),
        *policies,
        "--db",
        str(tmp_path / "c.db"),
        "--config",
        f"{tiny_model},seed=-1",
        "--config",
        f"{tiny_model},effort=low",
    ]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, res.output  # a bad setting, as `classify --seed -1`
    assert res.stderr.strip().splitlines() == [
        "error: --seed -1: must be from 0 to 9223372036854775807"
    ]


def test_kappa_and_its_interval_match_sklearn() -> None:
    import numpy as np

    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 3, size=(50, 40)), rng.integers(0, 3, size=(50, 40))
    b[:, :25] = a[:, :25]
    ours = kappa_rows(a, b)
    theirs = [cohen_kappa_score(x, y) for x, y in zip(a, b, strict=True)]
    assert np.allclose(ours, theirs)
    verdicts = ["violation", "no_violation", "undetermined"]
    va = [verdicts[i % 3] for i in range(30)]
    vb = [v if i % 4 else "violation" for i, v in enumerate(va)]
    ci = agreement_ci(va, vb, n_resamples=300)
    point = sum(x == y for x, y in zip(va, vb, strict=True)) / 30
    assert ci["agreement"][0] <= point <= ci["agreement"][1] < 1
    assert ci["kappa"][0] <= cohen_kappa_score(va, vb) <= ci["kappa"][1]


# -- steered comparison ------------------------------------------------------------------------
def test_steered_comparison_matches_the_stored_results(tmp_path: Path, tiny_model: Path) -> None:
    q8 = quant_of(tiny_model, "q8_0")
    data = write_jsonl(tmp_path / "d.jsonl", rows(12))
    vocab = Vocab.from_gguf(tiny_model)
    # Reference answers the gold label (items 0, 3, 6, 9 are violations); the Q8_0 candidate
    # flips items 1 and 4 and gives an unparsable answer on 6; chat-template flips 0 and 3.
    answers = [{}, {1: "1", 4: "1", 6: "maybe"}, {0: "0", 3: "0"}]
    configs = build_configs([f"{tiny_model};{q8}", f"{tiny_model},style=chat-template,name=chat"])
    steer = steer_answers(vocab, answers)
    res = run_compare(
        data, "toxic_simple", configs, base_opts={"max_tokens": 64}, steer=steer, name="cmp"
    )
    assert res.labels == ["tiny", "tiny-q8_0", "chat"]
    assert comparison_runs(res.store, "cmp") == res.run_names
    assert [res.store.run(n)["kind"] for n in res.run_names] == ["compare"] * 3
    assert all(r.summary.n_new == 12 for r in res.runs)
    assert all(r.resources["peak_rss_bytes"] > r.resources["baseline_rss_bytes"] for r in res.runs)
    c = build_report(res.store, res.run_names, n_resamples=200)
    stored = [res.store.run_results(n) for n in res.run_names]
    verdicts = [[r["verdict"] for r in s] for s in stored]
    gold = [r["label"] for r in rows(12)]
    assert c["has_gold"] and c["n_items"] == 12 and c["reference"] == "tiny"
    for k in (1, 2):
        vs = c["configs"][k]["vs_reference"]
        same = sum(a == b for a, b in zip(verdicts[0], verdicts[k], strict=True))
        assert vs["agreement"]["value"] == pytest.approx(same / 12)
        assert vs["kappa"]["value"] == pytest.approx(cohen_kappa_score(verdicts[0], verdicts[k]))
        lo, hi = vs["agreement"]["ci"]
        assert lo <= same / 12 <= hi
        flips = [i for i in range(12) if verdicts[0][i] != verdicts[k][i]]
        assert [f["idx"] for f in vs["flips"]] == flips == sorted({1, 4, 6} if k == 1 else {0, 3})
        deltas = [
            abs(item_score(b) - item_score(a))
            for a, b in zip(stored[0], stored[k], strict=True)
            if item_score(a) is not None and item_score(b) is not None
        ]
        assert vs["delta_p"]["n"] == len(deltas)
        assert math.isclose(vs["delta_p"]["mean_abs"], sum(deltas) / len(deltas), abs_tol=1e-12)
    flip = c["configs"][1]["vs_reference"]["flips"][0]
    assert (flip["ref"]["verdict"], flip["cand"]["verdict"]) == ("no_violation", "violation")
    assert flip["ref"]["reasoning"] == "config 0 on <item 1>"
    assert flip["cand"]["reasoning"] == "config 1 on <item 1>"
    for k in range(3):
        pairs = [
            (g, v == "violation")
            for g, v in zip(gold, verdicts[k], strict=True)
            if v != "undetermined"
        ]
        f1 = f1_score([g for g, _ in pairs], [int(p) for _, p in pairs])
        assert c["configs"][k]["eval"]["f1"]["value"] == pytest.approx(f1)
    assert c["configs"][1]["eval"]["undetermined_rate"] == pytest.approx(1 / 12)
    assert c["pairwise"]["agreement"][1][2] == pytest.approx(
        sum(a == b for a, b in zip(verdicts[1], verdicts[2], strict=True)) / 12
    )
    head, table = summary_table(c)
    assert table[1][head.index("flips")] == "3/12" and table[2][head.index("flips")] == "2/12"
    assert table[0][head.index("file")] != "n/a"
    # Reports: data escaped, both reasonings shown, plots embedded.
    html = write_report(c, tmp_path / "r.html").read_text()
    assert "<script>alert" not in html and "&lt;script&gt;alert(&#x27;x&#x27;)" in html
    assert "config 1 on &lt;item 4&gt;" in html and "config 0 on &lt;item 4&gt;" in html
    assert html.count("<svg") == 2 and "Content-Security-Policy" in html
    md = write_report(c, tmp_path / "r.md").read_text()
    assert "<script>" not in md and "<item" not in md and "data:image/svg+xml;base64" in md
    # A rerun is served from the cache and keeps the measured resources.
    again = run_compare(
        data, "toxic_simple", configs, base_opts={"max_tokens": 64}, steer=steer, name="cmp"
    )
    assert [r.summary.n_new for r in again.runs] == [0, 0, 0]
    assert [r.resources for r in again.runs] == [r.resources for r in res.runs]


def test_styles_shortcut_from_the_cli(tmp_path: Path, tiny_model: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", rows(3))
    out = tmp_path / "styles.md"
    args = [
        "compare",
        "-d",
        str(data),
        "-p",
        "toxic_simple",
        "-m",
        str(tiny_model),
        "--styles",
        "harmony,chat-template",
        "--max-tokens",
        "4",
        "--json",
        "--out",
        str(out),
        "--resamples",
        "50",
    ]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    c = json.loads(res.stdout)
    assert [cfg["label"] for cfg in c["configs"]] == [
        "tiny,style=harmony",
        "tiny,style=chat-template",
    ]
    assert [cfg["style"] for cfg in c["configs"]] == ["harmony", "chat-template"]
    # Free generation with 4 tokens never finishes: every verdict is undetermined, agreeing.
    vs = c["configs"][1]["vs_reference"]
    assert vs["agreement"]["value"] == 1.0 and vs["kappa"]["value"] is None and vs["n"] == 3
    store = Store()
    prompts = [
        [r["prompt_token_ids"] for r in store.run_results(cfg["run"])] for cfg in c["configs"]
    ]
    assert prompts[0] != prompts[1]  # the two styles really rendered different prompts
    text = out.read_text()
    assert md("tiny,style=chat-template") in text and "## Summary" in text


def test_compare_quants_script_end_to_end(tmp_path: Path, synth_model, capsys) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "tiny-f16.gguf"
    src.write_bytes(synth_model("tiny", seed=3).read_bytes())
    data = write_jsonl(tmp_path / "d.jsonl", rows(10))
    report = tmp_path / "report.html"
    cmd = [
        sys.executable,
        str(REPO / "scripts" / "compare_quants.py"),
        str(src),
        "--types",
        "q8_0,q4_0",
        "--dataset",
        str(data),
        "--policy",
        "toxic_simple",
        "--out",
        str(report),
        "--max-tokens",
        "8",
        "--resamples",
        "100",
        "--name",
        "quants",
    ]
    env = {**os.environ, "EDGE_GUARD_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.glob("*.gguf")) == [
        "tiny-f16-q4_0.gguf",
        "tiny-f16-q8_0.gguf",
        "tiny-f16.gguf",
    ]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("comparison quants: 10 items")
    assert [ln.split()[1] for ln in lines[2:5]] == ["f16", "q8_0", "q4_0"]
    html = report.read_text()
    assert "f16 (source) (reference)" in html and "q4_0" in html and html.count("<svg") >= 1
    names = [r["name"] for r in Store().query("SELECT name FROM runs WHERE kind = 'compare'")]
    assert sorted(names) == ["quants/0:f16-source", "quants/1:q8_0", "quants/2:q4_0"]
    # Rerunning (in-process here) reuses the quants and the stored results.
    spec = importlib.util.spec_from_file_location("compare_quants", cmd[1])
    script = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(script)  # type: ignore[union-attr]
    assert script.main([*cmd[2:], "--force"]) == 0  # the report exists: overwrite it
    err = capsys.readouterr().err
    assert "using existing" in err and "(resuming: 10 done, 0 to do)" in err


def _fake_smi(folder: Path, apps: str) -> None:
    """An nvidia-smi printing `apps` for processes; device memory 1000 MiB, then 3000 MiB."""
    smi = folder / "nvidia-smi"
    smi.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        f"  --query-compute-apps*) printf '{apps}' ;;\n"
        f"  --query-gpu*) if [ -e {folder}/seen ]; then echo 3000; else touch {folder}/seen; "
        "echo 1000; fi ;;\n"
        "esac\n"
    )
    smi.chmod(0o755)


def test_gpu_memory_comes_from_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_guard.compare.resources import ResourceMeter

    mine, container = tmp_path / "mine", tmp_path / "container"
    mine.mkdir()
    container.mkdir()
    _fake_smi(mine, f"{os.getpid()}, 1536\\n4242, 99\\n")
    _fake_smi(container, "")  # processes not visible (another PID namespace)
    monkeypatch.setenv("PATH", f"{mine}{os.pathsep}{os.environ['PATH']}")
    meter = ResourceMeter()
    meter.start()
    res = meter.stop()
    assert res["gpu_bytes"] == 1536 << 20 and "this process" in res["gpu_method"]
    assert res["peak_rss_bytes"] >= res["baseline_rss_bytes"] > 0
    monkeypatch.setenv("PATH", f"{container}{os.pathsep}{os.environ['PATH']}")
    meter = ResourceMeter()
    meter.start()
    res = meter.stop()
    assert res["gpu_bytes"] == 2000 << 20 and "over its level before" in res["gpu_method"]
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    meter = ResourceMeter()
    meter.start()
    assert meter.stop()["gpu_bytes"] is None


def test_config_label_never_shows_url_credentials() -> None:
    c = parse_config("m.gguf,backend=server,url=http://alice:s3cret@gpu-box:8080")
    assert c.label() == "m,backend=server @ http://gpu-box:8080"
