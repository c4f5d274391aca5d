"""Policy sets (loading, one-line errors, thresholds, flagged) and combined mode's strict
parser (bad JSON, unknown names, duplicates → every policy undetermined)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_guard.cli import main
from edge_guard.errors import PolicyError
from edge_guard.policy.combined import (
    combined_policy,
    member_verdicts,
    parse_violations,
    split_combined,
)
from edge_guard.policy.sets import adhoc_set, is_set_ref, load_set, resolve_policies
from edge_guard.policy.thresholds import apply_threshold, flag_label, flagged
from edge_guard.response import ModelResponse
from edge_guard.result import ClassificationResult, Verdict

NAMES = ["alpha", "beta", "gamma"]


def write_policy(folder: Path, name: str, *, kind: str = "binary", judges: str = "any") -> Path:
    d = folder / name
    d.mkdir(parents=True)
    (d / "policy.md").write_text(f"Is the message about {name}? Answer 1 if it is, 0 if not.\n")
    (d / "policy.toml").write_text(
        f'name = "{name}"\n[input]\njudges = "{judges}"\n[output]\nkind = "{kind}"\n'
    )
    return d


@pytest.fixture
def policy_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """alpha, beta, gamma (binary), delta (json), user_only (judges user), on the search path."""
    folder = tmp_path / "pols"
    for n in NAMES:
        write_policy(folder, n)
    write_policy(folder, "delta", kind="json")
    write_policy(folder, "user_only", judges="user")
    write_policy(folder, "reply_only", judges="assistant")
    (folder / "sets").mkdir()
    (folder / "sets" / "abc.toml").write_text(
        'name = "abc"\ndescription = "three"\npolicies = ["alpha", "beta", "gamma"]\n'
        "[thresholds]\nbeta = 0.25\n"
    )
    monkeypatch.setenv("EDGE_GUARD_POLICIES", str(folder))
    return folder


def test_shipped_sets_load() -> None:
    s = load_set("community")
    assert s.names == ["toxic_chat", "spam"]
    assert s.thresholds == {"toxic_chat": 0.3}
    assert [m.threshold for m in s.members] == [0.3, None]
    r = load_set("assistant_replies")
    assert r.names == ["harmful_assistance", "toxic_simple"]
    assert is_set_ref("community") and not is_set_ref("spam")


def test_set_from_search_path(policy_dir: Path) -> None:
    s = load_set("abc")
    assert (s.name, s.description, s.names) == ("abc", "three", NAMES)
    assert s.member("beta").threshold == 0.25 and s.member("alpha").threshold is None
    assert resolve_policies([], "abc").names == NAMES
    assert resolve_policies(["abc"]).names == NAMES  # `-p SET` works too
    assert resolve_policies(["gamma", "alpha"]).names == ["gamma", "alpha"]
    with pytest.raises(PolicyError, match=r"^give either --set or --policy/-p, not both$"):
        resolve_policies(["alpha"], "abc")
    with pytest.raises(PolicyError, match=r"^policy 'alpha' given twice$"):
        adhoc_set(["alpha", "beta", "alpha"])


BAD_SETS = [
    ('policies = ["alpha"]\ncolour = 1\n', "unknown key(s) 'colour'"),
    ("policies = []\n", "`policies` must be a non-empty list of policy names"),
    ('policies = "alpha"\n', "`policies` must be a non-empty list of policy names"),
    ('policies = ["alpha", "alpha"]\n', "policy 'alpha' is listed twice ('alpha' and 'alpha')"),
    ('policies = ["alpha", "nope"]\n', "policy 'nope': policy 'nope' not found"),
    (
        'policies = ["alpha", "delta"]\n[thresholds]\ndelta = 0.5\n',
        "threshold for 'delta': its output (json) has no P(violation) to threshold",
    ),
    (
        'policies = ["alpha"]\n[thresholds]\nalpha = 1.5\n',
        "threshold for 'alpha' must be in (0, 1], got 1.5",
    ),
    (
        'policies = ["alpha"]\n[thresholds]\nalpha = "high"\n',
        "threshold for 'alpha' must be a number, got 'high'",
    ),
    (
        'policies = ["alpha"]\n[thresholds]\nbeta = 0.5\n',
        "threshold for 'beta', which is not in `policies`",
    ),
    ('name = "bad name!"\npolicies = ["alpha"]\n', "`name` must be 1-64 letters"),
    (
        'policies = ["user_only", "reply_only"]\n',
        "its policies judge different inputs (user_only judges user, reply_only judges assistant)",
    ),
    ("policies = [\n", "invalid TOML"),
]


@pytest.mark.parametrize(("body", "message"), BAD_SETS)
def test_bad_sets_are_one_line_errors(
    policy_dir: Path, tmp_path: Path, body: str, message: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(PolicyError) as exc:
        load_set(path)
    assert message in str(exc.value)
    assert str(exc.value).startswith(f"{path}: ")
    assert "\n" not in str(exc.value)
    res = CliRunner().invoke(main, ["policies", "check", str(path)])
    assert res.exit_code == 1
    assert res.output.count("\n") == 1 and res.output.startswith("error: ")
    assert message in res.output


def test_unknown_set_names_the_known_ones(policy_dir: Path) -> None:
    with pytest.raises(PolicyError) as exc:
        load_set("nosuch")
    assert str(exc.value).startswith("policy set 'nosuch' not found")
    assert "abc" in str(exc.value) and "community" in str(exc.value)


def test_a_set_is_found_by_its_inner_name_by_every_door(
    policy_dir: Path, tmp_path: Path, tiny_o200k_model: Path
) -> None:
    """`find_set`, `load_set`, the CLI's --set / -p and the service look a set up the same
    way: its shown `name` (over another file's file name), its file name, its aliases."""
    from edge_guard.policy.sets import find_set, set_index
    from edge_guard.service.catalog import Catalog

    sets = policy_dir / "sets"
    (sets / "strict_file.toml").write_text('name = "strict"\npolicies = ["alpha"]\n')
    (sets / "strict.toml").write_text('name = "other"\npolicies = ["beta"]\naliases = ["al"]\n')
    (sets / "broken.toml").write_text("policies = [\n")
    assert find_set("strict") == sets / "strict_file.toml"  # a shown name wins over a file name
    assert find_set("strict_file") == sets / "strict_file.toml"
    assert find_set("other") == find_set("al") == sets / "strict.toml"
    assert find_set("broken") == sets / "broken.toml" and find_set("nope") is None
    assert load_set("strict").names == ["alpha"] and is_set_ref("strict")
    assert Catalog().set_paths() == set_index()  # the service's lookup is this one
    runner = CliRunner()
    res = runner.invoke(main, ["policies", "show", "strict"])
    assert res.exit_code == 0 and "- alpha" in res.output and "beta" not in res.output, res.output
    for args in (["--set", "strict"], ["-p", "strict"]):
        res = runner.invoke(
            main,
            [
                "classify",
                *args,
                "-m",
                str(tiny_o200k_model),
                "--max-tokens",
                "4",
                "--db",
                str(tmp_path / "s.db"),
                "--json",
                "hello",
            ],
        )
        assert res.exit_code == 0, res.output
        assert list(json.loads(res.stdout)["results"]) == ["alpha"]
    with pytest.raises(PolicyError, match=r"known: abc, .*broken, community, .*other, strict\)$"):
        load_set("nosuch")


def test_cli_sets_show_check(policy_dir: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(main, ["policies", "sets", "--json"])
    assert res.exit_code == 0
    rows = {r["name"]: r for r in json.loads(res.output)}
    assert rows["abc"]["policies"] == NAMES
    assert rows["community"]["policies"] == ["toxic_chat", "spam"]
    res = runner.invoke(main, ["policies", "show", "abc"])
    assert res.exit_code == 0
    assert "- beta" in res.output and "flag at P(violation) >= 0.25" in res.output
    res = runner.invoke(main, ["policies", "check", "abc", "--json"])
    assert res.exit_code == 0
    rep = json.loads(res.output)
    assert [m["name"] for m in rep["policies"]] == NAMES
    assert [m["threshold"] for m in rep["policies"]] == [None, 0.25, None]
    assert rep["separate_prefix_tokens"] == sum(m["prompt_prefix_tokens"] for m in rep["policies"])
    assert rep["combined_prefix_tokens"] > max(m["prompt_prefix_tokens"] for m in rep["policies"])


def test_flagged_never_reports_undetermined_as_not_flagged() -> None:
    assert flagged(["no_violation", "violation", "undetermined"]) is True
    assert flagged(["no_violation", "undetermined"]) is None
    assert flagged(["no_violation", "no_violation"]) is False
    assert flagged([]) is None
    assert [flag_label(f) for f in (True, None, False)] == [
        "flagged",
        "undetermined",
        "not_flagged",
    ]


def _result(verdict: bool | None, p: float | None) -> ClassificationResult:
    resp = ModelResponse(response="1" if verdict else "0", reasoning="", finish_reason="return")
    meta = {} if p is None else {"p_violation": p}
    return ClassificationResult(
        verdict,
        None if verdict is None else str(int(verdict)),
        None,
        meta,
        resp,
        verdict is not None,
    )


def test_threshold_sets_verdict_from_p_violation() -> None:
    assert apply_threshold(_result(False, 0.3), 0.25).verdict == Verdict.VIOLATION
    assert apply_threshold(_result(True, 0.2), 0.25).verdict == Verdict.NO_VIOLATION
    low = apply_threshold(_result(True, 0.2), 0.25)
    assert low.metadata == {
        "p_violation": 0.2,
        "threshold": 0.25,
        "model_verdict": "violation",
        "model_label": "1",
    }
    assert (low.binary_label, low.fine_grain_label) == (False, None)  # labels unknown: none
    assert apply_threshold(_result(None, 0.9), 0.25).verdict == Verdict.UNDETERMINED
    assert apply_threshold(_result(False, None), 0.25).verdict == Verdict.NO_VIOLATION
    assert apply_threshold(_result(False, 0.9), None).verdict == Verdict.NO_VIOLATION


def test_a_thresholded_result_is_consistent_in_every_field() -> None:
    from edge_guard.policy.core import load_policy

    pol = load_policy("toxic_simple")  # binary: "1" violates
    res = _result(True, 0.2)
    res.metadata["label_probs"] = {"0": 0.8, "1": 0.2}
    low = apply_threshold(res, 0.25, pol)
    assert (low.verdict, low.binary_label, low.fine_grain_label) == (
        Verdict.NO_VIOLATION,
        False,
        "0",
    )
    assert (low.metadata["model_verdict"], low.metadata["model_label"]) == ("violation", "1")
    again = apply_threshold(low, 0.1, pol)  # from the model's own answer, not the first threshold
    assert (again.verdict, again.binary_label, again.fine_grain_label) == (
        Verdict.VIOLATION,
        True,
        "1",
    )
    assert again.metadata["model_verdict"] == "violation"
    assert (res.verdict, res.binary_label, res.fine_grain_label) == (Verdict.VIOLATION, True, "1")


def test_a_likert_threshold_picks_the_decided_sides_likeliest_label(tmp_path: Path) -> None:
    from edge_guard.policy.core import load_policy

    (tmp_path / "lk").mkdir()
    (tmp_path / "lk" / "policy.toml").write_text(
        'name = "lk"\n[output]\nkind = "likert"\nmin = 1\nmax = 5\nviolation = ["4", "5"]\n'
    )
    (tmp_path / "lk" / "policy.md").write_text("Rate 1-5.\n")
    pol = load_policy(tmp_path / "lk")
    probs = {"1": 0.05, "2": 0.1, "3": 0.45, "4": 0.3, "5": 0.1}
    res = ClassificationResult(
        False,
        "3",
        3.4,
        {"p_violation": 0.4, "label_probs": probs},
        ModelResponse(response="3", reasoning="", finish_reason="return"),
        True,
    )
    up = apply_threshold(res, 0.35, pol)
    assert (up.verdict, up.binary_label, up.fine_grain_label) == (Verdict.VIOLATION, True, "4")
    assert up.float_label == 3.4 and up.metadata["model_label"] == "3"
    keep = apply_threshold(res, 0.5, pol)  # the verdict stands: the model's own label stays
    assert (keep.verdict, keep.binary_label, keep.fine_grain_label) == (
        Verdict.NO_VIOLATION,
        False,
        "3",
    )


V, N, U = Verdict.VIOLATION, Verdict.NO_VIOLATION, Verdict.UNDETERMINED
PARSE_CASES = [
    ('{"violations": ["beta"]}', [N, V, N], None),
    ('  {"violations": ["gamma", "alpha"]}\n', [V, N, V], None),
    ('{"violations": []}', [N, N, N], None),
    (
        '{"violations": ["beta", "beta"]}',
        [U, U, U],
        "policy name(s) ['beta'] listed more than once",
    ),
    ('{"violations": ["beta", "spam"]}', [U, U, U], "unknown policy name(s) ['spam']"),
    ('{"violations": ["Beta"]}', [U, U, U], "unknown policy name(s) ['Beta']"),
    ('{"violations": ["beta"]', [U, U, U], "answer is not JSON"),
    ('```json\n{"violations": []}\n```', [U, U, U], "answer is not JSON"),
    ('{"violations": []} and more', [U, U, U], "answer is not JSON"),
    ('["beta"]', [U, U, U], "answer is not a JSON object"),
    ('{"violations": "beta"}', [U, U, U], "'violations' is not a list of policy names"),
    ('{"violations": [1]}', [U, U, U], "'violations' is not a list of policy names"),
    ('{"violations": [], "rationale": "x"}', [U, U, U], "unexpected key(s) ['rationale']"),
    ('{"violation": 1}', [U, U, U], "unexpected key(s) ['violation']"),
    (
        '{"violations": [], "violations": ["beta"]}',
        [U, U, U],
        "key 'violations' appears more than once",
    ),
    ("", [U, U, U], "answer is not JSON"),
    (None, [U, U, U], "no complete final answer"),
]


@pytest.mark.parametrize(("answer", "verdicts", "why"), PARSE_CASES)
def test_combined_parser_is_strict(
    answer: str | None, verdicts: list[Verdict], why: str | None
) -> None:
    assert member_verdicts(answer, NAMES) == dict(zip(NAMES, verdicts, strict=True))
    assert parse_violations(answer, NAMES)[1] == why


def test_combined_policy_and_split(policy_dir: Path) -> None:
    s = load_set("abc")
    pol = combined_policy(s)
    assert pol.name == "combined:abc"
    for n in NAMES:
        assert f"## POLICY `{n}`" in pol.text
    assert combined_policy(adhoc_set(["alpha", "beta"])).hash != pol.hash
    assert pol.judges == "any"
    assert combined_policy(adhoc_set(["alpha", "reply_only"])).judges == "assistant"
    resp = ModelResponse(
        response='{"violations": ["gamma"]}', reasoning="r", finish_reason="return"
    )
    parsed = pol.parser(resp)  # type: ignore[misc]
    parsed.text, parsed.policy, parsed.key = "t", pol.name, "k" * 64
    parts = split_combined(parsed, s)
    assert {n: str(r.verdict) for n, r in parts.items()} == {
        "alpha": "no_violation",
        "beta": "no_violation",
        "gamma": "violation",
    }
    assert [r.policy for r in parts.values()] == NAMES
    assert len({r.key for r in parts.values()}) == 3
    cut = ModelResponse(response=None, reasoning="r", finish_reason="length")
    bad = pol.parser(cut)  # type: ignore[misc]
    assert {str(r.verdict) for r in split_combined(bad, s).values()} == {"undetermined"}
    assert bad.metadata["combined_error"] == "no complete final answer"
