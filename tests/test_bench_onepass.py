"""`edge-guard bench`'s one-pass and cascade variants and named workloads (no timing claims)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_guard.bench.onepass import band_for_share
from edge_guard.bench.workloads import WORKLOADS, apply_workload
from edge_guard.classification.cascade import escalates
from edge_guard.cli import main
from edge_guard.errors import EdgeGuardError

SCORES = [0.1, 0.5, 0.3, 0.9, 0.7, 0.2, 0.8, 0.4, 0.6, 0.05]


@pytest.mark.parametrize(
    ("share", "band"),
    [
        (0.1, (0.35, 0.45, 1)),
        (0.3, (0.25, 0.55, 3)),
        (0.5, (0.15, 0.65, 5)),
        (0.01, (0.35, 0.45, 1)),
        (1.0, (0.0, 1.0, 10)),
    ],
)
def test_band_from_quantiles_escalates_exactly_that_share(share: float, band: tuple) -> None:
    # each bound halfway to the next score outside: a rescoring's last-bit rounding is safe
    assert band_for_share(SCORES, share) == pytest.approx(band)
    assert sum(escalates(p, band[:2]) for p in SCORES) == band[2]


def test_workload_fills_only_options_not_given() -> None:
    params = {
        "synth": None,
        "model": None,
        "policy_tokens": 1000,
        "text_tokens": 64,
        "output_tokens": 16,
        "n": 5,
        "baseline_n": 10,
        "variants": "parallel",
    }
    got = apply_workload("laptop", params, {"n"})
    assert got["n"] == 5 and got["synth"] == "20b-shape" and got["policy_tokens"] == 600
    assert got["output_tokens"] == 128 and got["roofline_repeats"] == 1
    assert got["roofline_steps"] == 32
    assert got["variants"] == WORKLOADS["laptop"]["variants"]
    assert apply_workload("laptop", {**params, "model": "x.gguf"}, {"model"})["synth"] is None
    assert apply_workload(None, params, set()) == params
    with pytest.raises(EdgeGuardError, match="unknown workload 'huge'"):
        apply_workload("huge", params, set())


def test_bench_one_pass_and_cascade_variants(tiny_o200k_model: Path) -> None:
    args = [
        "bench",
        "--model",
        str(tiny_o200k_model),
        "--policy-tokens",
        "40",
        "--text-tokens",
        "8",
        "--output-tokens",
        "3",
        "--n",
        "10",
        "--parallel",
        "4",
        "--threads",
        "1",
        "--variants",
        "parallel,one_pass,cascade_10,cascade_30",
        "--json",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    res = report["results"]
    assert set(res) == {
        "parallel",
        "one_pass",
        "cascade_10",
        "cascade_30",
        "roofline",
        "one_pass_roofline",
    }
    assert res["one_pass"]["output_tokens"] == 0 and res["one_pass"]["unscored"] == 0
    assert (res["cascade_10"]["escalated"], res["cascade_30"]["escalated"]) == (1, 3)
    assert res["cascade_30"]["output_tokens"] == 3 * 3  # the escalated texts' fixed reasoning
    # in place: an escalated text's prompt is not evaluated again
    assert res["cascade_30"]["prompt_tokens"] == res["one_pass"]["prompt_tokens"]
    low, high = res["cascade_30"]["band"]
    assert 0 <= low <= high <= 1
    assert res["one_pass"]["labels_per_hour"] == pytest.approx(
        3600 * res["one_pass"]["labels_per_s"]
    )
    assert set(report["one_pass_ratios"]) == {
        "one_pass/parallel",
        "cascade_10/parallel",
        "cascade_30/parallel",
        "one_pass/one_pass_roofline",
    }
    assert all(v > 0 for v in report["one_pass_ratios"].values())
    # the one-pass roofline's prompt tokens: every prompt plus the 3-token final header
    header = 3
    full_prompts = res["parallel"]["prompt_tokens"]
    assert res["one_pass_roofline"]["prompt_tokens"] == full_prompts + 10 * header
    # steady figures: the one prefix evaluation (timed apart) taken off each variant's time
    for name in ("parallel", "one_pass", "cascade_10", "cascade_30"):
        row = res[name]
        assert row["prefix_seconds"] > 0
        assert row["steady_seconds"] == pytest.approx(row["seconds"] - row["prefix_seconds"])
        assert row["steady_labels_per_hour"] == pytest.approx(3600 * 10 / row["steady_seconds"])
    assert res["roofline"]["prefix_seconds"] == report["rates"]["prefix_s"]
    steady = report["one_pass_steady_ratios"]
    assert steady["one_pass/parallel"] == pytest.approx(
        res["parallel"]["steady_seconds"] / res["one_pass"]["steady_seconds"]
    )
    assert report["steady_ratios"]["parallel/roofline"] == pytest.approx(
        res["roofline"]["steady_seconds"] / res["parallel"]["steady_seconds"]
    )


def test_extrapolated_loop_takes_the_first_texts_extra_time_as_the_prefix() -> None:
    from edge_guard.bench.variants import extrapolated

    # 3 texts timed of 10: the first also evaluated the prefix (8 s more than the others)
    row = extrapolated([(10.0, 10.0), (2.0, 2.0), (2.0, 2.0)], 10, 6, 100, first_apart=True)
    assert row["seconds"] == pytest.approx(28.0)
    assert row["prefix_seconds"] == pytest.approx(8.0)
    assert row["steady_labels_per_hour"] == pytest.approx(3600 * 10 / 20.0)
    cold = extrapolated([(10.0, 10.0), (10.0, 10.0)], 10, 6, 100, first_apart=False)
    assert cold["prefix_seconds"] == 0.0 and cold["steady_seconds"] == pytest.approx(100.0)


def test_bench_tables_print_a_hostile_model_path_inert(
    tiny_o200k_model: Path, tmp_path: Path
) -> None:
    from edge_guard.bench.core import BenchConfig, format_table, run_bench
    from edge_guard.bench.multi import MultiBenchConfig, format_multi_table, run_multi_bench

    evil = tmp_path / "\x1b[31mevil\x07.gguf"
    evil.symlink_to(tiny_o200k_model)
    cfg = BenchConfig(
        model=str(evil),
        policy_tokens=20,
        text_tokens=4,
        output_tokens=2,
        n=2,
        parallel=2,
        threads=1,
        variants=("parallel",),
    )
    table = format_table(run_bench(cfg, str(evil)))
    assert "\x1b" not in table and "\x07" not in table and "evil" in table.splitlines()[0]
    mcfg = MultiBenchConfig(
        n_policies=2,
        n=2,
        policy_tokens=20,
        text_tokens=4,
        output_tokens=2,
        parallel=2,
        threads=1,
        roofline_repeats=1,
    )
    mtable = format_multi_table(run_multi_bench(mcfg, str(evil)))
    assert "\x1b" not in mtable and "\x07" not in mtable and "evil" in mtable.splitlines()[0]


def test_cascade_without_the_one_pass_variant_scores_apart_for_its_band(
    tiny_o200k_model: Path,
) -> None:
    args = [
        "bench",
        "--model",
        str(tiny_o200k_model),
        "--policy-tokens",
        "40",
        "--text-tokens",
        "8",
        "--output-tokens",
        "3",
        "--n",
        "10",
        "--parallel",
        "4",
        "--threads",
        "1",
        "--variants",
        "parallel,cascade_30",
        "--json",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    res = json.loads(result.stdout)["results"]
    assert "one_pass" not in res
    assert (res["cascade_30"]["escalated"], res["cascade_30"]["output_tokens"]) == (3, 9)
