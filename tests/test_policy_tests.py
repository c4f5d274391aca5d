"""Policy test suites: cases files, `edge-guard policies test/history/diff`, versions, JUnit."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from edge_guard.classification.classifier import Classifier
from edge_guard.cli import main
from edge_guard.cli.policies_cmd import policy_report
from edge_guard.engine.sampling import ForcedTokens, SamplingConfig, harmony_script
from edge_guard.errors import EdgeGuardError
from edge_guard.paths import repo_root
from edge_guard.policy.cases import Case, CasesError, load_cases
from edge_guard.policy.core import OutputSpec, load_policy
from edge_guard.policy.version_diff import diff_versions
from edge_guard.policy.versions import policy_history
from edge_guard.policy_tests.junit import write_junit
from edge_guard.policy_tests.runner import run_policy_tests

SHORT = SamplingConfig(max_tokens=24)
POLICY_V1 = "Decide if the message is rude.\nAnswer with a single character: 1 if rude, 0 if not.\n"
POLICY_V2 = POLICY_V1.replace("rude.", "rude or mocking.", 1)
CASES = [
    {"id": "insult", "text": "you are an idiot", "expected": "1", "tags": ["clear"]},
    {"id": "polite", "text": "thank you kindly", "expected": 0, "tags": ["clear"]},
    {"id": "sarcasm", "text": "wow, what a genius", "expected": "1", "tags": ["sarcasm"]},
]


def write_policy(
    folder: Path,
    text: str = POLICY_V1,
    cases: list[dict] | None = None,
    name: str = "rude",
    csv_text: str | None = None,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "policy.md").write_text(text)
    (folder / "policy.toml").write_text(f'name = "{name}"\n[output]\nkind = "binary"\n')
    if csv_text is not None:
        (folder / "cases.csv").write_text(csv_text)
    else:
        lines = [json.dumps(c) for c in (CASES if cases is None else cases)]
        (folder / "cases.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def steer_by_id(clf: Classifier, answers: dict[str, str]) -> Callable[[Case], ForcedTokens]:
    """Per case: make the synthetic model answer `answers[case.id]` (well-formed harmony)."""
    vocab = clf.backend.vocab()
    return lambda case: ForcedTokens(harmony_script(vocab, answers[case.id]))


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def test_jsonl_and_csv_cases_agree(tmp_path: Path) -> None:
    spec = OutputSpec()
    jsonl = write_policy(tmp_path / "a") / "cases.jsonl"
    csv_text = (
        "id,text,expected,tags,note\n"
        "insult,you are an idiot,1,clear,\n"
        "polite,thank you kindly,0,clear,\n"
        'sarcasm,"wow, what a genius",1,sarcasm,"says one thing, means another"\n'
    )
    csv_path = write_policy(tmp_path / "b", csv_text=csv_text) / "cases.csv"
    a, b = load_cases(jsonl, spec), load_cases(csv_path, spec)
    assert [(c.id, c.text, c.expected, c.tags) for c in a] == [
        (c.id, c.text, c.expected, c.tags) for c in b
    ]
    assert [c.expected for c in b] == ["1", "0", "1"]
    assert b[2].note == "says one thing, means another"
    assert load_policy(csv_path.parent).cases_path == csv_path


def test_expected_values_follow_the_output_kind(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "a", "expected": 4}\n{"text": "b", "expected": " 2 "}\n')
    likert = OutputSpec.from_dict({"kind": "likert", "min": 1, "max": 5}, "t")
    assert [c.expected for c in load_cases(path, likert)] == ["4", "2"]
    path.write_text('{"text": "a", "expected": "SPAM"}\n')
    labels = OutputSpec.from_dict({"kind": "labels", "labels": ["ham", "spam"]}, "t")
    assert load_cases(path, labels)[0].expected == "spam"
    path.write_text('{"text": "a", "expected": true}\n{"text": "b", "expected": 0}\n')
    assert [c.expected for c in load_cases(path, OutputSpec("json", (), ()))] == ["1", "0"]
    path.write_text('{"text": "a", "expected": 6}\n')
    with pytest.raises(CasesError, match=r"c\.jsonl:1: expected 6 is not an answer"):
        load_cases(path, likert)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"text": "a", "expected": "1"}\n\n{"text": "b", "expected": "1"\n', r":3: invalid JSON"),
        ('{"text": "a", "expected": "1"}\n{"text": "", "expected": "0"}\n', r":2: 'text' must"),
        ('{"text": "a", "expected": "yes"}\n', r":1: expected 'yes' is not an answer"),
        ('{"text": "a"}\n', r":1: 'expected' is missing"),
        (
            '{"id": "x", "text": "a", "expected": 1}\n{"id": "x", "text": "b", "expected": 0}\n',
            r":2: duplicate case id 'x' \(first on line 1\)",
        ),
        ("[1, 2]\n", r":1: each line must be a JSON object"),
        ("", r"no cases"),
    ],
)
def test_malformed_cases_name_the_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "cases.jsonl"
    path.write_text(content)
    with pytest.raises(CasesError, match=message):
        load_cases(path, OutputSpec())


def test_malformed_csv_names_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "cases.csv"
    path.write_text("text,label\nhello,1\n")
    with pytest.raises(CasesError, match=r"cases\.csv:1: the header must name"):
        load_cases(path, OutputSpec())
    path.write_text("text,expected\nhello,1\nbye,2\n")
    with pytest.raises(CasesError, match=r"cases\.csv:3: expected '2'"):
        load_cases(path, OutputSpec())


SHIPPED = sorted(p for p in (repo_root() / "policies").iterdir() if (p / "policy.md").is_file())


@pytest.mark.parametrize("folder", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_policy_checks_and_has_valid_cases(folder: Path, harmony_encoding) -> None:  # type: ignore[no-untyped-def]
    policy = load_policy(folder)
    report = policy_report(str(folder))
    assert policy.cases_path is not None, f"{folder.name} ships no cases"
    cases = load_cases(policy.cases_path, policy.output)
    assert 15 <= len(cases) <= 30
    assert all(c.id for c in cases)
    expected = {c.expected for c in cases}
    assert len(expected) >= 2, "cases should cover both sides of the policy"
    # The policy's token count is openai-harmony's o200k encoding of its text.
    assert report["policy_tokens"] == len(
        harmony_encoding.encode(policy.text, allowed_special=set())
    )
    if folder.name == "toxic_chat":
        assert 400 <= report["policy_tokens"] <= 600  # the guide's 400-600 token band
        for section in ("INSTRUCTIONS", "DEFINITIONS", "VIOLATES (1)", "SAFE (0)", "EXAMPLES"):
            assert section in policy.text


def test_shipped_policy_kinds() -> None:
    kinds = {p.name: load_policy(p).output for p in SHIPPED}
    assert {"toxic_simple", "toxic_chat", "spam", "is_good", "template"} <= set(kinds)
    assert kinds["spam"].kind == "json"
    assert kinds["is_good"].kind == "likert" and kinds["is_good"].labels == tuple("12345")
    assert kinds["is_good"].violation == ()
    assert kinds["toxic_chat"].kind == kinds["template"].kind == "binary"


def test_versions_cache_and_diff_across_edits(tmp_path: Path, tiny_o200k_model: Path) -> None:
    folder = write_policy(tmp_path / "rude")
    clf = Classifier(folder, tiny_o200k_model, sampling=SHORT)
    steer = steer_by_id(clf, {"insult": "1", "polite": "0", "sarcasm": "0"})
    first = run_policy_tests(None, clf, logits_processors=steer, message="first try")
    assert (first.version.label, first.new_version) == ("v1", True)
    assert [o.outcome for o in first.outcomes] == ["pass", "pass", "fail"]
    assert first.outcomes[2].got == "0" and first.outcomes[2].why() == "expected 1, got 0"
    assert (first.passed, first.failed, first.undetermined, first.ok) == (2, 1, 0, False)
    assert first.metrics["precision"] == 1.0 and first.metrics["recall"] == 0.5
    assert first.previous is None
    rows = clf.store.run_results(first.run)
    assert [r["item_id"] for r in rows] == ["insult", "polite", "sarcasm"]
    assert clf.store.run(first.run)["kind"] == "test"

    again = run_policy_tests(
        folder, {"model": tiny_o200k_model, "sampling": SHORT}, logits_processors=steer
    )
    assert (again.version.id, again.new_version) == (first.version.id, False)
    assert again.cached == again.total == 3  # unchanged policy: answered from the store
    assert [o.outcome for o in again.outcomes] == ["pass", "pass", "fail"]

    (folder / "policy.md").write_text(POLICY_V2)
    clf2 = Classifier(folder, tiny_o200k_model, sampling=SHORT)
    steer2 = steer_by_id(clf2, {"insult": "0", "polite": "0", "sarcasm": "1"})
    second = run_policy_tests(None, clf2, logits_processors=steer2)
    assert (second.version.label, second.new_version, second.cached) == ("v2", True, 0)
    prev = second.previous
    assert prev is not None and (prev.old.label, prev.new.label) == ("v1", "v2")
    assert [f.case_id for f in prev.fixed] == ["sarcasm"]
    assert [f.case_id for f in prev.broke] == ["insult"]
    assert prev.still_failing == [] and prev.still_passing == 1

    history = policy_history(clf.store, "rude")
    assert [(h.version.label, h.runs, h.last.passed) for h in history] == [
        ("v1", 2, 2),
        ("v2", 1, 2),
    ]
    assert history[0].version.message == "first try"
    diff = diff_versions(clf.store, "rude")
    assert "-Decide if the message is rude.\n" in diff.text_diff
    assert "+Decide if the message is rude or mocking.\n" in diff.text_diff
    assert [f.name for f in diff.fixed] == ["sarcasm"] and diff.notes == []

    (folder / "policy.md").write_text(POLICY_V1)  # reverting is the old version again
    back = run_policy_tests(
        folder, {"model": tiny_o200k_model, "sampling": SHORT}, logits_processors=steer
    )
    assert (back.version.label, back.new_version, back.cached) == ("v1", False, 3)


def test_junit_xml_counts_failures_and_undetermined(tmp_path: Path, tiny_o200k_model: Path) -> None:
    folder = write_policy(tmp_path / "rude")
    clf = Classifier(folder, tiny_o200k_model, sampling=SHORT)
    # pass, wrong answer, and an unparsable answer with a control character in it
    steer = steer_by_id(clf, {"insult": "1", "polite": "1", "sarcasm": "maybe\x01"})
    report = run_policy_tests(None, clf, logits_processors=steer)
    assert [o.outcome for o in report.outcomes] == ["pass", "fail", "undetermined"]
    out = write_junit(report, tmp_path / "ci" / "junit.xml")
    root = ET.parse(out).getroot()
    suite = root.find("testsuite")
    assert suite is not None
    assert (root.get("tests"), root.get("failures")) == ("3", "2")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "2", "0")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["insult", "polite", "sarcasm"]
    assert cases[0].find("failure") is None
    wrong, undetermined = cases[1].find("failure"), cases[2].find("failure")
    assert wrong is not None and undetermined is not None
    assert (wrong.get("type"), wrong.get("message")) == ("WrongAnswer", "expected 0, got 1")
    assert undetermined.get("type") == "Undetermined"
    assert undetermined.get("message").startswith("undetermined: expected 1, no verdict")
    assert "\\x01" in (undetermined.text or "")
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["version"] == "v1" and props["undetermined"] == "1"
    assert list(out.parent.iterdir()) == [out]  # no temp file left behind


def test_a_case_without_a_result_is_an_error_never_a_pass(
    tmp_path: Path, tiny_o200k_model: Path
) -> None:
    """A classifier that never answers one case: the run fails, it never reports 2 of 2."""
    folder = write_policy(tmp_path / "rude")
    clf = Classifier(folder, tiny_o200k_model, sampling=SHORT)
    steer = steer_by_id(clf, {"insult": "1", "polite": "0", "sarcasm": "1"})

    class Losing:
        """`clf`, except that the second case's result never comes back."""

        def __getattr__(self, name: str) -> object:
            return getattr(clf, name)

        def iter(self, items, **kw):  # type: ignore[no-untyped-def]
            return ((i, r) for i, r in clf.iter(items, **kw) if i != 1)

    with pytest.raises(EdgeGuardError, match=r"^1 of 3 cases got no result$"):
        run_policy_tests(None, Losing(), logits_processors=steer)  # type: ignore[arg-type]


