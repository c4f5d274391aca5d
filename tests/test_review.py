"""Review (issue 30): queues over stored runs, decisions (history, latest wins, kill -9 safe),
export (formula-safe CSV), cases from decisions, and `eval`/`report --gold review`.

Most runs here are written straight into the store (verdicts and scores chosen per item, no
model); `model_run` classifies a dataset with the tiny synthetic model, steered per text.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from edge_guard.classification.classifier import Classifier
from edge_guard.cli import main
from edge_guard.engine.sampling import ForcedTokens, SamplingConfig, harmony_script
from edge_guard.store import Store

SHORT = SamplingConfig(max_tokens=64)
POLICY_V1 = "Decide if the message is rude.\nAnswer with a single character: 1 if rude, 0 if not.\n"
POLICY_V2 = POLICY_V1.replace("rude.", "rude or mocking.", 1)
BASE_CASES = [
    {"id": "insult", "text": "you are an idiot", "expected": "1"},
    {"id": "polite", "text": "thank you kindly", "expected": "0"},
]


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def write_policy(
    folder: Path,
    *,
    name: str = "rude",
    text: str = POLICY_V1,
    cases: Sequence[dict[str, Any]] | None = BASE_CASES,
    output: str = 'kind = "binary"',
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "policy.md").write_text(text)
    (folder / "policy.toml").write_text(f'name = "{name}"\n[output]\n{output}\n')
    if cases is not None:
        (folder / "cases.jsonl").write_text("".join(json.dumps(c) + "\n" for c in cases))
    return folder


def store_run(
    db: Path,
    name: str,
    items: Sequence[dict[str, Any]],
    *,
    policy: str = "rude",
    policy_hash: str = "h1",
    kind: str = "run",
    config: dict[str, Any] | None = None,
) -> Store:
    """A run written straight into the store: each item {text, verdict, p, gold[, conv]}."""
    store = Store(db)
    cfg = {"policy": policy, "policy_hash": policy_hash, **(config or {})}
    store.ensure_run(name, kind=kind, policy=policy, model="m", config=cfg, n_items=len(items))
    for i, it in enumerate(items):
        conv = it.get("conversation")
        row = {
            "key": f"{name}-k{i}",
            "text": it["text"],
            "verdict": it["verdict"],
            "policy_name": policy,
            "policy_hash": policy_hash,
            "model_ref": "m",
            "parsed": int(it["verdict"] != "undetermined"),
            "final": {"violation": "1", "no_violation": "0"}.get(it["verdict"]),
            "reasoning": it.get("reasoning", f"reasoning {i}"),
            "finish_reason": "return",
            "metadata": {"p_violation": it["p"]} if it.get("p") is not None else {},
            "conversation": json.dumps(conv, sort_keys=True, separators=(",", ":"))
            if conv
            else None,
        }
        gold = it.get("gold")
        item = {
            "run": name,
            "idx": i,
            "item_id": it.get("id", f"item-{i}"),
            "key": row["key"],
            "gold": None if gold is None else str(int(gold)),
            "extra": {"gold_violation": gold},
        }
        store.put(row, run_item=item)
    store.set_run_status(name, "done")
    return store


# verdict, P(violation), gold per item: a small run with every kind of item
ITEMS = [
    {"text": "t0", "verdict": "violation", "p": 0.95, "gold": False},  # confident mistake
    {"text": "t1", "verdict": "no_violation", "p": 0.45, "gold": True},  # mistake, near 0.5
    {"text": "t2", "verdict": "violation", "p": 0.55, "gold": True},
    {"text": "t3", "verdict": "undetermined", "p": None, "gold": False},
    {"text": "t4", "verdict": "no_violation", "p": 0.02, "gold": False},
    {"text": "t5", "verdict": "violation", "p": 0.70, "gold": None},
    {"text": '=HYPERLINK("http://x")', "verdict": "no_violation", "p": 0.25, "gold": False},
]


def listed(db: Path, *args: str) -> dict[str, Any]:
    res = cli("review", "r", "--db", str(db), "--json", *args)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_queues_order_items_by_what_needs_a_human(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    store_run(db, "r", ITEMS)
    assert [i["item"] for i in listed(db, "--queue", "disagree")["items"]] == [0, 1]
    assert [i["item"] for i in listed(db, "--queue", "undetermined")["items"]] == [3]
    uncertain = listed(db, "--queue", "uncertain")
    assert [i["item"] for i in uncertain["items"]] == [1, 2, 5, 6, 0, 4]
    assert uncertain["threshold"] == 0.5
    near_07 = listed(db, "--queue", "uncertain", "--threshold", "0.7", "--limit", "2")
    assert [i["item"] for i in near_07["items"]] == [5, 2] and near_07["n_queue"] == 6
    triage = listed(db)
    assert [i["item"] for i in triage["items"]] == [1, 0, 3, 2, 5, 6, 4]
    assert triage["items"][1]["reasons"] == ["disagree"] and triage["items"][1]["gold"] == (
        "no_violation"
    )
    assert [i["item"] for i in listed(db, "--queue", "all")["items"]] == list(range(7))
    a = listed(db, "--queue", "sample", "--limit", "3", "--seed", "1")["items"]
    b = listed(db, "--queue", "sample", "--limit", "3", "--seed", "1")["items"]
    c = listed(db, "--queue", "sample", "--limit", "3", "--seed", "2")["items"]
    assert [i["item"] for i in a] == [i["item"] for i in b] and len(a) == 3
    assert [i["item"] for i in a] != [i["item"] for i in c]
    # flips need a second run over the same items; matched by text, not position
    res = cli("review", "r", "--db", str(db), "--queue", "flips")
    assert res.exit_code == 1 and "--against RUN" in res.stderr
    other = [{**it, "verdict": "violation", "p": 0.9} for it in reversed(ITEMS)]
    store_run(db, "r2", other, policy_hash="h2")
    flips = listed(db, "--queue", "flips", "--against", "r2")
    assert [i["item"] for i in flips["items"]] == [4, 6, 1, 3]  # largest change in P first
    assert flips["items"][0]["partners"] == [{"run": "r2", "verdict": "violation", "score": 0.9}]
    assert flips["partners"] == ["r2"]


def test_a_comparison_is_reviewed_against_its_other_configs(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    specs = [{"model": "a"}, {"model": "b"}]
    for k, verdict in enumerate(("no_violation", "violation")):
        meta = {"compare": {"name": "cmp", "index": k, "configs": specs}}
        items = [{**ITEMS[4], "verdict": verdict, "p": 0.1 + 0.8 * k}, ITEMS[2]]
        store_run(db, f"cmp/{k}:{'ab'[k]}", items, kind="compare", config=meta)
    res = cli("review", "cmp", "--db", str(db), "--queue", "flips", "--json")
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)
    assert (got["run"], got["partners"]) == ("cmp/0:a", ["cmp/1:b"])
    assert [i["item"] for i in got["items"]] == [0]
    assert got["items"][0]["partners"][0]["verdict"] == "violation"
    one = json.loads(cli("review", "cmp/1:b", "--db", str(db), "--json").stdout)
    assert one["partners"] == ["cmp/0:a"]  # a member run finds its comparison by itself


def test_review_of_an_unknown_run_lists_recent_ones(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    store_run(db, "r", ITEMS[:2])
    res = cli("review", "nope", "--db", str(db))
    assert res.exit_code == 1
    assert res.stderr.strip().splitlines() == [
        f"error: no run, comparison or tested policy named 'nope' in {db} (recent runs: r)"
    ]


def test_labels_keep_history_latest_wins_and_export_is_formula_safe(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    store_run(db, "r", ITEMS)
    first = cli(
        "review",
        "label",
        "r",
        "0",
        "no_violation",
        "--db",
        str(db),
        "--note",
        "=cmd|' /C calc'!A0",
        "--tag",
        "fp",
        "--tag",
        "gold-wrong,fp",
        "--reviewer",
        "ann",
    )
    assert first.exit_code == 0, first.output
    assert first.stdout.startswith("item 0 → no_violation (decision #1 by ann)")
    second = cli(
        "review", "label", "r", "item-0", "violation", "--db", str(db), "--reviewer", "bob"
    )
    assert second.exit_code == 0, second.output
    assert (
        "replaces no_violation (#1 by ann" in second.stdout and "kept in history" in second.stdout
    )
    cli("review", "label", "r", "6", "no_violation", "--db", str(db), "--reviewer", "ann")
    cli("review", "label", "r", "3", "skip", "--db", str(db), "--reviewer", "ann")
    state = listed(db, "--queue", "all")
    assert (state["reviewed"], state["remaining"]) == (3, 4)
    assert state["items"][0]["decision"]["label"] == "violation"
    assert state["items"][0]["decision"]["reviewer"] == "bob"
    assert [i["item"] for i in listed(db, "--todo")["items"]] == [1, 2, 5, 4]
    shown = cli("review", "show", "r", "0", "--db", str(db), "--json")
    hist = json.loads(shown.stdout)["history"]
    assert [(d["label"], d["reviewer"]) for d in hist] == [
        ("no_violation", "ann"),
        ("violation", "bob"),
    ]
    assert hist[0]["tags"] == ["fp", "gold-wrong"] and hist[0]["note"] == "=cmd|' /C calc'!A0"
    assert hist[1]["model_verdict"] == "violation" and hist[1]["result_key"] == "r-k0"
    # export: the decisions in force; --history all of them; CSV cells never start a formula
    lines = cli("review", "export", "--db", str(db)).stdout.splitlines()
    assert [json.loads(x)["label"] for x in lines] == ["violation", "no_violation", "skip"]
    out = tmp_path / "d.csv"
    res = cli("review", "export", "r", "--db", str(db), "--history", "-o", str(out))
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["label"] for r in rows] == ["no_violation", "violation", "no_violation", "skip"]
    assert rows[0]["note"] == "'=cmd|' /C calc'!A0" and rows[0]["in_force"] == "False"
    assert rows[2]["text"] == '\'=HYPERLINK("http://x")'
    assert rows[0]["tags"] == "fp;gold-wrong"
    again = cli("review", "export", "r", "--db", str(db), "-o", str(out))
    assert again.exit_code == 1 and "exists: pass --force" in again.stderr


def test_export_to_a_terminal_stays_valid_json_with_controls_escaped(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    hostile = "evil \u202e\x85\x1b]0;pwned\x07 [/]"
    store_run(db, "h", [{"text": hostile, "verdict": "violation", "p": 0.9, "gold": None}])
    cli("review", "label", "h", "0", "violation", "--db", str(db), "--note", hostile)
    out = cli("review", "export", "--db", str(db)).stdout
    assert not any(c in out for c in "\u202e\x85\x1b\x07")  # nothing a terminal would obey
    row = json.loads(out)
    assert row["text"] == hostile and row["note"] == hostile
    listed_ = cli("review", "h", "--db", str(db)).stdout
    assert "\\x1b]0;pwned\\x07 [/]" in listed_ and "\x1b" not in listed_
    shown = cli("review", "show", "h", "0", "--db", str(db)).stdout
    assert "    evil \\u202e\\x85\\x1b]0;pwned\\x07 [/]" in shown
    assert not any(c in shown for c in "\u202e\x85\x1b\x07")


def test_bad_label_requests_fail_alone_in_one_line(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    store_run(db, "r", ITEMS)
    res = cli("review", "label", "r", "99", "skip", "--db", str(db))
    assert res.exit_code == 1
    assert res.stderr.strip() == "error: run 'r' has no item '99' (indices 0–6)"
    res = cli("review", "label", "r", "1", "maybe", "--db", str(db))
    assert res.exit_code == 2 and "'maybe' is not one of" in res.output
    assert listed(db)["reviewed"] == 0  # nothing was recorded


KILL_SCRIPT = """
import sys
from edge_guard.review.decisions import record
from edge_guard.review.items import load_source
from edge_guard.store import Store

