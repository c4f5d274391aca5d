"""Settings: flag > env > config.toml > default; the keyword API; multi-policy classifiers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from edge_guard import ClassificationResult, MultiResult, Verdict, classify
from edge_guard.api import build_classifier
from edge_guard.backends.local import LocalBackend
from edge_guard.classification.classifier import Classifier
from edge_guard.engine.sampling import DEFAULT_MAX_TOKENS, SamplingConfig
from edge_guard.errors import EdgeGuardError
from edge_guard.response import ModelResponse
from edge_guard.settings.resolve import SettingError, Settings, resolve_settings
from edge_guard.store import Store

SHORT = SamplingConfig(max_tokens=12)
CONFIG = {
    "model": "synth:from-config",
    "prompt": {"effort": "high", "style": "chat-template"},
    "sampling": {"max_tokens": 11, "seed": 5},
    "engine": {"ctx": 2048, "gpu_layers": 3},
    "store": {"db": "/cfg/store.db", "use_cache": False},
    "backend": {"kind": "server", "url": "http://cfg:1"},
}
ENV = {
    "EDGE_GUARD_MAX_TOKENS": "9",
    "EDGE_GUARD_EFFORT": "low",
    "EDGE_GUARD_CTX": "4096",
    "EDGE_GUARD_SERVER_URL": "http://env:2/",
}
FLAGS = {"max_tokens": 7, "effort": "medium", "ctx": 8192, "url": "http://flag:3"}


def test_precedence_flag_env_config_default() -> None:
    s = resolve_settings(FLAGS, env=ENV, config=CONFIG)
    assert (s.max_tokens, s.effort, s.ctx, s.url) == (7, "medium", 8192, "http://flag:3")
    s = resolve_settings({}, env=ENV, config=CONFIG)
    assert (s.max_tokens, s.effort, s.ctx, s.url) == (9, "low", 4096, "http://env:2")
    s = resolve_settings({}, env={}, config=CONFIG)
    assert (s.max_tokens, s.effort, s.ctx, s.url) == (11, "high", 2048, "http://cfg:1")
    assert (s.model, s.style, s.seed, s.gpu_layers, s.db, s.use_cache, s.backend) == (
        "synth:from-config",
        "chat-template",
        5,
        3,
        "/cfg/store.db",
        False,
        "server",
    )
    s = resolve_settings({}, env={}, config={})
    assert s == Settings()
    assert (s.max_tokens, s.effort, s.ctx, s.url, s.backend, s.style) == (
        DEFAULT_MAX_TOKENS,
        "medium",
        16384,
        None,
        "local",
        "harmony",
    )


def test_config_file_is_read_from_path(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('model = "synth:x"\n[sampling]\nmax_tokens = 33\ntemperature = 0.5\n')
    s = resolve_settings({"seed": 2}, env={}, config=path)
    assert (s.model, s.max_tokens, s.temperature, s.seed) == ("synth:x", 33, 0.5, 2)
    assert s.sampling() == SamplingConfig(temperature=0.5, seed=2, max_tokens=33)


@pytest.mark.parametrize(
    ("flags", "env", "config", "message"),
    [
        ({"max_token": 3}, {}, {}, "unknown setting(s) max_token"),
        (
            {},
            {"EDGE_GUARD_MAX_TOKENS": "lots"},
            {},
            "max_tokens = 'lots' (from $EDGE_GUARD_MAX_TOKENS): must be an integer",
        ),
        (
            {},
            {},
            {"sampling": {"max_tokens": 0}},
            "max_tokens = 0 (from [sampling] in the given config): must be >= 1",
        ),
        ({}, {}, {"prompt": {"efort": "low"}}, "the given config: unknown setting(s) prompt.efort"),
        ({"effort": "extreme"}, {}, {}, "effort='extreme': must be one of low, medium, high"),
        ({"seed": -1}, {}, {}, "seed=-1: must be from 0 to 9223372036854775807"),
        ({}, {"EDGE_GUARD_SEED": "-1"}, {}, "seed = '-1' (from $EDGE_GUARD_SEED): must be from 0"),
        ({"temperature": float("nan")}, {}, {}, "temperature=nan: must be a finite number >= 0"),
        ({"gpu_layers": -2}, {}, {}, "gpu_layers=-2: must be 'auto', -1 (all)"),
        (
            {"cascade": "0.9:0.1"},
            {},
            {},
            "cascade='0.9:0.1': bounds must satisfy 0 <= LOW <= HIGH <= 1",
        ),
        ({"backend": "server"}, {}, {}, "needs a URL"),
    ],
)
def test_bad_settings_are_one_line_errors(
    flags: dict[str, Any], env: dict[str, str], config: dict[str, Any], message: str
) -> None:
    with pytest.raises(EdgeGuardError) as info:
        resolve_settings(flags, env=env, config=config)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("door", "message"),
    [
        ("cli", "--seed -1: must be from 0 to 9223372036854775807"),
        ("python", "seed=-1: must be from 0 to 9223372036854775807"),
        ("http", "request field 'seed' = -1: must be from 0 to 9223372036854775807"),
        ("tui", "--seed -1: must be from 0"),
    ],
)
def test_a_bad_value_is_named_in_the_doors_terms(door: str, message: str) -> None:
    with pytest.raises(SettingError) as info:
        resolve_settings({"seed": -1}, env={}, config={}, door=door)
    assert str(info.value) == message if door != "tui" else message in str(info.value)
    assert (info.value.setting, info.value.exit_code) == ("seed", 2)
    with pytest.raises(SettingError, match=r"^the max tokens box = 0: must be >= 1$"):
        resolve_settings({"max_tokens": 0}, env={}, config={}, door="tui")


def test_request_overrides_resolve_over_a_base_spec_and_are_checked() -> None:
    base = resolve_settings({"effort": "low", "date": "2020-01-01"}, env={}, config={})
    s = resolve_settings({"reasoning": "none", "cascade": (0.2, 0.8)}, base=base, door="http")
    assert (s.effort, s.date, s.reasoning, s.cascade) == ("low", "2020-01-01", "none", "0.2:0.8")
    assert s.request() == {
        "style": "harmony",
        "effort": "low",
        "date": "2020-01-01",
        "reasoning": "none",
        "cascade": "0.2:0.8",
        "temperature": 0.0,
        "seed": 0,
        "max_tokens": DEFAULT_MAX_TOKENS,
        "truncate": False,
    }
    with pytest.raises(SettingError, match="request field 'cascade' = 'abc': is not LOW:HIGH"):
        resolve_settings({"cascade": "abc"}, base=base, door="http")


def test_cli_negative_seed_is_a_usage_error_naming_the_flag(tiny_o200k_model: Path) -> None:
    from edge_guard.cli import main

    out = CliRunner().invoke(
        main,
        [
            "classify",
            "-p",
            "toxic_simple",
            "-m",
            str(tiny_o200k_model),
            "--seed",
            "-1",
            "--temperature",
            "0.7",
            "x",
        ],
    )
    assert out.exit_code == 2
    assert out.output.strip().splitlines() == [
        "error: --seed -1: must be from 0 to 9223372036854775807"
    ]


def test_python_negative_seed_is_refused_naming_the_keyword(tiny_o200k_model: Path) -> None:
    with pytest.raises(SettingError, match=r"^seed=-1: must be from 0 to 9223372036854775807$"):
        classify("x", "toxic_simple", model=tiny_o200k_model, seed=-1, temperature=0.7)


def test_engine_and_backend_objects_from_settings() -> None:
    s = Settings(ctx=2048, gpu_layers="7", threads=2, parallel=4, force=True)
    e = s.engine_settings()
    assert (e.n_ctx, e.n_gpu_layers, e.n_threads, e.n_parallel, e.extra) == (
        2048,
        7,
        2,
        4,
        {"force": True},
    )
    b = resolve_settings({"url": "http://a:1/"}, env={}, config={}).backend_config()
    assert (b.kind, b.url) == ("server", "http://a:1")  # --url alone picks the server


def _spy_execute(monkeypatch: pytest.MonkeyPatch) -> list[list[Any]]:
    """Record the requests of every LocalBackend.execute call."""
    calls: list[list[Any]] = []
    original = LocalBackend.execute

    def spy(self: LocalBackend, requests: Any, n_parallel: int | None = None) -> Any:
        calls.append(list(requests))
        yield from original(self, requests, n_parallel=n_parallel)

    monkeypatch.setattr(LocalBackend, "execute", spy)
    return calls


def test_keyword_api_max_tokens_reaches_the_request(
    tiny_o200k_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _spy_execute(monkeypatch)
    r = classify(
        "x",
        "toxic_simple",
        model=tiny_o200k_model,
        max_tokens=7,
        effort="low",
        temperature=0.0,
        parallel=2,
    )
    assert [[req.sampling.max_tokens for req in c] for c in calls] == [[7]]
    assert r.model_response.timings.output_tokens == 7
    row = Store().get(r.key)
    assert (json.loads(row["sampling"])["max_tokens"], row["effort"]) == (7, "low")


def test_keyword_api_rejects_unknown_and_conflicting_keywords(tiny_o200k_model: Path) -> None:
    with pytest.raises(TypeError, match="max_token"):
        classify("x", "toxic_simple", model=tiny_o200k_model, max_token=7)  # type: ignore[call-arg]
    with pytest.raises(EdgeGuardError, match="either sampling= or temperature/seed/max_tokens"):
        classify("x", "toxic_simple", model=tiny_o200k_model, sampling=SHORT, max_tokens=7)


def test_cli_flag_default_yields_to_config(
    tiny_o200k_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge_guard.cli import main

    cfg = tmp_path / "config.toml"
    cfg.write_text("[sampling]\nmax_tokens = 5\n")
    monkeypatch.setenv("EDGE_GUARD_CONFIG", str(cfg))

    def run(*extra: str) -> int:
        args = ["classify", "-p", "toxic_simple", "-m", str(tiny_o200k_model), "--json", *extra]
        res = CliRunner().invoke(main, [*args, "hello"])
        assert res.exit_code == 0, res.output
        return json.loads(res.output)["timings"]["output_tokens"]

    assert run() == 5  # config over the flag's default
    monkeypatch.setenv("EDGE_GUARD_MAX_TOKENS", "6")
    assert run() == 6  # environment over config
    assert run("--max-tokens", "4") == 4  # flag over environment


def test_multi_policy_classifier_one_execute_six_rows(
    tiny_o200k_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _spy_execute(monkeypatch)
    clf = Classifier(["toxic_simple", "toxic_chat"], tiny_o200k_model, sampling=SHORT)
    assert [p.name for p in clf.policies] == ["toxic_simple", "toxic_chat"]
    assert clf.policy.name == "toxic_simple"
    texts = ["one", "two", "three"]
    pairs = sorted((i, name) for i, name, _r in clf.iter_pairs(texts))
    assert pairs == [(i, n) for i in range(3) for n in ("toxic_chat", "toxic_simple")]
    assert [len(c) for c in calls] == [6]
    rows = clf.store.query("SELECT text, policy_name FROM results ORDER BY text, policy_name")
    assert [(r["text"], r["policy_name"]) for r in rows] == [
        ("one", "toxic_chat"),
        ("one", "toxic_simple"),
        ("three", "toxic_chat"),
        ("three", "toxic_simple"),
        ("two", "toxic_chat"),
        ("two", "toxic_simple"),
    ]
    multi = clf.classify(texts)  # all cached now: no further execute
    assert len(calls) == 1
    assert [type(m) for m in multi] == [MultiResult] * 3
    assert [m.text for m in multi] == texts
    assert [list(m.results) for m in multi] == [["toxic_simple", "toxic_chat"]] * 3
    assert all(r.cached for m in multi for r in m.results.values())


def test_classify_list_of_policies_returns_multi_results(tiny_o200k_model: Path) -> None:
    out = classify(
        ["a", "b"], ["toxic_simple", "toxic_chat"], model=tiny_o200k_model, max_tokens=12
    )
    assert [m.text for m in out] == ["a", "b"]
    assert [sorted(m.results) for m in out] == [["toxic_chat", "toxic_simple"]] * 2
    assert [m.flagged for m in out] == [None, None]  # cut off: undetermined, never "safe"
    one = classify("a", ["toxic_simple", "toxic_chat"], model=tiny_o200k_model, max_tokens=12)
    assert (
        isinstance(one, MultiResult)
        and one.results["toxic_chat"].key == out[0].results["toxic_chat"].key
    )


def test_same_policy_twice_is_an_error(tiny_o200k_model: Path) -> None:
    with pytest.raises(EdgeGuardError, match="policy toxic_simple given more than once"):
        build_classifier(["toxic_simple", "toxic_simple"], Settings(model=str(tiny_o200k_model)))


def _result(verdict: Verdict) -> ClassificationResult:
    label = {Verdict.VIOLATION: True, Verdict.NO_VIOLATION: False}.get(verdict)
    return ClassificationResult(
        label,
        None,
        None,
        {},
        ModelResponse.failed("x", [], "m") if label is None else None,
        label is not None,
    )


@pytest.mark.parametrize(
    ("verdicts", "flagged"),
    [
        ((Verdict.NO_VIOLATION, Verdict.VIOLATION, Verdict.UNDETERMINED), True),
        ((Verdict.NO_VIOLATION, Verdict.UNDETERMINED), None),
        ((Verdict.NO_VIOLATION, Verdict.NO_VIOLATION), False),
    ],
)
def test_multi_result_flagged(verdicts: tuple[Verdict, ...], flagged: bool | None) -> None:
    m = MultiResult("t", {f"p{k}": _result(v) for k, v in enumerate(verdicts)})
    assert [r.verdict for r in m.results.values()] == list(verdicts)
    assert m.flagged is flagged
    assert m.to_dict()["flagged"] is flagged