def test_tags_select_cases(tmp_path: Path, tiny_o200k_model: Path) -> None:
    folder = write_policy(tmp_path / "rude")
    clf = Classifier(folder, tiny_o200k_model, sampling=SHORT)
    steer = steer_by_id(clf, {"sarcasm": "1"})
    report = run_policy_tests(None, clf, tags=["sarcasm"], logits_processors=steer)
    assert [o.case.id for o in report.outcomes] == ["sarcasm"] and report.ok
    with pytest.raises(EdgeGuardError, match="no cases of policy rude have the tags nope"):
        run_policy_tests(None, clf, tags=["nope"])


def test_cli_free_generation_is_undetermined_and_exits_1(
    tmp_path: Path, tiny_o200k_model: Path
) -> None:
    folder = write_policy(tmp_path / "rude")
    junit = tmp_path / "junit.xml"
    args = [
        "policies",
        "test",
        str(folder),
        "--model",
        str(tiny_o200k_model),
        "--max-tokens",
        "8",
        "--junit",
        str(junit),
    ]
    result = cli(*args)
    assert result.exit_code == 1, result.output
    assert "3 cases: 0 passed, 0 failed, 3 undetermined" in result.output
    assert result.output.count("UNDET") == 3 and "FAILED: 3 of 3" in result.output
    root = ET.parse(junit).getroot()
    assert root.get("failures") == "3"
    assert {f.get("type") for f in root.iter("failure")} == {"Undetermined"}
    as_json = json.loads(cli(*args[:-2], "--json").output)
    assert as_json["undetermined"] == 3 and as_json["cached"] == 3 and not as_json["ok"]


