"""`edge-guard bench` smoke tests: tiny sizes, the JSON report's structure (no timing claims)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_guard.bench.core import VARIANTS, format_table, synthetic_text
from edge_guard.cli import main
from edge_guard.harmony.vocab import o200k_harmony_vocab

SMALL = [
    "--policy-tokens",
    "70",
    "--text-tokens",
    "12",
    "--output-tokens",
    "5",
    "--n",
    "7",
    "--parallel",
    "3",
    "--threads",
    "1",
]


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["bench", *args])
    return result.exit_code, result.stdout


def test_bench_json_report(tiny_model: Path) -> None:
    code, out = run("--model", str(tiny_model), *SMALL, "--baseline-n", "4", "--json")
    assert code == 0, out
    report = json.loads(out)
    assert set(report) >= {
        "config",
        "model",
        "workload",
        "engine",
        "rates",
        "results",
        "ratios",
        "roofline_definition",
    }
    res = report["results"]
    assert set(res) == {*VARIANTS, "roofline"}
    for name in VARIANTS:
        row = res[name]
        assert set(row) >= {
            "n",
            "seconds",
            "cpu_seconds",
            "labels_per_s",
            "tokens_per_s",
            "prompt_tokens",
            "output_tokens",
            "output_tokens_per_s",
            "outputs_match_cold",
        }
        assert row["n"] == 7  # one-at-a-time loops: 4 timed, scaled to 7
        assert row["timed_texts"] == (7 if name in ("parallel", "threads") else 4)
        assert row["outputs_match_cold"] is True  # every variant decodes the same tokens
        assert row["labels_per_s"] > 0
    for name in ("cold", "sequential", "parallel", "threads"):  # stop tokens suppressed: 5 each
        assert res[name]["output_tokens"] == 5 * 7
    assert res["llama_cpp"]["output_tokens"] >= 5 * 7
    assert res["roofline"]["n"] == 7
    w = report["workload"]
    assert w["n"] == 7 and w["baseline_n"] == 4 and w["output_tokens"] == 5
    assert w["prefix_tokens"] > 70 and w["mean_suffix_tokens"] >= 12
    assert report["rates"]["gen_batch"] == 3
    assert set(report["ratios"]) == {
        f"parallel/{k}" for k in ("cold", "llama_cpp", "sequential", "threads", "roofline")
    }
    assert all(v > 0 for v in report["ratios"].values())
    for k in ("cold", "llama_cpp", "sequential", "threads", "roofline"):  # (d) over the other
        assert report["ratios"][f"parallel/{k}"] == pytest.approx(
            res[k]["seconds"] / res["parallel"]["seconds"]
        )
        assert report["cpu_ratios"][f"parallel/{k}"] == pytest.approx(
            res[k]["cpu_seconds"] / res["parallel"]["cpu_seconds"]
        )
    assert set(report["cpu_ratios"]) == set(report["ratios"])
    assert set(report["rates"]["cpu"]) == {"prefix_s", "prompt_tok_s", "suffix_tok_s", "gen_tok_s"}
    assert all(res[name]["outputs_differing"] == 0 for name in VARIANTS)
    # a variant whose outputs differ from the cold loop's says how many in the table
    res["parallel"].update(outputs_match_cold=False, outputs_differing=2)
    row = next(ln for ln in format_table(report).splitlines() if "(d) edge_guard parallel" in ln)
    assert row.endswith("NO (2/4)")  # of the 4 texts both loops timed


def test_bench_table_with_synth_preset_and_subset_of_variants() -> None:
    code, out = run("--synth", "tiny", *SMALL, "--variants", "cold,sequential,parallel")
    assert code == 0, out
    assert "(c) edge_guard sequential" in out and "(d) edge_guard parallel" in out
    assert "(b) llama-cpp-python" not in out and "roofline_s = prefix_s" in out
    assert re.search(r"\(a\) cold loop +7 ", out)  # 7 texts, all timed (not 7/7 or scaled)


def test_bench_rejects_bad_arguments(tiny_model: Path) -> None:
    result = CliRunner().invoke(main, ["bench", "--synth", "nope"])
    assert result.exit_code == 1 and "unknown synthetic preset" in result.output
    result = CliRunner().invoke(main, ["bench", "--model", str(tiny_model), "--variants", "x"])
    assert result.exit_code == 1 and "unknown variant" in result.output
    result = CliRunner().invoke(main, ["bench", "--model", str(tiny_model), "--n", "0"])
    assert result.exit_code == 1 and "--n must be at least 1" in result.output


def test_synthetic_text_has_the_requested_token_count() -> None:
    enc = o200k_harmony_vocab().encoder.encode
    for n in (1, 16, 64, 1000):
        text = synthetic_text(enc, n, seed=n)
        assert len(enc(text)) == n
        assert text == synthetic_text(enc, n, seed=n)


def test_differing_counts_the_outputs_that_decode_other_tokens() -> None:
    """The bench table's "same output": a variant's greedy tokens against the cold loop's."""
    from edge_guard.bench.variants import differing

    ref = [[1, 2, 3], [4, 5, 6], [7, 8]]
    assert differing(ref, ref, "parallel") == 0
    # one token changed, one output stopped short
    assert differing([[1, 2, 3], [4, 9, 6], [7]], ref, "parallel") == 2
    # llama-cpp-python's loop exposes every token but the last and may run past max_tokens
    assert differing([[1, 2], [4, 5, 6, 0], [7]], ref, "llama_cpp") == 0
    assert differing([[1], [4, 5, 6], [7, 9]], ref, "llama_cpp") == 2
