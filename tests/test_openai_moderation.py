"""The openai-moderation set (issue 29): 13 policies named by OpenAI's category keys, each
in the gpt-oss-safeguard layout, 400-600 o200k tokens, >= 10 golden cases with borderline
ones, passing `policies check`; set aliases; taxonomy mode's prompt and strict parser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_guard.cli import main
from edge_guard.errors import PolicyError
from edge_guard.harmony.vocab import o200k_harmony_vocab
from edge_guard.policy.cases import policy_cases
from edge_guard.policy.sets import find_set, is_set_ref, load_set
from edge_guard.policy.taxonomy import (
    check_members,
    cue_text,
    parse_answer,
    split_answer,
    taxonomy_policy,
    taxonomy_text,
)
from edge_guard.response import ModelResponse
from edge_guard.result import ClassificationResult, Verdict

KEYS = [
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
]
ALIASES = [
    "omni-moderation-latest",
    "omni-moderation-2024-09-26",
    "text-moderation-latest",
    "text-moderation-stable",
]
SECTIONS = ["## INSTRUCTIONS", "## DEFINITIONS", "## VIOLATES (1)", "## SAFE (0)", "## EXAMPLES"]
BORDERLINE = {"quoting", "fiction", "news", "recovery", "sexed"}


@pytest.fixture(scope="module")
def pset():  # type: ignore[no-untyped-def]
    return load_set("openai-moderation")


def test_members_are_openais_13_keys_in_order(pset) -> None:  # type: ignore[no-untyped-def]
    assert pset.names == KEYS
    assert tuple(pset.aliases) == tuple(ALIASES)
    for m in pset.members:
        assert m.policy.output.kind == "binary" and m.policy.output.violation == ("1",)
        assert m.policy.judges == "any" and m.threshold is None
        assert "/" not in m.policy.path.name  # the key may hold '/', the folder cannot


def test_each_policy_is_in_the_guide_layout_and_400_to_600_tokens(pset) -> None:  # type: ignore[no-untyped-def]
    enc = o200k_harmony_vocab().encoder.encode
    for m in pset.members:
        n = len(enc(m.policy.text))
        assert 400 <= n <= 600, (m.name, n)
        at = [m.policy.text.index(s) for s in SECTIONS]
        assert at == sorted(at), m.name
        assert f"`{m.name}`" in m.policy.text.split("## DEFINITIONS")[0]  # names its key
        assert "Output format:" in m.policy.text


def test_each_policy_has_ten_golden_cases_with_borderline_ones(pset) -> None:  # type: ignore[no-untyped-def]
    seen_tags: set[str] = set()
    for m in pset.members:
        cases = policy_cases(m.policy)
        assert len(cases) >= 10, m.name
        assert {c.expected for c in cases} == {"0", "1"}, m.name
        tags = [set(c.tags) for c in cases]
        assert sum("borderline" in t for t in tags) >= 4, m.name
        seen_tags |= set().union(*tags)
    assert seen_tags >= BORDERLINE


def test_every_policy_passes_policies_check_without_warnings(pset) -> None:  # type: ignore[no-untyped-def]
    runner = CliRunner()
    for m in pset.members:
        res = runner.invoke(main, ["policies", "check", str(m.policy.path), "--json"])
        assert res.exit_code == 0, res.output
        report = json.loads(res.output)
        assert report["name"] == m.name and report["warnings"] == []
    res = runner.invoke(main, ["policies", "check", "omni-moderation-latest"])
    assert res.exit_code == 0, res.output
    assert "set openai-moderation — 13 policies" in res.output


# -- aliases ---------------------------------------------------------------------------------
@pytest.mark.parametrize("alias", ALIASES)
def test_the_set_loads_by_each_alias(alias: str) -> None:
    assert is_set_ref(alias)
    s = load_set(alias)
    assert s.name == "openai-moderation" and s.names == KEYS
    assert find_set(alias) == find_set("openai-moderation")
    assert s.as_dict()["aliases"] == ALIASES


def test_a_sets_own_name_wins_over_an_alias_and_bad_aliases_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "pols"
    (folder / "sets").mkdir(parents=True)
    (folder / "sets" / "text-moderation-latest.toml").write_text(
        'policies = ["toxic_simple"]\naliases = ["mine"]\n'
    )
    monkeypatch.setenv("EDGE_GUARD_POLICIES", str(folder))
    assert load_set("text-moderation-latest").names == ["toxic_simple"]
    assert load_set("mine").name == "text-moderation-latest"
    assert load_set("omni-moderation-latest").name == "openai-moderation"
    (folder / "sets" / "bad.toml").write_text('policies = ["toxic_simple"]\naliases = "x"\n')
    with pytest.raises(PolicyError, match="`aliases` must be a list of names"):
        load_set("bad")
    (folder / "sets" / "bad.toml").write_text('policies = ["toxic_simple"]\naliases = ["a b"]\n')
    with pytest.raises(PolicyError, match="`aliases` must be a list"):
        load_set("bad")
    assert find_set("no-such-alias") is None


# -- taxonomy mode: prompt and strict parser ---------------------------------------------------
def test_taxonomy_text_holds_every_policy_and_the_compact_format(pset) -> None:  # type: ignore[no-untyped-def]
    text = taxonomy_text(pset)
    for m in pset.members:
        assert f'## POLICY "{m.name}"' in text and m.policy.text.strip() in text
    example = ",".join(f'"{k}":{int(k == "harassment")}' for k in KEYS)
    assert "{" + example + "}" in text
    assert cue_text("self-harm/intent") == '{"self-harm/intent":'
    assert taxonomy_policy(pset).output.kind == "json"


def test_taxonomy_needs_binary_members() -> None:
    from edge_guard.policy.sets import adhoc_set

    with pytest.raises(PolicyError, match="taxonomy mode needs binary"):
        check_members(adhoc_set(["toxic_simple", "spam"]))


def _answer(values: dict[str, object]) -> str:
    return json.dumps(values, separators=(",", ":"))


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (None, "no complete final answer"),
        ("harassment: 1", "not JSON"),
        ("[1, 0]", "not a JSON object"),
        ('{"harassment":1,"harassment":0}', "more than once"),
        ('{"harassment":1,"spam":0}', "unknown policy"),
        ('{"harassment":1}', "no answer for"),
        ('{"harassment":true,"hate":0}', "not 0 or 1"),
        ('{"harassment":"1","hate":0}', "not 0 or 1"),
        ('{"harassment":2,"hate":0}', "not 0 or 1"),
    ],
)
def test_parse_answer_is_strict(answer: str | None, why: str) -> None:
    values, error = parse_answer(answer, ["harassment", "hate"])
    assert values is None and why in (error or "")


def test_parse_answer_any_order_and_split(pset) -> None:  # type: ignore[no-untyped-def]
    values = {k: int(k in ("hate", "violence")) for k in reversed(KEYS)}
    got, why = parse_answer(_answer(values), KEYS)
    assert why is None and list(got or {}) == KEYS and got["hate"] == 1
    policy = taxonomy_policy(pset)
    resp = ModelResponse(_answer(values), "thinking", None)
    result = policy.parser(resp)  # type: ignore[misc]
    result.key, result.policy = "k", policy.name
    split = split_answer(result, pset)
    assert list(split) == KEYS
    assert [split[k].verdict for k in ("hate", "violence", "sexual")] == [
        Verdict.VIOLATION,
        Verdict.VIOLATION,
        Verdict.NO_VIOLATION,
    ]
    assert split["hate"].fine_grain_label == "1" and split["sexual"].fine_grain_label == "0"
    assert len({r.key for r in split.values()}) == 13
    bad = policy.parser(ModelResponse('{"hate":1}', "", None))  # type: ignore[misc]
    assert all(r.undetermined for r in split_answer(bad, pset).values())
    cut = ClassificationResult(None, None, None, {}, ModelResponse(None, "", "length"), False)
    assert all(r.verdict == Verdict.UNDETERMINED for r in split_answer(cut, pset).values())
