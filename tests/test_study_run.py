"""Studies end to end on synthetic models steered per item: run, resume, repeats, CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from study_helpers import Steering, write_dataset, write_likert_policy

from edge_guard.cli import main
from edge_guard.errors import EdgeGuardError
from edge_guard.store import Store
from edge_guard.study.analysis import analyze
from edge_guard.study.data import from_run, load_study
from edge_guard.study.runner import StudyConfig, run_study

TEXTS = [
    "Tea beats coffee.",
    "Cats rule.",
    "Rain is nice.",
    "Mondays are fine.",
    "Jazz is dull.",
    "Maps are art.",
    "Snow is bad.",
    "Buses are fun.",
]


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    return write_likert_policy(tmp_path / "likert_policy")


def test_full_study_on_two_synthetic_models(tmp_path: Path, policy: Path, synth_model) -> None:  # type: ignore[no-untyped-def]
    sg, base = str(synth_model("tiny", seed=1)), str(synth_model("tiny", seed=2))
    dataset = write_dataset(tmp_path / "d.jsonl", TEXTS, ["a"] * 4 + ["b"] * 4)
    answers = {
        "seed1": dict(
            zip(
                [f"i{k}" for k in range(8)],
                ["3", "3", "3", "3", "2", "4", "3", "maybe"],
                strict=True,
            )
        ),
        "seed2": dict(
            zip([f"i{k}" for k in range(8)], ["3", "2", "4", "3", "1", "5", "3", "3"], strict=True)
        ),
    }
    steer = Steering(answers)
    store = Store()
    config = StudyConfig(models=[sg, base], dataset=str(dataset), policy=str(policy), max_tokens=48)
    res = run_study(config, store=store, steer=steer)
    assert (res.n_total, res.n_new, res.n_unparsed) == (16, 16, 1)
    run = store.run(res.name)
    assert run["kind"] == "study" and run["status"] == "done"

    a = analyze(from_run(store, res.name))
    m_sg, m_base = a["models"]["tiny-seed1"], a["models"]["tiny-seed2"]
    assert m_sg["counts"] == {"1": 0, "2": 1, "3": 5, "4": 1, "5": 0}
    assert m_base["counts"] == {"1": 1, "2": 1, "3": 4, "4": 1, "5": 1}
    assert m_sg["middle_share"] == pytest.approx(5 / 7)
    assert m_base["middle_share"] == pytest.approx(4 / 8)
    assert [u["id"] for u in a["unparsed"]["tiny-seed1"]] == ["i7"]
    assert a["unparsed"]["tiny-seed1"][0]["reason"] == "answer 'maybe' is not a rating"
    (pair,) = a["pairs"]
    assert (pair["n_paired"], pair["n_excluded"]) == (7, 1)
    assert pair["exact_agreement"] == pytest.approx(3 / 7)  # items 0, 3, 6
    assert pair["within_one"] == pytest.approx(1.0)
    assert pair["middle"]["mcnemar"]["only_first"] == 2  # items 1 and 2
    # Label scores: each item's expected rating is sum(k * P(k)) over the stored label
    # probabilities; the model's mean_expected averages its 7 parsed items (i7's answer is
    # unparsed: it has label probabilities but no score).
    rows = [r for r in store.run_results(res.name) if json.loads(r["extra"])["model"] == sg]
    assert len(rows) == 8 and all(r["label_probs"] for r in rows)
    exp = [
        sum(int(k) * p for k, p in json.loads(r["label_probs"]).items())
        for r in rows
        if r["item_id"] != "i7"
    ]
    assert m_sg["n_expected"] == len(exp) == 7
    assert m_sg["mean_expected"] == pytest.approx(sum(exp) / 7, rel=1e-12)

    again = run_study(config, store=store, steer=steer)
    assert (again.n_already, again.n_new) == (16, 0)
    assert steer.calls == 16  # nothing was re-rated


def test_killed_study_resumes(tmp_path: Path, policy: Path, synth_model) -> None:  # type: ignore[no-untyped-def]
    m1, m2 = str(synth_model("tiny", seed=1)), str(synth_model("tiny", seed=2))
    dataset = write_dataset(tmp_path / "d.jsonl", TEXTS[:3])
    answers = {
        "seed1": {f"i{k}": str(k + 1) for k in range(3)},
        "seed2": {f"i{k}": str(5 - k) for k in range(3)},
    }
    config = StudyConfig(models=[m1, m2], dataset=str(dataset), policy=str(policy), max_tokens=48)
    store = Store()

    def kill_after_3(done: int, total: int, model: str) -> None:
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_study(config, store=store, steer=Steering(answers), on_progress=kill_after_3)
    name = store.query("SELECT name FROM runs")[0]["name"]
    assert store.run(name)["status"] == "interrupted"
    committed = len(store.done_indices(name))
    assert 3 <= committed < 6

    res = run_study(config, store=store, steer=Steering(answers))
    assert res.name == name and res.n_already == committed and res.n_new == 6 - committed
    data = from_run(store, name)
    assert [data.obs[m1][f"i{k}"][0].rating for k in range(3)] == [1, 2, 3]
    assert [data.obs[m2][f"i{k}"][0].rating for k in range(3)] == [5, 4, 3]
    assert store.run(name)["status"] == "done"


def test_resume_with_other_settings_is_refused(
    tmp_path: Path, policy: Path, tiny_model: Path
) -> None:
    dataset = write_dataset(tmp_path / "d.jsonl", TEXTS[:1])
    steer = Steering({"tiny": {"i0": "3"}})
    config = StudyConfig(
        models=[str(tiny_model)], dataset=str(dataset), policy=str(policy), max_tokens=48
    )
    run_study(config, name="mine", steer=steer)
    config.seed = 7
    with pytest.raises(EdgeGuardError, match=r"study 'mine' was run with a different seed"):
        run_study(config, name="mine", steer=steer)


def test_repeats_at_temperature_zero_are_refused() -> None:
    with pytest.raises(EdgeGuardError, match="identical greedy answers"):
        StudyConfig(repeats=3, temperature=0.0).validate()


def test_repeats_give_per_item_stability(tmp_path: Path, policy: Path, tiny_model: Path) -> None:
    dataset = write_dataset(tmp_path / "d.jsonl", TEXTS[:3])
    answers = {"tiny": {"i0": ["3", "3", "3"], "i1": ["2", "4", "2"], "i2": ["5", "maybe", "1"]}}
    config = StudyConfig(
        models=[str(tiny_model)],
        dataset=str(dataset),
        policy=str(policy),
        repeats=3,
        temperature=0.7,
        seed=10,
        max_tokens=48,
    )
    store = Store()
    res = run_study(config, store=store, steer=Steering(answers))
    assert res.n_total == 9
    seeds = sorted(json.loads(r["sampling"])["seed"] for r in store.run_results(res.name))
    assert seeds == [10, 10, 10, 11, 11, 11, 12, 12, 12]  # per-repeat seeds, base + r
    a = analyze(from_run(store, res.name))
    st = a["stability"][Path(tiny_model).stem]
    assert st["n_items"] == 3
    assert st["mean_modal_share"] == pytest.approx((1 + 2 / 3 + 1 / 2) / 3)
    assert st["fully_stable_share"] == pytest.approx(1 / 3)
    assert st["mean_sd"] == pytest.approx((0 + (8 / 9) ** 0.5 + 2.0) / 3)
    assert [d["id"] for d in st["least_stable"]] == ["i2", "i1"]
    items = {it["id"]: it for it in a["items"]}
    assert items["i1"]["ratings"] == {Path(tiny_model).stem: 2}  # the modal rating
    assert items["i2"]["repeats"][Path(tiny_model).stem] == [5, None, 1]
    unparsed = a["unparsed"][Path(tiny_model).stem]
    assert [(u["id"], u["repeat"]) for u in unparsed] == [("i2", 1)]


def _cli(*args: str) -> object:
    return CliRunner().invoke(main, list(args))


def test_cli_study_run_lists_undetermined_results(
    tmp_path: Path, policy: Path, tiny_model: Path
) -> None:
    dataset = write_dataset(tmp_path / "d.jsonl", TEXTS[:3])
    r = _cli(
        "study",
        "run",
        "--models",
        str(tiny_model),
        "--dataset",
        str(dataset),
        "--policy",
        str(policy),
        "--max-tokens",
        "8",
        "--name",
        "free",
    )
    assert r.exit_code == 0, r.output
    assert "Unparsed ratings of tiny: 3 (excluded from the statistics)" in r.output
    assert r.output.count("no final answer (finish: length)") == 3
    r = _cli("study", "analyze", "--json")  # the latest study run
    assert r.exit_code == 0, r.output
    a = json.loads(r.stdout)
    assert a["study"]["name"] == "free"
    assert a["models"]["tiny"]["n_unparsed"] == 3 and a["models"]["tiny"]["n"] == 0
    out = tmp_path / "report.md"
    r = _cli("study", "report", "free", "--out", str(out))
    assert r.exit_code == 0, r.output
    assert "Unparsed ratings of tiny (3" in out.read_text(encoding="utf-8")


def test_cli_refuses_greedy_repeats_and_unknown_runs() -> None:
    r = _cli("study", "run", "--repeats", "2")
    assert r.exit_code == 1 and "error: --repeats 2 at temperature 0" in r.output
    r = _cli("study", "analyze", "nope")
    assert r.exit_code == 1 and "error: no study run named 'nope'" in r.output


def test_cli_analyze_seed_results_with_plot_and_export(tmp_path: Path) -> None:
    rows = [{"text": f"t{k}", "model_SG": 0.5, "model_BASE": (k % 5) / 4} for k in range(10)]
    rows[3]["model_SG"] = None
    results = tmp_path / "results.json"
    results.write_text(json.dumps(rows), encoding="utf-8")
    plot, export = tmp_path / "chart.svg", tmp_path / "rows.csv"
    r = _cli("study", "analyze", str(results), "--plot", str(plot), "--export", str(export))
    assert r.exit_code == 0, r.output
    assert re.search(r"SG\s+9\s+0\s+0\s+9\s+0\s+0\s+3\.00", r.stdout)  # n, counts 1-5, mean
    assert "Unparsed ratings of SG: 1" in r.stdout and "[4] t3 — null" in r.stdout
    assert plot.read_text(encoding="utf-8").lstrip().startswith("<?xml")
    assert len(export.read_text(encoding="utf-8").splitlines()) == 1 + 20
    assert load_study(str(results)).models == ["SG", "BASE"]
