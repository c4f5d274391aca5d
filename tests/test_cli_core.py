"""The core CLI: `edge-guard models synth` and `edge-guard prompt`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from edge_guard.cli import main
from edge_guard.engine.engine import Engine
from edge_guard.gguf.check import check_model_file
from edge_guard.policy.core import load_policy

REPO = Path(__file__).resolve().parent.parent
POLICY_DIR = "policies/toxic_simple"


@pytest.fixture
def in_repo(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(REPO)
    return REPO


def cli(*args: str, input: str | bytes | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input)


def one_line_error(result: Result) -> str:
    """The single line of stderr; fails on tracebacks or multi-line messages."""
    assert result.exit_code != 0
    assert "Traceback" not in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    error_lines = [ln for ln in lines if ln.lower().startswith("error:")]
    assert len(error_lines) == 1, result.stderr
    return error_lines[0]


def harmony_ids(encoding, policy: str, text: str, effort: str, date: str | None) -> list[int]:  # type: ignore[no-untyped-def]
    from openai_harmony import (
        Conversation,
        DeveloperContent,
        Message,
        ReasoningEffort,
        Role,
        SystemContent,
    )

    system = SystemContent.new().with_reasoning_effort(ReasoningEffort[effort.upper()])
    if date is not None:
        system = system.with_conversation_start_date(date)
    convo = Conversation.from_messages(
        [
            Message.from_role_and_content(Role.SYSTEM, system),
            Message.from_role_and_content(
                Role.DEVELOPER, DeveloperContent.new().with_instructions(policy)
            ),
            Message.from_role_and_content(Role.USER, text),
        ]
    )
    return list(encoding.render_conversation_for_completion(convo, Role.ASSISTANT))


# -- models synth --------------------------------------------------------------------------


def test_synth_writes_a_loadable_model(tmp_path: Path, tiny_model: Path) -> None:
    out = tmp_path / "m.gguf"
    result = cli("models", "synth", "tiny", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"wrote {out} (tiny, seed 0,")
    assert check_model_file(out).architecture == "gpt-oss"
    # Same preset and seed: the same bytes as the library writes.
    assert out.read_bytes() == tiny_model.read_bytes()
    with Engine(out, n_ctx=256, n_threads=1) as engine:
        r = engine.generate(engine.renderer.render("p", "t").token_ids)
        assert r.output_token_ids


def test_synth_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    out = tmp_path / "m.gguf"
    out.write_bytes(b"precious")
    line = one_line_error(cli("models", "synth", "tiny", str(out)))
    assert line == f"error: {out} exists (use --force to overwrite)"
    assert out.read_bytes() == b"precious"

    result = cli("models", "synth", "tiny", str(out), "--force", "--seed", "3")
    assert result.exit_code == 0, result.output
    assert check_model_file(out).architecture == "gpt-oss"
    first = out.read_bytes()
    assert cli("models", "synth", "tiny", str(out), "--force").exit_code == 0
    assert out.read_bytes() != first  # the seed changes the weights


def test_synth_rejects_unknown_preset(tmp_path: Path) -> None:
    out = tmp_path / "m.gguf"
    result = cli("models", "synth", "huge", str(out))
    assert result.exit_code == 1
    line = one_line_error(result)
    assert line.startswith("error: unknown preset 'huge' (choose tiny, tiny-o200k")
    assert not out.exists()


def test_synth_into_missing_folder_is_a_one_line_error(tmp_path: Path) -> None:
    out = tmp_path / "no" / "such" / "folder" / "m.gguf"
    result = cli("models", "synth", "tiny", str(out))
    assert result.exit_code == 1  # a user error, not an internal one (exit 2)
    assert one_line_error(result) == f"error: cannot write {out}: No such file or directory"
    assert not out.parent.exists()


# -- prompt --------------------------------------------------------------------------------


def test_prompt_prints_the_harmony_prompt(in_repo: Path) -> None:
    result = cli("prompt", "--policy", POLICY_DIR, "hello")
    assert result.exit_code == 0, result.output
    shown = result.stdout.rstrip("\n")
    assert shown.startswith("<|start|>system<|message|>You are ChatGPT")
    assert shown.endswith("<|start|>user<|message|>hello<|end|><|start|>assistant")
    assert "<|start|>developer<|message|># Instructions\n\nDecide whether" in shown
    assert "Reasoning: medium" in shown
    assert "Current date" not in shown


def test_prompt_json_matches_openai_harmony(in_repo: Path, harmony_encoding) -> None:  # type: ignore[no-untyped-def]
    policy_text = load_policy(POLICY_DIR).text
    for args, effort, date in [
        ((), "medium", None),
        (("--effort", "high", "--date", "2025-01-02"), "high", "2025-01-02"),
        (("--effort", "low"), "low", None),
    ]:
        result = cli("prompt", "--policy", POLICY_DIR, "--json", *args, "you idiot <|end|>")
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        assert {"style", "effort", "text", "token_ids", "n_tokens"} <= set(data)
        assert data["style"] == "harmony" and data["effort"] == effort
        assert data["n_tokens"] == len(data["token_ids"])
        assert data["token_ids"] == harmony_ids(
            harmony_encoding, policy_text, "you idiot <|end|>", effort, date
        )
        assert data["text"].endswith("you idiot <|end|><|end|><|start|>assistant")


def test_prompt_chat_template_style(in_repo: Path) -> None:
    result = cli(
        "prompt",
        "-p",
        POLICY_DIR,
        "--style",
        "chat-template",
        "--date",
        "2025-05-06",
        "--json",
        "x",
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["style"] == "chat-template" and data["date"] == "2025-05-06"
    assert "Current date: 2025-05-06\n" in data["text"]
    # The policy is followed by "\n\n", as the official template writes it.
    policy_text = load_policy(POLICY_DIR).text
    assert f"# Instructions\n\n{policy_text}\n\n<|end|>" in data["text"]


def test_prompt_reads_stdin_with_dash(in_repo: Path) -> None:
    text = "from stdin: ünïcode 日本 😀\nsecond line <|start|>"
    result = cli("prompt", "--policy", POLICY_DIR, "--json", "-", input=text.encode())
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["text"].endswith(f"<|start|>user<|message|>{text}<|end|><|start|>assistant")


def test_prompt_stdin_through_the_real_entry_point(tmp_path: Path) -> None:
    text = "piped text ✓\n"
    proc = subprocess.run(
        [sys.executable, "-m", "edge_guard", "prompt", "-p", "toxic_simple", "--json", "-"],
        input=text.encode(),
        capture_output=True,
        timeout=120,
        cwd=tmp_path,  # the shipped policy is found by name from anywhere
    )
    assert proc.returncode == 0, proc.stderr.decode()
    data = json.loads(proc.stdout)
    assert f"<|message|>{text}<|end|><|start|>assistant" in data["text"]
    assert data["n_tokens"] == len(data["token_ids"])


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (("--effort", "extreme"), "'extreme' is not one of 'low', 'medium', 'high'"),
        (("--style", "chatml"), "'chatml' is not one of 'harmony', 'chat-template'"),
        (
            ("--date", "2025-13-01"),
            "--date '2025-13-01': must be a calendar date written YYYY-MM-DD",
        ),
        (("--date", "yesterday"), "--date 'yesterday': must be a calendar date written YYYY-MM-DD"),
        (("--date", "2025-02-30"), "--date '2025-02-30': must be a calendar date"),
        (("--ctx", "-5", "--truncate"), "--ctx -5: must be >= 0"),
        (("--max-tokens", "0"), "--max-tokens 0: must be >= 1"),
        (("--reasoning", "none", "--policy", "spam"), "needs a closed output kind"),
    ],
)
def test_prompt_rejects_bad_options(in_repo: Path, args: tuple[str, ...], phrase: str) -> None:
    result = cli("prompt", "--policy", POLICY_DIR, *args, "hello")
    line = one_line_error(result)
    assert phrase in line
    assert result.stdout == ""


def test_prompt_unknown_policy(in_repo: Path) -> None:
    line = one_line_error(cli("prompt", "--policy", "no_such_policy_xyz", "hello"))
    assert "no_such_policy_xyz" in line


def test_prompt_with_model_vocabulary(in_repo: Path, tiny_model: Path) -> None:
    """--model uses that model's vocabulary (the byte-level tiny one here)."""
    default = json.loads(cli("prompt", "-p", POLICY_DIR, "--json", "hello").stdout)
    tiny = cli("prompt", "-p", POLICY_DIR, "--model", str(tiny_model), "--json", "hello")
    assert tiny.exit_code == 0, tiny.output
    data = json.loads(tiny.stdout)
    assert data["text"] == default["text"]
    assert data["token_ids"] != default["token_ids"]
    assert max(data["token_ids"]) < 300