store = Store(sys.argv[1])
source = load_source(store, "r")
for it in source.items[:3]:
    d = record(store, it.target(), "violation", note=f"n{it.idx}", source="script")
    print(f"recorded {d.id}", flush=True)
store.conn.execute("BEGIN IMMEDIATE")  # a fourth decision half-written when the kill comes
store.conn.execute("INSERT INTO review_decisions (policy_name, content_key, label, created_at) "
                   "VALUES ('rude', 'x', 'skip', 'now')")
print("writing", flush=True)
sys.stdin.readline()  # blocks until killed
"""


def test_a_kill_9_loses_no_reported_decision(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    store_run(db, "r", ITEMS).close()
    script = tmp_path / "reviewer.py"
    script.write_text(KILL_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path.cwd())},
    )
    try:
        seen = [proc.stdout.readline().strip() for _ in range(4)]  # type: ignore[union-attr]
        assert seen == ["recorded 1", "recorded 2", "recorded 3", "writing"]
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    state = listed(db, "--queue", "all")
    assert state["reviewed"] == 3
    assert [i["decision"]["note"] for i in state["items"][:3]] == ["n0", "n1", "n2"]
    assert Store(db).query("SELECT COUNT(*) AS n FROM review_decisions")[0]["n"] == 3


# -- cases from decisions ------------------------------------------------------------------------
CONV = {
    "messages": [
        {"role": "user", "content": "is this ok?"},
        {"role": "assistant", "content": "you fool"},
    ],
    "target": "last",
}


def test_cases_from_review_append_with_provenance_never_rewriting(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    folder = write_policy(tmp_path / "rude")
    before = (folder / "cases.jsonl").read_bytes().rstrip(b"\n")  # no final newline: added
    (folder / "cases.jsonl").write_bytes(before)
    items = [
        *ITEMS[:3],
        {"text": "you are an idiot", "verdict": "violation", "p": 0.9, "gold": False},
        {
            "text": "you fool",
            "conversation": CONV,
            "verdict": "no_violation",
            "p": 0.2,
            "gold": True,
        },
    ]
    store_run(db, "r", items)
    for idx, label in (
        (0, "no_violation"),
        (1, "violation"),
        (2, "skip"),
        (3, "no_violation"),
        (4, "violation"),
    ):
        res = cli(
            "review",
            "label",
            "r",
            str(idx),
            label,
            "--db",
            str(db),
            "--reviewer",
            "ann",
            "--note",
            f"why {idx}",
            "--tag",
            "batch1",
        )
        assert res.exit_code == 0, res.output
    res = cli("policies", "cases", "add", str(folder), "--from-review", "r", "--db", str(db))
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[0] == f"added 3 case(s) to {folder / 'cases.jsonl'}"
    assert "left out, decided skip: items 2" in res.stdout
    assert "conflict, item 3: the existing case expects 1, the decision says 0" in res.stdout
    raw = (folder / "cases.jsonl").read_bytes()
    assert raw.startswith(before + b"\n")  # existing bytes untouched
    added = [json.loads(x) for x in raw[len(before) + 1 :].decode().splitlines()]
    assert [c.get("text") for c in added] == ["t0", "t1", None]
    assert [c["expected"] for c in added] == ["0", "1", "1"]
    assert added[0]["note"] == "why 0" and added[0]["tags"] == ["batch1", "review"]
    prov = added[0]["provenance"]
    assert (prov["run"], prov["item"], prov["decision"], prov["reviewer"]) == (
        "r",
        0,
        "no_violation",
        "ann",
    )
    assert prov["model_verdict"] == "violation" and prov["decision_id"] == 1
    assert added[2]["messages"] == CONV["messages"] and added[2]["target"] == "last"
    from edge_guard.policy.cases import load_cases
    from edge_guard.policy.core import load_policy

    cases = load_cases(folder / "cases.jsonl", load_policy(folder).output)
    assert len(cases) == 5 and cases[4].conversation is not None
    assert cases[4].text == "you fool"
    # a second promotion adds nothing (de-duplicated by text), and says so
    again = cli(
        "policies", "cases", "add", str(folder), "--from-review", "r", "--db", str(db), "--json"
    )
    assert json.loads(again.stdout)["n_added"] == 0
    assert json.loads(again.stdout)["duplicates"] == [0, 1, 3, 4]
    assert (folder / "cases.jsonl").read_bytes() == raw


def test_cases_from_review_refusals_are_one_line(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    store_run(db, "r", ITEMS)
    cli("review", "label", "r", "0", "violation", "--db", str(db))
    other = write_policy(tmp_path / "other", name="other")
    res = cli("policies", "cases", "add", str(other), "--from-review", "r", "--db", str(db))
    assert res.exit_code == 1
    assert res.stderr.strip() == "error: run 'r' was classified under policy 'rude', not 'other'"
    csv_policy = write_policy(tmp_path / "csvp", cases=None)
    (csv_policy / "cases.csv").write_text("text,expected\nhello,0\n")
    res = cli("policies", "cases", "add", str(csv_policy), "--from-review", "r", "--db", str(db))
    assert res.exit_code == 1 and "cases from review are appended to cases.jsonl only" in res.stderr
    likert = write_policy(
        tmp_path / "lik",
        cases=None,
        output='kind = "likert"\nlabels = ["1", "2", "3"]\nviolation = ["2", "3"]',
    )
    res = cli("policies", "cases", "add", str(likert), "--from-review", "r", "--db", str(db))
    assert res.exit_code == 0, res.output
    assert "added 0 case(s)" in res.stdout
    assert "left out item 0: policy has 2 violation labels (2, 3)" in res.stdout
    assert not (likert / "cases.jsonl").exists()  # nothing to add: no file created


# -- eval / report --gold review -----------------------------------------------------------------
def test_eval_scores_against_review_decisions_and_reports_agreement(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    store_run(db, "r", ITEMS)
    for idx, label in (
        (0, "no_violation"),
        (1, "violation"),
        (2, "violation"),
        (3, "violation"),
        (5, "no_violation"),
        (4, "skip"),
    ):
        cli("review", "label", "r", str(idx), label, "--db", str(db))
    ev = json.loads(cli("eval", "r", "--db", str(db), "--gold", "review", "--json").stdout)
    assert ev["gold_source"] == "review" and ev["n_labelled"] == 5
    # determined and decided: 0 (viol vs no), 1 (no vs viol), 2 (viol = viol), 5 (viol vs no)
    assert ev["treatments"]["excluded"]["n"] == 4
    assert ev["accuracy"]["value"] == pytest.approx(0.25)
    r = ev["review"]
    assert (r["n_reviewed"], r["n_review_violation"], r["n_reviewed_undetermined"]) == (5, 3, 1)
    assert r["model_vs_reviewer"]["n"] == 5
    assert r["model_vs_reviewer"]["agreement"]["value"] == pytest.approx(0.2)
    assert r["reviewer_vs_gold"]["n"] == 4  # item 5 has no dataset label
    assert r["reviewer_vs_gold"]["agreement"]["value"] == pytest.approx(0.75)
    assert r["model_vs_gold"]["n"] == 6
    assert len(r["model_vs_reviewer"]["agreement"]["ci"]) == 2
    fill = json.loads(
        cli("eval", "r", "--db", str(db), "--gold", "dataset+review", "--json").stdout
    )
    assert fill["n_labelled"] == 7  # item 5 labelled by its decision
    plain = json.loads(cli("eval", "r", "--db", str(db), "--json").stdout)
    assert plain["n_labelled"] == 6 and plain["review"]["n_reviewed"] == 5
    text = cli("eval", "r", "--db", str(db), "--gold", "review").stdout
    assert "gold (review decisions): 5 labelled, 3 violations" in text
    assert "model vs reviewer          n=5     agreement 0.200 [" in text
    report = tmp_path / "r.md"
    res = cli("report", "r", "--db", str(db), "--gold", "review", "-o", str(report))
    assert res.exit_code == 0, res.output
    assert (
        "gold: review decisions; 5 items reviewed; model vs reviewer (n=5) agreement 0.200 \\["
        in (report.read_text())
    )
    # the report's figures are scored against the decisions too, not only labelled so
    assert "7/7 done, 5 labelled (3 violations)." in report.read_text()


def test_eval_of_a_run_without_decisions_is_unchanged(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    store_run(db, "r", ITEMS)
    text = cli("eval", "r", "--db", str(db)).stdout
    assert "gold: 6 labelled, 2 violations" in text and "review:" not in text
    res = cli("eval", "r", "--db", str(db), "--gold", "review")
    assert "no gold labels (review decisions) in this run: nothing to score" in res.stdout
    assert "review: no decisions on this run's items yet (edge-guard review r)" in res.stdout


# -- the loop on a synthetic model: run, review, promote, test, edit, test ------------------------
def steer_texts(answers: Callable[[str], str]) -> Callable[[Any, Sequence[Any]], list[Any]]:
    def steer(clf: Any, texts: Sequence[Any]) -> list[ForcedTokens]:
        vocab = clf.backend.vocab()
        return [ForcedTokens(harmony_script(vocab, answers(str(t)))) for t in texts]

    return steer


@pytest.fixture
def steer_cli(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[str], str]], None]:
    """Make every classification in this process answer `answers(text)` (the CLI cannot steer)."""
    original = Classifier.__dict__["iter"]

    def install(answers: Callable[[str], str]) -> None:
        steer = steer_texts(answers)

        def steered(self: Classifier, texts, **kw):  # type: ignore[no-untyped-def]
            kw["logits_processors"] = steer(self, texts)
            return original(self, texts, **kw)

        monkeypatch.setattr(Classifier, "iter", steered)

    return install


def model_run(
    db: Path,
    model: Path,
    policy: Path,
    rows: Sequence[dict[str, Any]],
    name: str,
    answers: Callable[[str], str],
) -> None:
    from edge_guard.runs.batch import run_dataset

    data = policy.parent / f"{name}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    clf = Classifier(str(policy), model, sampling=SHORT, store=Store(db))
    steer = steer_texts(answers)
    run_dataset(data, clf, name=name, steer=lambda _i, row: steer(clf, [row.text])[0])
    clf.backend.close()


def test_promoted_cases_join_the_next_test_and_its_version_diff(
    tmp_path: Path, tiny_o200k_model: Path, steer_cli: Callable[[Callable[[str], str]], None]
) -> None:
    db = tmp_path / "s.db"
    folder = write_policy(tmp_path / "rude")
    rows = [{"text": f"comment {i}", "label": i % 2} for i in range(6)]
    v1 = {"you are an idiot": "1", "thank you kindly": "0"}
    v1 |= {f"comment {i}": "0" for i in range(6)}  # v1 never flags a comment
    model_run(db, tiny_o200k_model, folder, rows, "r", lambda t: v1[t])
    model = ["--model", str(tiny_o200k_model), "--max-tokens", "64", "--db", str(db)]
    steer_cli(lambda t: v1[t])
    base = cli("policies", "test", str(folder), *model)
    assert base.exit_code == 0, base.output  # the two original cases pass
    for i in (1, 3, 4):  # 1, 3: rude comments v1 missed; 4: right as it is
        cli(
            "review",
            "label",
            "r",
            str(i),
            "violation" if i % 2 else "no_violation",
            "--db",
            str(db),
        )
    res = cli("policies", "cases", "add", str(folder), "--from-review", "r", "--db", str(db))
    assert "added 3 case(s)" in res.stdout
    again = cli("policies", "test", str(folder), *model)
    assert again.exit_code == 1
    assert "5 cases: 3 passed, 2 failed, 0 undetermined" in again.output  # the new ones judged
    (folder / "policy.md").write_text(POLICY_V2)
    v2 = {**v1, "comment 1": "1", "comment 3": "1", "comment 4": "1"}
    steer_cli(lambda t: v2[t])
    after = cli("policies", "test", str(folder), *model)
    assert "since v1 → v2: fixed 2 · broke 1 · still failing 0" in after.output
    assert "+comment 1" in after.output and "-comment 4" in after.output
    # a tested policy's name reviews its latest test run, against the previous version's
    flips = json.loads(cli("review", "rude", "--db", str(db), "--queue", "flips", "--json").stdout)
    assert flips["kind"] == "test" and flips["run"].startswith("test:rude:v2:")
    assert flips["partners"][0].startswith("test:rude:v1:")
    assert sorted(i["text"] for i in flips["items"]) == ["comment 1", "comment 3", "comment 4"]
    wrong = json.loads(
        cli("review", "rude", "--db", str(db), "--queue", "disagree", "--json").stdout
    )
    assert [i["text"] for i in wrong["items"]] == ["comment 4"]  # the failing case