def test_cli_usage_errors_exit_2_with_one_line(tmp_path: Path) -> None:
    result = cli("policies", "test", str(tmp_path / "missing"), "--model", "synth:tiny")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: policy") and "not found" in lines[0]
    folder = write_policy(tmp_path / "bad")
    (folder / "cases.jsonl").write_text('{"text": "a", "expected": "1"}\n{"text": oops}\n')
    result = cli("policies", "test", str(folder), "--model", "synth:tiny")
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("error: ") and "cases.jsonl:2: invalid JSON" in (
        result.stderr
    )


@pytest.fixture
def steer_cli(monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, str]], None]:
    """Make CLI runs in this process answer per text (the CLI itself cannot steer)."""

    original = Classifier.__dict__["iter"]

    def install(answers: dict[str, str]) -> None:
        def steered(self: Classifier, texts, **kw):  # type: ignore[no-untyped-def]
            vocab = self.backend.vocab()
            kw["logits_processors"] = [
                ForcedTokens(harmony_script(vocab, answers[t])) for t in texts
            ]
            return original(self, texts, **kw)

        monkeypatch.setattr(Classifier, "iter", steered)

    return install


def test_cli_test_history_and_diff(
    tmp_path: Path, tiny_o200k_model: Path, steer_cli: Callable[[dict[str, str]], None]
) -> None:
    folder = write_policy(tmp_path / "rude")
    model = ["--model", str(tiny_o200k_model), "--max-tokens", "24"]
    steer_cli({"you are an idiot": "1", "thank you kindly": "0", "wow, what a genius": "1"})
    ok = cli("policies", "test", str(folder), *model, "--message", "baseline")
    assert ok.exit_code == 0, ok.output
    assert "rude v1" in ok.output and "OK: every case passed" in ok.output
    assert "precision 1.000  recall 1.000" in ok.output

    (folder / "policy.md").write_text(POLICY_V2)
    steer_cli({"you are an idiot": "1", "thank you kindly": "1", "wow, what a genius": "1"})
    bad = cli("policies", "test", str(folder), *model)
    assert bad.exit_code == 1
    assert "since v1 → v2: fixed 0 · broke 1 · still failing 0 (-polite)" in bad.output

    hist = cli("policies", "history", "rude")
    assert hist.exit_code == 0, hist.output
    assert "rude: 2 version(s)" in hist.output
    assert "3/3 passed (100%)" in hist.output and "“baseline”" in hist.output
    assert "2/3 passed (67%)" in hist.output

    diff = cli("policies", "diff", str(folder))
    assert diff.exit_code == 0, diff.output
    assert "+Decide if the message is rude or mocking." in diff.output
    assert "broke (1)" in diff.output and "polite" in diff.output and "fixed (0)" in diff.output
    as_json = json.loads(cli("policies", "diff", "rude", "v2", "v1", "--json").output)
    assert [f["case_id"] for f in as_json["fixed"]] == ["polite"]
    assert cli("policies", "diff", "rude", "v9").exit_code == 1


