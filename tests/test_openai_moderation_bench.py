"""`edge-guard bench --workload moderation`: one label, separate labels, the cheap path and full
reasoning combined, per text, on one engine; the requests are exactly taxonomy mode's and
the tokens each variant makes the engine evaluate are the ones the design says."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from edge_guard.bench.moderation import (
    VARIANTS,
    ModerationBenchConfig,
    format_moderation_table,
    requests_for,
    run_moderation_bench,
)
from edge_guard.classification.onepass import answer_header
from edge_guard.engine.engine import Engine
from edge_guard.engine.step import branch_trie
from edge_guard.policy.sets import load_set
from edge_guard.policy.taxonomy import taxonomy_text
from edge_guard.runs.taxonomy import make_cues
from tests.test_policy_sets import NAMES, write_policy


@pytest.fixture
def abc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    folder = tmp_path / "pols"
    for n in NAMES:
        write_policy(folder, n)
    (folder / "sets").mkdir()
    (folder / "sets" / "abc.toml").write_text('policies = ["alpha", "beta", "gamma"]\n')
    monkeypatch.setenv("EDGE_GUARD_POLICIES", str(folder))
    return load_set("abc")


def test_bench_times_every_variant_and_counts_the_designed_tokens(
    tiny_o200k_model: Path, abc: Any
) -> None:
    cfg = ModerationBenchConfig(policy_set="abc", n=2, text_tokens=16, output_tokens=4, parallel=4)
    report = run_moderation_bench(cfg, str(tiny_o200k_model))
    res = report["results"]
    assert list(res) == list(VARIANTS)
    assert [res[v]["requests_per_text"] for v in VARIANTS] == [1, 3, 1, 1, 1]
    assert all(res[v]["errors"] == 0 and res[v]["texts"] == 2 for v in VARIANTS)
    engine = Engine(tiny_o200k_model, n_ctx=4096, n_parallel=1, prefix_snapshots=False)
    try:
        from edge_guard.bench.core import synthetic_text

        text = synthetic_text(engine.vocab.encoder.encode, 16, 2)  # the first timed text
        prompt = engine.renderer.render(taxonomy_text(abc), text)
        cues = make_cues(abc, engine.vocab, "none")
        sep = requests_for(engine, abc, text, "separate", 4)
        header = len(answer_header(engine.vocab, "none"))
    finally:
        engine.close()
    text_part = len(prompt.token_ids) - prompt.prefix_len
    # cheap: the text (+ header + shared cue start) once, each member its own cue (a start
    # common to several cues once), all in one decode
    nodes = branch_trie([(k, k, c) for k, (_, c) in enumerate(cues.cues)])
    cheap = text_part + len(cues.shared) + len(nodes)
    separate = sum(len(r.prompt_ids) - (r.prefix_len or 0) for r in sep)
    assert res["cheap"]["tokens_per_text"] == pytest.approx(cheap, abs=2)
    # the floor: the text and the answer header after the taxonomy prompt, one decode, no cue
    assert res["text_once"]["tokens_per_text"] == pytest.approx(text_part + header, abs=2)
    assert res["text_once"]["decodes_per_text"] == 1
    assert res["cheap"]["decodes_per_text"] == 1
    assert res["separate"]["tokens_per_text"] == pytest.approx(separate, abs=6)
    # full reasoning: the text, then each generated token but the last
    assert res["full_combined"]["tokens_per_text"] == pytest.approx(text_part + 3, abs=2)
    r = report["ratios"]
    assert r["cheap_over_one_label"] == pytest.approx(
        res["cheap"]["s_per_text"] / res["one_label"]["s_per_text"]
    )
    assert r["meets_cheap_goal"] == (r["cheap_over_one_label"] <= 2.0)
    table = format_moderation_table(report)
    assert "cheap path (3 scores, one prompt)" in table and "goal >= 5" in table
    assert r["text_once_over_one_label"] == pytest.approx(
        res["text_once"]["s_per_text"] / res["one_label"]["s_per_text"]
    )
    assert f"text once over one label = {r['text_once_over_one_label']:.2f}" in table
    beyond = "above the cheap path's goal (2): no cue design meets it on this machine"
    assert (beyond in table) == (r["text_once_over_one_label"] > 2.0)
    over = {**report, "ratios": {**r, "text_once_over_one_label": 2.19}}
    assert beyond in format_moderation_table(over)
    under = {**report, "ratios": {**r, "text_once_over_one_label": 1.5}}
    assert beyond not in format_moderation_table(under)
    assert f"cheap over text once = {r['cheap_over_text_once']:.2f}" in table
    # the engine's rule on a CPU: flash attention off (batch-invariant scores), and said so
    assert report["engine"]["flash_attn"] is False and "flash attention off" in table


def test_bench_cli_runs_the_moderation_workload(tiny_o200k_model: Path) -> None:
    from edge_guard.cli import main

    res = CliRunner().invoke(
        main,
        [
            "bench",
            "--workload",
            "moderation",
            "--model",
            str(tiny_o200k_model),
            "--n",
            "1",
            "--text-tokens",
            "8",
            "--output-tokens",
            "2",
            "--variants",
            "one_label,cheap",
            "--flash-attn",
            "on",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    report = json.loads(res.output[res.output.index("{") :])
    assert report["workload"]["set"] == "openai-moderation" and report["workload"]["policies"] == 13
    assert report["results"]["cheap"]["requests_per_text"] == 1
    assert list(report["results"]) == ["one_label", "cheap"]
    assert report["engine"]["flash_attn"] is True  # --flash-attn on reaches the engine


def test_flash_attn_is_refused_where_the_workload_cannot_use_it() -> None:
    from edge_guard.cli import main

    res = CliRunner().invoke(main, ["bench", "--synth", "tiny", "--flash-attn", "on"])
    assert res.exit_code != 0
    assert "--flash-attn applies to --workload moderation" in res.output


def test_variants_pick_some_of_the_moderation_variants() -> None:
    from edge_guard.bench.moderation import moderation_variants
    from edge_guard.errors import EdgeGuardError

    assert moderation_variants("separate,one_label, cheap") == ("one_label", "separate", "cheap")
    assert moderation_variants("cheap,text_once") == ("text_once", "cheap")
    with pytest.raises(EdgeGuardError, match="unknown moderation variant 'cold'"):
        moderation_variants("cheap,cold")
    # another workload's list is refused, not replaced by every variant (a 45-minute run)
    with pytest.raises(EdgeGuardError, match="unknown moderation variant 'cold'"):
        moderation_variants("cold,llama_cpp,sequential,parallel,threads")
    with pytest.raises(EdgeGuardError, match="no variant given"):
        moderation_variants(" , ")


def test_the_moderation_workloads_run_every_variant_unless_told_otherwise() -> None:
    from edge_guard.bench.workloads import apply_workload
    from edge_guard.cli import main

    params = {"variants": "cold,llama_cpp,sequential,parallel,threads"}  # the CLI's default
    for name in ("moderation", "moderation-laptop"):
        assert apply_workload(name, params, set())["variants"] == ",".join(VARIANTS)
        assert apply_workload(name, {"variants": "cheap"}, {"variants"})["variants"] == "cheap"
    res = CliRunner().invoke(main, ["bench", "--workload", "moderation", "--variants", "chep"])
    assert res.exit_code != 0
    assert "unknown moderation variant 'chep'" in res.output
