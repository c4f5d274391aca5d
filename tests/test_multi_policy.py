"""Multi-policy runs on a synthetic model: a set of 3 policies over 30 texts stores every
(text, policy) pair once, a SIGKILLed run resumes with exactly the missing pairs, combined
mode splits one strict answer into per-policy rows, eval reports per-policy/macro/any."""

from __future__ import annotations

import json
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from edge_guard.engine.sampling import ForcedTokens, harmony_script
from edge_guard.harmony.vocab import Vocab
from edge_guard.policy.sets import load_set
from edge_guard.runs.multi import execute_multi_run
from edge_guard.runs.multi_eval import evaluate_multi_run
from edge_guard.runs.multi_plan import parse_label_fields, plan_multi_run
from edge_guard.store import Store
from tests.runs_helpers import HeldRun, make_classifier, run_item_rows, write_jsonl
from tests.test_policy_sets import NAMES, write_policy

REPO = Path(__file__).resolve().parent.parent
N_TEXTS = 30


@pytest.fixture
def policies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "pols"
    for n in NAMES:
        write_policy(folder, n)
    (folder / "sets").mkdir()
    (folder / "sets" / "abc.toml").write_text('policies = ["alpha", "beta", "gamma"]\n')
    monkeypatch.setenv("EDGE_GUARD_POLICIES", str(folder))
    return folder


def rows() -> list[dict[str, object]]:
    """30 texts; gold: alpha = odd texts, beta = multiples of 3, gamma unlabelled."""
    return [
        {"id": f"t{i}", "text": f"message {i}", "a": i % 2, "b": int(i % 3 == 0)}
        for i in range(N_TEXTS)
    ]


def answer(t: int) -> str:
    """What the steered model answers for text t (separate mode): 1 for odd texts."""
    return str(t % 2)


def steer_separate(vocab: Vocab):  # type: ignore[no-untyped-def]
    def steer(t: int) -> ForcedTokens:
        return ForcedTokens(harmony_script(vocab, answer(t), "thinking"))

    return steer