def test_history_of_an_untested_policy_is_an_error() -> None:
    result = cli("policies", "history", "never_tested")
    assert result.exit_code == 1
    assert "no tested versions of policy 'never_tested'" in result.stderr


def test_json_and_likert_answers_are_judged_in_their_kind(
    tmp_path: Path, tiny_o200k_model: Path
) -> None:
    spam = tmp_path / "spam"
    spam.mkdir()
    (spam / "policy.md").write_text(
        'Is it spam? Reply {"violation": 0|1, "policy_category": ...}\n'
    )
    (spam / "policy.toml").write_text('[output]\nkind = "json"\n')
    (spam / "cases.jsonl").write_text(
        '{"id": "scam", "text": "win a prize", "expected": 1}\n'
        '{"id": "ok", "text": "see you at 5", "expected": false}\n'
    )
    clf = Classifier(spam, tiny_o200k_model, sampling=SamplingConfig(max_tokens=48))
    steer = steer_by_id(
        clf,
        {
            "scam": '{"violation": 1, "policy_category": "scam"}',
            "ok": '{"violation": 1, "policy_category": "bulk"}',
        },
    )
    report = run_policy_tests(None, clf, logits_processors=steer)
    assert [(o.got, o.outcome) for o in report.outcomes] == [("1", "pass"), ("1", "fail")]
    assert report.metrics["kind"] == "binary" and report.metrics["fp"] == 1

    good = tmp_path / "good"
    good.mkdir()
    (good / "policy.md").write_text("Rate the opinion 1 (not good) to 5 (good). A number only.\n")
    (good / "policy.toml").write_text('[output]\nkind = "likert"\nmin = 1\nmax = 5\n')
    (good / "cases.jsonl").write_text(
        '{"id": "a", "text": "be kind", "expected": 5}\n'
        '{"id": "b", "text": "pizza is fine", "expected": "3"}\n'
    )
    clf = Classifier(good, tiny_o200k_model, sampling=SHORT)
    report = run_policy_tests(None, clf, logits_processors=steer_by_id(clf, {"a": "5", "b": "4"}))
    assert [(o.got, o.outcome) for o in report.outcomes] == [("5", "pass"), ("4", "fail")]
    assert report.metrics == {"kind": "likert", "determined": 2, "mae": 0.5, "within_one": 1.0}