def test_every_pair_stored_once_and_rerun_is_cached(
    policies: Path, tmp_path: Path, tiny_model: Path
) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", rows())
    clf = make_classifier(tiny_model, tmp_path / "s.db")
    pset = load_set("abc")
    fields = parse_label_fields(["alpha=a", "beta=b"], pset.names)
    plan = plan_multi_run(data, clf, pset, label_fields=fields, name="m")
    assert (plan.n_texts, plan.n_policies, plan.n_items, len(plan.todo)) == (30, 3, 90, 90)
    summary = execute_multi_run(plan, clf, steer=steer_separate(Vocab.from_gguf(tiny_model)))
    assert (summary.n_done, summary.n_new, summary.n_cached) == (90, 90, 0)
    res = clf.store.run_results("m")
    assert [r["idx"] for r in res] == list(range(90))
    assert len({r["key"] for r in res}) == 90  # one result row per (text, policy)
    for r in res:
        extra = json.loads(r["extra"])
        t, p = divmod(r["idx"], 3)
        assert (extra["text_idx"], extra["policy"], r["policy_name"]) == (t, NAMES[p], NAMES[p])
        assert r["text"] == f"message {t}"
        assert r["verdict"] == ("violation" if t % 2 else "no_violation")
    gold = {(json.loads(r["extra"])["policy"], r["idx"] // 3): r["gold"] for r in res}
    assert gold[("alpha", 3)] == "1" and gold[("beta", 3)] == "1" and gold[("gamma", 3)] is None
    again = plan_multi_run(
        data, make_classifier(tiny_model, tmp_path / "s.db"), pset, label_fields=fields, name="m"
    )
    assert again.resumed and again.todo == []
    ev = evaluate_multi_run(clf.store, "m", n_resamples=50)
    alpha, beta = ev["per_policy"]["alpha"], ev["per_policy"]["beta"]
    assert (alpha["f1"]["value"], alpha["accuracy"]["value"]) == (1.0, 1.0)
    # beta: predicted = odd (15), gold = multiples of 3 (10), both = 3, 9, 15, 21, 27
    assert (beta["precision"]["value"], beta["recall"]["value"]) == (5 / 15, 5 / 10)
    assert beta["f1"]["value"] == pytest.approx(0.4)
    assert ev["per_policy"]["gamma"]["n_labelled"] == 0
    assert ev["macro"]["policies"] == ["alpha", "beta"]
    assert ev["macro"]["f1"]["value"] == pytest.approx(0.7)
    anyv = ev["any_violation"]  # gold: odd or multiple of 3 (20); flagged: odd (15)
    assert (anyv["n_gold_violation"], anyv["verdicts"]["violation"]) == (20, 15)
    assert anyv["recall"]["value"] == 15 / 20 and anyv["precision"]["value"] == 1.0


def test_killed_multi_run_resumes_exactly_the_missing_pairs(
    policies: Path, tmp_path: Path, tiny_model: Path
) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", rows())
    db = tmp_path / "store.db"
    script = tmp_path / "held_multi.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from edge_guard.harmony.vocab import Vocab
        from edge_guard.policy.sets import load_set
        from edge_guard.runs.multi import execute_multi_run
        from edge_guard.runs.multi_plan import plan_multi_run
        from tests.runs_helpers import hold_after, make_classifier
        from tests.test_multi_policy import steer_separate
        model = {str(tiny_model)!r}
        clf = make_classifier(model, {str(db)!r}, parallel=2)
        plan = plan_multi_run({str(data)!r}, clf, load_set("abc"), name="killme")
        execute_multi_run(plan, clf, steer=steer_separate(Vocab.from_gguf(model)),
                          on_result=hold_after(5))
    """)
    )
    run = HeldRun([sys.executable, str(script)], tmp_path / "run.log")
    run.wait_held()  # 5 pairs stored, the 6th not yet: kill it there
    run.proc.send_signal(signal.SIGKILL)
    assert run.finish(30) == -signal.SIGKILL
    store = Store(db)
    before = {r["idx"]: r["key"] for r in run_item_rows(store, "killme")}
    assert len(before) == 5, "the run was not killed after its 5th stored pair"
    assert store.run("killme")["status"] == "running"
    clf = make_classifier(tiny_model, db)
    plan = plan_multi_run(data, clf, load_set("abc"), name="killme")
    missing = [t * 3 + p for t, p in plan.todo]
    assert sorted(set(missing) | set(before)) == list(range(90)) and not set(missing) & set(before)
    summary = execute_multi_run(plan, clf, steer=steer_separate(Vocab.from_gguf(tiny_model)))
    assert (summary.n_new, summary.n_cached) == (90 - len(before), 0)  # exactly the missing pairs
    items = run_item_rows(store, "killme")
    assert [r["idx"] for r in items] == list(range(90))  # every pair, once
    assert all(before[r["idx"]] == r["key"] for r in items if r["idx"] in before)
    assert store.run("killme")["status"] == "done"
    assert len({r["key"] for r in store.run_results("killme")}) == 90


def combined_answer(t: int) -> str:
    """Text t's combined answer: t % 5 == 4 is bad JSON (all undetermined)."""
    if t % 5 == 4:
        return '{"violations": ["alpha"'
    return json.dumps(
        {"violations": [n for n, hit in zip(NAMES, (t % 2, t % 3 == 0, 0), strict=True) if hit]}
    )


def test_combined_mode_splits_one_answer_per_text(
    policies: Path, tmp_path: Path, tiny_model: Path
) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", rows()[:10])
    clf = make_classifier(tiny_model, tmp_path / "s.db")
    vocab = Vocab.from_gguf(tiny_model)
    steer = lambda t: ForcedTokens(harmony_script(vocab, combined_answer(t), "hm"))  # noqa: E731
    plan = plan_multi_run(data, clf, load_set("abc"), mode="combined", name="c")
    summary = execute_multi_run(plan, clf, steer=steer)
    assert (summary.n_done, summary.n_new) == (30, 30)
    res = clf.store.run_results("c")
    assert [r["idx"] for r in res] == list(range(30)) and len({r["key"] for r in res}) == 30
    got = {(r["idx"] // 3, r["policy_name"]): r["verdict"] for r in res}
    for t in range(10):
        want = combined_answer(t)
        for p, n in enumerate(NAMES):
            if t % 5 == 4:
                assert got[(t, n)] == "undetermined"
            else:
                hit = n in json.loads(want)["violations"]
                assert got[(t, n)] == ("violation" if hit else "no_violation"), (t, n, p)
    combined_rows = clf.store.query(
        "SELECT count(*) AS n FROM results WHERE policy_name = ?", ["combined:abc"]
    )
    assert combined_rows[0]["n"] == 10  # one prompt (and one stored answer) per text
    again = plan_multi_run(
        data,
        make_classifier(tiny_model, tmp_path / "s.db"),
        load_set("abc"),
        mode="combined",
        name="c",
    )
    assert again.todo == []


def test_classify_json_is_one_object_with_a_result_per_policy(
    policies: Path, tmp_path: Path, tiny_model: Path
) -> None:
    from click.testing import CliRunner

    from edge_guard.cli import main

    args = [
        "classify",
        "-m",
        str(tiny_model),
        "--max-tokens",
        "4",
        "--db",
        str(tmp_path / "s.db"),
        "--json",
    ]
    res = CliRunner().invoke(main, [*args, "-p", "gamma", "-p", "alpha", "hello"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert sorted(out) == [
        "effort",
        "flagged",
        "mode",
        "model",
        "policies",
        "policy_set",
        "results",
        "style",
        "text",
        "undetermined",
        "violations",
    ]
    assert (out["text"], out["policies"], out["mode"]) == ("hello", ["gamma", "alpha"], "separate")
    assert out["policy_set"] == "gamma+alpha" and list(out["results"]) == ["gamma", "alpha"]
    for name, r in out["results"].items():
        assert (r["policy"], r["text"], r["verdict"]) == (name, "hello", "undetermined")
    # 4 tokens cannot hold an answer: both undetermined, so the set is undetermined, not safe
    assert (out["flagged"], out["violations"], out["undetermined"]) == (
        None,
        [],
        ["gamma", "alpha"],
    )
    res = CliRunner().invoke(main, [*args, "--set", "abc", "hello"])
    assert res.exit_code == 0 and list(json.loads(res.output)["results"]) == NAMES
    res = CliRunner().invoke(main, [*args, "--set", "abc", "-p", "alpha", "hello"])
    assert (
        res.exit_code == 1 and res.output == "error: give either --set or --policy/-p, not both\n"
    )


def test_cli_run_maps_gold_columns_to_policies(
    policies: Path, tmp_path: Path, tiny_model: Path
) -> None:
    from click.testing import CliRunner

    from edge_guard.cli import main

    data = write_jsonl(tmp_path / "d.jsonl", rows()[:3])
    db = str(tmp_path / "s.db")
    base = [
        "run",
        str(data),
        "-m",
        str(tiny_model),
        "--max-tokens",
        "4",
        "--db",
        db,
        "--set",
        "abc",
        "--name",
        "r",
        "--json",
    ]
    res = CliRunner().invoke(main, [*base, "--label-field", "alpha=a", "--label-field", "gamma=b"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output.splitlines()[-1])
    assert (out["summary"]["n_items"], out["summary"]["n_new"]) == (9, 9)
    assert out["eval"]["per_policy"]["alpha"]["n_labelled"] == 3
    assert out["eval"]["per_policy"]["beta"]["n_labelled"] == 0
    assert out["eval"]["per_policy"]["gamma"]["n_gold_violation"] == 1  # b: text 0 only
    golds = {r["idx"]: r["gold"] for r in Store(db).run_results("r")}
    assert [golds[i] for i in range(9)] == ["0", None, "1", "1", None, "0", "0", None, "0"]
    bad = CliRunner().invoke(main, [*base[:-3], "--name", "r2", "--label-field", "delta=a"])
    assert bad.exit_code == 1
    assert bad.output.endswith(
        "error: --label-field 'delta=a': no policy 'delta' in the set "
        "(policies: alpha, beta, gamma)\n"
    )


def test_compare_separate_vs_combined_counts_flips_per_policy(
    policies: Path, tmp_path: Path, tiny_model: Path
) -> None:
    from edge_guard.compare.config import build_configs
    from edge_guard.compare.multi import multi_summary, run_multi_compare

    data = write_jsonl(tmp_path / "d.jsonl", rows()[:6])
    vocab = Vocab.from_gguf(tiny_model)

    def steer(k: int, _cfg: object):  # type: ignore[no-untyped-def]
        if k == 0:  # separate: every policy answers 1 for odd texts
            return lambda t: ForcedTokens(harmony_script(vocab, answer(t), "s"))
        return lambda t: ForcedTokens(harmony_script(vocab, combined_answer(t), "c"))

    configs = build_configs(["mode=separate;mode=combined"])
    store, runs, labels = run_multi_compare(
        data,
        load_set("abc"),
        configs,
        base_opts={"model": str(tiny_model), "max_tokens": 64, "db": str(tmp_path / "s.db")},
        steer=steer,
    )
    c = multi_summary(store, runs, labels, n_resamples=20)
    assert c["modes"] == ["separate", "combined"]
    per = c["vs_reference"][0]["policies"]
    # texts 0-5. separate: 1 on odd texts for every policy. combined: alpha on odd texts,
    # beta on multiples of 3, gamma never; text 4's answer is bad JSON (all undetermined).
    assert per["alpha"]["transitions"] == {"no_violation→undetermined": 1}
    assert per["beta"]["transitions"] == {
        "no_violation→undetermined": 1,
        "no_violation→violation": 1,
        "violation→no_violation": 2,
    }
    assert per["gamma"]["transitions"] == {
        "no_violation→undetermined": 1,
        "violation→no_violation": 3,
    }
    assert [per[n]["flips"] for n in NAMES] == [1, 4, 4]
    assert per["alpha"]["agreement"] == 5 / 6
    assert per["any_violation"]["transitions"] == {
        "no_violation→undetermined": 1,
        "no_violation→violation": 1,
    }
    from edge_guard.compare.multi import write_multi_compare

    md = write_multi_compare(c, tmp_path / "c.md").read_text()
    assert md.count("\n| beta |") == 2  # a row in each config's policy x metric table
    assert "| beta | 6 | 33.3% |" in md.replace(" | — | ", " | ").replace("\\", "")
    page = write_multi_compare(c, tmp_path / "c.html").read_text()
    assert "violation→no_violation 2" in page and page.count("<h2>") == 3


def test_multi_bench_reports_pairs_and_prefix_evaluations(tiny_model: Path) -> None:
    from edge_guard.bench.multi import MultiBenchConfig, format_multi_table, run_multi_bench

    cfg = MultiBenchConfig(
        n_policies=3,
        n=4,
        policy_tokens=120,
        text_tokens=16,
        output_tokens=4,
        parallel=4,
        threads=1,
        roofline_repeats=1,
    )
    report = run_multi_bench(cfg, str(tiny_model))
    assert report["workload"]["pairs"] == 12 and len(report["workload"]["prefix_tokens"]) == 3
    assert [
        report["results"][k]["n"] for k in ("single", "multi", "roofline_single", "roofline_multi")
    ] == [4, 12, 4, 12]
    assert report["results"]["multi"]["output_tokens"] == 12 * 4  # min_tokens: exactly 4 each
    # each policy's prefix evaluated exactly once
    assert report["prefix_evals"] == {"single": 1, "multi": 3}
    assert report["prefix_evaluated_twice"] is False
    assert report["goal"] == 0.8 and isinstance(report["meets_goal"], bool)
    assert "prefix evaluated twice: no (prefix_evals: single 1, multi 3 for 3 policies)" in (
        format_multi_table(report)
    )


def test_python_classify_takes_a_policy_set(
    policies: Path, tmp_path: Path, tiny_model: Path
) -> None:
    from edge_guard import classify
    from edge_guard.result import MultiResult

    vocab = Vocab.from_gguf(tiny_model)
    procs = [ForcedTokens(harmony_script(vocab, a, "r")) for a in ("1", "0", "nope")]
    out = classify(
        ["x", "y", "z"],
        load_set("abc"),
        str(tiny_model),
        max_tokens=64,
        db=str(tmp_path / "s.db"),
        logits_processors=procs,
    )
    assert [type(m) for m in out] == [MultiResult] * 3
    assert [list(m.results) for m in out] == [NAMES] * 3
    assert [m.flagged for m in out] == [True, False, None]  # "nope" is undetermined, not safe
    assert [m.text for m in out] == ["x", "y", "z"]
    one = classify(
        "x",
        "abc",
        str(tiny_model),
        max_tokens=64,
        db=str(tmp_path / "s.db"),
        logits_processors=procs[:1],
    )  # a set's name works too
    assert isinstance(one, MultiResult) and one.violations == NAMES and one.results["alpha"].cached


def test_policies_test_runs_every_members_cases(
    policies: Path, tmp_path: Path, tiny_model: Path
) -> None:
    from click.testing import CliRunner

    from edge_guard.cli import main

    for name in ("alpha", "beta"):
        (policies / name / "cases.jsonl").write_text(
            json.dumps({"id": f"{name}-1", "text": f"about {name}", "expected": "1"})
            + "\n"
            + json.dumps({"id": f"{name}-2", "text": "about nothing", "expected": "0"})
            + "\n"
        )
    args = [
        "policies",
        "test",
        "alpha",
        "beta",
        "-m",
        str(tiny_model),
        "--max-tokens",
        "4",
        "--db",
        str(tmp_path / "s.db"),
    ]
    res = CliRunner().invoke(main, [*args, "--json"])
    assert res.exit_code == 1  # 4 tokens: every answer undetermined, so no case passes
    out = json.loads(res.output)
    assert (out["policy_set"], out["ok"], list(out["reports"])) == (
        "alpha+beta",
        False,
        ["alpha", "beta"],
    )
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1
    assert res.output.rstrip().endswith("set alpha+beta: 0/2 policies pass (failing: alpha, beta)")
    res = CliRunner().invoke(main, [*args[:4], "gamma", *args[4:]])
    assert res.exit_code == 2 and res.output.startswith("error: ") and res.output.count("\n") == 1


@pytest.fixture
def thr_set(policies: Path) -> Path:
    """A set whose thresholds decide every determined pair: alpha flags all (P >= 1e-9),
    beta none (P >= 1 never holds on a random model's scores)."""
    (policies / "sets" / "thr.toml").write_text(
        'policies = ["alpha", "beta"]\n[thresholds]\nalpha = 1e-9\nbeta = 1.0\n'
    )
    return policies


def _consistent(res: object) -> tuple[str, bool | None, str | None]:
    return (str(res.verdict), res.binary_label, res.fine_grain_label)  # type: ignore[attr-defined]


def test_set_thresholds_reach_every_path_and_eval(
    thr_set: Path, tmp_path: Path, tiny_model: Path
) -> None:
    """classify() with samplings / run items / on_event, a multi-policy run and its eval all
    apply the set's thresholds; each thresholded result is consistent in every field."""
    from edge_guard import classify
    from edge_guard.classification.classifier import RunItem
    from edge_guard.engine.sampling import SamplingConfig

    vocab = Vocab.from_gguf(tiny_model)
    procs = [ForcedTokens(harmony_script(vocab, a, "r")) for a in ("1", "0")]
    db, kw = str(tmp_path / "s.db"), {"model": str(tiny_model), "max_tokens": 64}
    Store(db).ensure_run("r", kind="run", n_items=4)
    plain = classify(["x", "y"], "thr", db=db, logits_processors=procs, **kw)
    events: list[int] = []
    items = {n: [RunItem("r", 2 * t + k, None) for t in range(2)] for k, n in enumerate(NAMES[:2])}
    paths = {
        "samplings": {"samplings": [SamplingConfig(max_tokens=64)] * 2},
        "on_event": {"on_event": lambda i, ev: events.append(i), "use_cache": False},
        "run_items": {"run_items": items},
    }
    for how, extra in [("plain", {}), *paths.items()]:
        out = (
            plain
            if how == "plain"
            else classify(["x", "y"], "thr", db=db, logits_processors=procs, **kw, **extra)
        )
        for m in out:
            alpha, beta = m.results["alpha"], m.results["beta"]
            assert _consistent(alpha) == ("violation", True, "1"), how
            assert _consistent(beta) == ("no_violation", False, "0"), how
            assert (alpha.metadata["threshold"], beta.metadata["threshold"]) == (1e-9, 1.0)
            assert m.flagged is True
        assert [m.results["beta"].metadata["model_verdict"] for m in out] == [
            "violation",
            "no_violation",
        ]  # the model's own verdicts, kept
    assert events and set(events) <= {0, 1}
    # A run of the set: the pairs it reports and its eval use the thresholds; the stored
    # rows keep the model's own verdicts (another set may threshold them otherwise).
    data = write_jsonl(
        tmp_path / "d.jsonl", [{"text": f"message {i}", "a": i % 2} for i in range(6)]
    )
    clf = make_classifier(tiny_model, tmp_path / "s.db")
    pset = load_set("thr")
    plan = plan_multi_run(data, clf, pset, label_fields={"alpha": "a"}, name="t")
    seen: list[tuple[str, str]] = []
    execute_multi_run(
        plan,
        clf,
        steer=steer_separate(vocab),
        on_result=lambda _p, t, p, r: seen.append((pset.names[p], str(r.verdict))),
    )
    assert sorted(seen) == [("alpha", "violation")] * 6 + [("beta", "no_violation")] * 6
    stored = {r["verdict"] for r in clf.store.run_results("t")}
    assert stored == {"violation", "no_violation"}  # odd texts answered 1, even 0
    ev = evaluate_multi_run(clf.store, "t", n_resamples=20)
    assert ev["per_policy"]["alpha"]["verdicts"]["violation"] == 6
    assert ev["per_policy"]["beta"]["verdicts"]["violation"] == 0
    assert ev["per_policy"]["alpha"]["recall"]["value"] == 1.0
    assert ev["per_policy"]["alpha"]["precision"]["value"] == 0.5  # gold: the 3 odd texts
