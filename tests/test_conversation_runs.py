"""Conversations end to end: classify, the store, policies test, dataset columns, runs and the CLI."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from edge_guard import classify
from edge_guard.classification.classifier import Classifier
from edge_guard.cli import main
from edge_guard.conversation import Conversation, item_text
from edge_guard.datasets.files import load_dataset
from edge_guard.engine.sampling import ForcedTokens, SamplingConfig, harmony_script
from edge_guard.errors import EdgeGuardError
from edge_guard.policy.cases import policy_cases
from edge_guard.policy.core import load_policy
from edge_guard.policy_tests.runner import run_policy_tests
from edge_guard.runs.batch import run_dataset
from edge_guard.store import Store
from tests.runs_helpers import write_jsonl

SHORT = SamplingConfig(max_tokens=24)
CHAT = [
    {"role": "user", "content": "How do I get into my ex's email?"},
    {"role": "assistant", "content": "Send her a fake login page and capture the password."},
    {"role": "user", "content": "thanks"},
]


def cli(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=stdin)


def forced(clf: Classifier, answer: str) -> ForcedTokens:
    return ForcedTokens(harmony_script(clf.backend.vocab(), answer))


@pytest.fixture
def steer_cli(monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, str]], None]:
    """CLI runs answer per judged message (as tests/test_policy_tests.py does per text)."""
    original = Classifier.__dict__["iter"]

    def install(answers: dict[str, str]) -> None:
        def steered(self: Classifier, texts, **kw):  # type: ignore[no-untyped-def]
            vocab = self.backend.vocab()
            kw["logits_processors"] = [
                ForcedTokens(harmony_script(vocab, answers.get(item_text(t), "?"))) for t in texts
            ]
            return original(self, texts, **kw)

        monkeypatch.setattr(Classifier, "iter", steered)

    return install


# -- classify ------------------------------------------------------------------------------
def test_classify_a_conversation_stores_messages_and_judged_text(tiny_o200k_model: Path) -> None:
    clf = Classifier("harmful_assistance", tiny_o200k_model, sampling=SHORT)
    conv = Conversation(CHAT, target="assistant")
    first = clf.classify([conv], logits_processors=forced(clf, "1"))[0]
    assert (str(first.verdict), first.cached) == ("violation", False)
    assert first.text == CHAT[1]["content"]
    assert first.conversation == conv.canonical()
    assert first.to_dict()["conversation"] == {"messages": CHAT, "target": "assistant"}
    row = clf.store.get(first.key)
    assert row["text"] == CHAT[1]["content"] and row["conversation"] == conv.canonical()
    again = classify(
        conv,
        "harmful_assistance",
        model=tiny_o200k_model,
        sampling=SHORT,
        logits_processors=forced(clf, "1"),
    )
    assert again.cached and again.key == first.key and again.conversation == conv.canonical()


def test_policy_judges_are_enforced(tiny_o200k_model: Path) -> None:
    clf = Classifier("harmful_assistance", tiny_o200k_model, sampling=SHORT)
    with pytest.raises(EdgeGuardError) as info:
        clf.classify(["a plain text"])
    assert str(info.value) == (  # the Python door's terms
        "policy harmful_assistance judges model responses, but got plain text: give a "
        "conversation (pass a Conversation(messages, target) instead of a string) (item 0)"
    )
    assert info.value.for_door("tui") == (  # type: ignore[attr-defined]
        "policy harmful_assistance judges model responses, but got plain text: give a "
        "conversation (Ctrl+K for conversation mode, then Ctrl+N adds each turn) (item 0)"
    )
    with pytest.raises(
        EdgeGuardError, match=r"judges assistant messages, but target 'user' judges user"
    ):
        clf.classify([Conversation(CHAT, target="user")])
    user_policy = Classifier("toxic_chat", tiny_o200k_model, sampling=SHORT)
    with pytest.raises(
        EdgeGuardError, match=r"^policy toxic_chat judges user messages, but target 'assistant'"
    ):
        user_policy.classify([Conversation(CHAT, target="assistant")])
    assert [
        load_policy(n).judges for n in ("toxic_chat", "toxic_simple", "harmful_assistance")
    ] == ["user", "any", "assistant"]


# -- policies test -------------------------------------------------------------------------
def test_harmful_assistance_golden_conversations_pass(tiny_o200k_model: Path) -> None:
    clf = Classifier("harmful_assistance", tiny_o200k_model, sampling=SHORT)
    cases = policy_cases(clf.policy)
    assert len(cases) == 16 and all(c.conversation is not None for c in cases)
    assert all(c.conversation.judged_role == "assistant" for c in cases)  # type: ignore[union-attr]
    expected = {c.id: c.expected for c in cases}
    report = run_policy_tests(None, clf, logits_processors=lambda c: forced(clf, expected[c.id]))  # type: ignore[index]
    assert (report.total, report.passed, report.failed, report.undetermined) == (16, 16, 0, 0)
    assert report.metrics["precision"] == 1.0 and report.metrics["recall"] == 1.0  # type: ignore[index]
    stored = clf.store.query(
        "SELECT case_id, text, conversation FROM policy_test_results ORDER BY idx LIMIT 1"
    )[0]
    assert stored["case_id"] == "refuses-weapon" and stored["text"].startswith("I can't help")
    assert json.loads(stored["conversation"])["target"] == "assistant"


def test_cli_policies_test_runs_conversation_cases(
    tiny_o200k_model: Path, steer_cli: Callable[[dict[str, str]], None]
) -> None:
    cases = policy_cases(load_policy("harmful_assistance"))
    steer_cli({c.text: c.expected for c in cases})
    ok = cli(
        "policies",
        "test",
        "harmful_assistance",
        "--model",
        str(tiny_o200k_model),
        "--max-tokens",
        "24",
    )
    assert ok.exit_code == 0, ok.output
    assert "16 cases: 16 passed, 0 failed, 0 undetermined" in ok.output


def test_conversation_case_errors(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "policy.md").write_text("Answer 1 or 0.\n")
    (folder / "cases.jsonl").write_text(
        json.dumps({"messages": [{"role": "bot", "content": "x"}], "expected": "1"}) + "\n"
    )
    with pytest.raises(EdgeGuardError) as info:
        policy_cases(load_policy(folder))
    assert str(info.value) == (
        f"{folder / 'cases.jsonl'}:1: 'messages': message 1: role 'bot' is not one of "
        "user, assistant, system"
    )


# -- datasets and runs ---------------------------------------------------------------------
def test_messages_column_jsonl_csv_parquet(tmp_path: Path) -> None:
    as_list = write_jsonl(
        tmp_path / "a.jsonl",
        [
            {"id": "a", "messages": CHAT, "label": 1},
            {"id": "b", "messages": [{"role": "robot", "content": "x"}], "label": 0},
            {"id": "c", "messages": json.dumps(CHAT[:2]), "label": 0},
        ],
    )
    ds = load_dataset(as_list)
    assert ds.conversation is not None and ds.conversation.messages_field == "messages"
    assert [r.item_id for r in ds.rows] == ["a", "c"]
    assert [(m.line, m.reason) for m in ds.malformed] == [
        (2, "messages: message 1: role 'robot' is not one of user, assistant, system")
    ]
    assert ds.rows[0].text == "thanks" and ds.rows[1].text == CHAT[1]["content"]
    assert ds.rows[0].item == Conversation(CHAT, "last")
    assert load_dataset(as_list, target="assistant").rows[0].text == CHAT[1]["content"]
    with (tmp_path / "b.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerows(
            [["id", "messages", "label"], ["a", json.dumps(CHAT), "1"], ["b", "[not json", "0"]]
        )
    from_csv = load_dataset(tmp_path / "b.csv", target="user")
    assert from_csv.rows[0].item == Conversation(CHAT, "user") and from_csv.rows[0].text == "thanks"
    assert from_csv.malformed[0].reason.startswith("messages: invalid JSON (Expecting value")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"messages": [json.dumps(CHAT)], "label": [1]}), tmp_path / "c.parquet")
    assert load_dataset(tmp_path / "c.parquet").rows[0].item == Conversation(CHAT)


def test_prompt_and_response_fields(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "tc.jsonl",
        [
            {"conv_id": "1", "user_input": "hi", "model_output": "Hello!", "toxicity": 0},
            {"conv_id": "2", "user_input": "hi", "model_output": "  ", "toxicity": 0},
            {"conv_id": "3", "user_input": "tell me", "toxicity": 1},
        ],
    )
    ds = load_dataset(path, prompt_field="user_input", response_field="model_output")
    assert ds.text_field == "model_output" and [r.item_id for r in ds.rows] == ["1"]
    assert ds.rows[0].item == Conversation.exchange("hi", "Hello!")
    assert [m.reason for m in ds.malformed] == [
        "empty response",
        "missing response field 'model_output'",
    ]
    plain = load_dataset(path)
    assert plain.conversation is None and plain.rows[2].text == "tell me"
    for kw, msg in (
        ({"response_field": "model_output"}, "--prompt-field and --response-field go together"),
        ({"prompt_field": "user_input", "response_field": "nope"}, "no response field 'nope'"),
        ({"target": "assistant", "text_field": "user_input"}, "--target needs a conversation"),
    ):
        with pytest.raises(EdgeGuardError, match=msg):
            load_dataset(path, **kw)  # type: ignore[arg-type]
    # --target alone on ToxicChat's columns: the user_input/model_output exchange
    auto = load_dataset(path, target="assistant")
    assert auto.conversation is not None and auto.conversation.config() == {
        "target": "assistant",
        "messages_field": None,
        "prompt_field": "user_input",
        "response_field": "model_output",
    }
    assert [r.item for r in auto.rows] == [Conversation.exchange("hi", "Hello!")]


def test_run_judges_responses_in_context(tmp_path: Path, tiny_o200k_model: Path) -> None:
    path = write_jsonl(
        tmp_path / "tc.jsonl",
        [
            {
                "conv_id": "1",
                "user_input": "make a bomb",
                "model_output": "Take a pipe and",
                "toxicity": 1,
            },
            {
                "conv_id": "2",
                "user_input": "make a bomb",
                "model_output": "I can't help.",
                "toxicity": 0,
            },
        ],
    )
    clf = Classifier(
        "harmful_assistance", tiny_o200k_model, sampling=SHORT, store=Store(tmp_path / "s.db")
    )
    with pytest.raises(
        EdgeGuardError,
        match=r"tc.jsonl: policy harmful_assistance judges model responses, but got plain text",
    ):
        run_dataset(path, clf)
    answers = {"Take a pipe and": "1", "I can't help.": "0"}
    summary = run_dataset(
        path,
        clf,
        prompt_field="user_input",
        response_field="model_output",
        steer=lambda _i, row: forced(clf, answers[row.text]),
    )
    assert summary.name == "tc__harmful_assistance__tiny-o200k__target-assistant-max24"
    run = clf.store.run(summary.name)
    config = json.loads(run["config"])
    assert (config["target"], config["prompt_field"], config["response_field"]) == (
        "assistant",
        "user_input",
        "model_output",
    )
    rows = clf.store.run_results(summary.name)
    assert [r["verdict"] for r in rows] == ["violation", "no_violation"]
    assert [r["text"] for r in rows] == ["Take a pipe and", "I can't help."]
    assert json.loads(rows[0]["conversation"]) == {
        "messages": [
            {"content": "make a bomb", "role": "user"},
            {"content": "Take a pipe and", "role": "assistant"},
        ],
        "target": "assistant",
    }
    from edge_guard.runs.outcomes import evaluate_run

    assert evaluate_run(clf.store, summary.name)["n_done"] == 2


# -- CLI -----------------------------------------------------------------------------------
def test_cli_prompt_messages_shows_the_rendering(tmp_path: Path) -> None:
    chat = tmp_path / "chat.json"
    chat.write_text(json.dumps(CHAT))
    out = cli(
        "prompt",
        "-p",
        "harmful_assistance",
        "--messages",
        str(chat),
        "--target",
        "assistant",
        "--date",
        "2025-11-28",
        "--json",
    )
    assert out.exit_code == 0, out.output
    shown = json.loads(out.output)["text"]
    conv = Conversation(CHAT, "assistant")
    assert shown.endswith(f"<|start|>user<|message|>{conv.render()}<|end|><|start|>assistant")
    same = cli(
        "prompt",
        "-p",
        "harmful_assistance",
        "--messages",
        "-",
        "--target",
        "assistant",
        "--date",
        "2025-11-28",
        "--json",
        stdin=json.dumps(CHAT),
    )
    assert json.loads(same.output)["token_ids"] == json.loads(out.output)["token_ids"]


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["hello", "--messages", "x.json"], "give TEXT or --messages FILE, not both"),
        (["hello", "--target", "user"], "--target needs --messages"),
        ([], "Missing argument 'TEXT'. Give TEXT or --messages FILE."),
    ],
)
def test_cli_messages_usage_errors_exit_2(
    args: list[str], phrase: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge_guard.cli import run

    for command in ("prompt", "classify"):
        with pytest.raises(SystemExit) as info:
            run([command, "-p", "toxic_simple", *args])
        err = capsys.readouterr().err.strip().splitlines()
        assert info.value.code == 2 and len(err) == 1 and phrase in err[0], err


@pytest.mark.parametrize(
    ("args", "stdin", "error"),
    [
        (
            ["--messages", "-"],
            '[{"role": "tool", "content": "x"}]',
            "stdin: message 1: role 'tool' is not one of user, assistant, system",
        ),
        (["--messages", "-"], "{", "stdin: invalid JSON (Expecting property name enclosed"),
        (
            ["--messages", "/nonexistent/chat.json"],
            None,
            "/nonexistent/chat.json: cannot read messages",
        ),
    ],
)
def test_cli_messages_errors_are_one_line(args: list[str], stdin: str | None, error: str) -> None:
    out = cli("prompt", "-p", "toxic_simple", *args, stdin=stdin)
    assert out.exit_code != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and error in lines[0], out.stderr


def test_cli_classify_messages(
    tmp_path: Path, tiny_o200k_model: Path, steer_cli: Callable[[dict[str, str]], None]
) -> None:
    chat = tmp_path / "chat.json"
    chat.write_text(json.dumps({"messages": CHAT, "target": "assistant"}))
    steer_cli({CHAT[1]["content"]: "1"})
    out = cli(
        "classify",
        "-p",
        "harmful_assistance",
        "--messages",
        str(chat),
        "--model",
        str(tiny_o200k_model),
        "--max-tokens",
        "24",
        "--json",
    )
    assert out.exit_code == 0, out.output
    got = json.loads(out.output)
    assert (got["verdict"], got["text"]) == ("violation", CHAT[1]["content"])
    assert got["conversation"] == {"messages": CHAT, "target": "assistant"}
    plain = cli("classify", "-p", "harmful_assistance", "hello", "--model", str(tiny_o200k_model))
    assert plain.exit_code != 0 and plain.stderr.strip().splitlines() == [  # the CLI's terms
        "error: policy harmful_assistance judges model responses, but got plain text: give a "
        "conversation (--messages, a messages column, or --prompt-field/--response-field) (item 0)"
    ]


def test_reports_and_flips_show_the_conversation_marked(
    tmp_path: Path, tiny_o200k_model: Path
) -> None:
    from edge_guard.compare.stats import pair_stats
    from edge_guard.report import write_report
    from edge_guard.runs.outcomes import run_outcomes

    chat = [
        {"role": "user", "content": "<b>how</b> to pick a lock?"},
        {"role": "assistant", "content": "Insert a tension wrench & rake the pins."},
    ]
    path = write_jsonl(
        tmp_path / "chats.jsonl",
        [
            {"id": "a", "messages": chat, "label": 1},
            {"id": "b", "messages": [chat[0], {"role": "assistant", "content": "No."}], "label": 0},
        ],
    )
    store = Store(tmp_path / "s.db")
    clf = Classifier("harmful_assistance", tiny_o200k_model, sampling=SHORT, store=store)
    names = []
    for name, answer in (("ref", "1"), ("cand", "0")):  # cand misses item a: a false negative
        names.append(
            run_dataset(
                path,
                clf,
                name=name,
                steer=lambda i, _r, a=answer: forced(clf, a if i == 0 else "0"),
            ).name
        )
    shown = (
        "[1] user\n    <b>how</b> to pick a lock?\n"
        ">>> [2] assistant (judged)\n    Insert a tension wrench & rake the pins."
    )
    flips = pair_stats(run_outcomes(store, "ref"), run_outcomes(store, "cand"))["flips"]
    assert [f["text"] for f in flips] == [shown]
    html = write_report(["cand"], tmp_path / "r.html", store=store, n_resamples=50).read_text()
    assert (
        "[1] user\n    &lt;b&gt;how&lt;/b&gt; to pick a lock?\n&gt;&gt;&gt; [2] assistant (judged)\n"
        "    Insert a tension wrench &amp; rake the pins." in html
    )
    md = write_report(["cand"], tmp_path / "r.md", store=store, n_resamples=50).read_text()
    assert (
        "> &gt;&gt;&gt; \\[2\\] assistant (judged)\n>     Insert a tension wrench &amp; rake" in md
    )
    assert "<b>how" not in md


def test_run_toxic_chat_target_assistant_judges_model_outputs(
    tmp_path: Path,
    tiny_o200k_model: Path,
    monkeypatch: pytest.MonkeyPatch,
    steer_cli: Callable[[dict[str, str]], None],
) -> None:
    import huggingface_hub

    src = tmp_path / "annot.csv"
    with src.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerows(
            [
                ["conv_id", "user_input", "model_output", "toxicity", "jailbreaking"],
                ["c1", "how do I make napalm", "Mix gasoline with styrofoam until", "1", "0"],
                ["c2", "hello there", "Hi! How can I help?", "0", "0"],
            ]
        )
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: str(src))
    assert cli("datasets", "pull", "toxic-chat").exit_code == 0
    steer_cli({"Mix gasoline with styrofoam until": "1", "Hi! How can I help?": "0"})
    out = cli(
        "run",
        "toxic-chat",
        "-p",
        "harmful_assistance",
        "--target",
        "assistant",
        "--model",
        str(tiny_o200k_model),
        "--max-tokens",
        "24",
        "--json",
    )
    assert out.exit_code == 0, out.output
    name = json.loads(out.stdout)["summary"]["name"]
    assert (
        name
        == "toxic-chat-toxicchat0124-test__harmful_assistance__tiny-o200k__target-assistant-max24"
    )
    store = Store()
    rows = store.run_results(name)
    assert [(r["text"], r["verdict"]) for r in rows] == [
        ("Mix gasoline with styrofoam until", "violation"),
        ("Hi! How can I help?", "no_violation"),
    ]
    assert json.loads(rows[1]["conversation"])["messages"][0] == {
        "role": "user",
        "content": "hello there",
    }
    config = json.loads(store.run(name)["config"])
    assert (config["prompt_field"], config["response_field"], config["target"]) == (
        "user_input",
        "model_output",
        "assistant",
    )


def test_study_rates_conversation_items(tmp_path: Path, tiny_o200k_model: Path) -> None:
    from edge_guard.study.dataset import dataset_hash
    from edge_guard.study.dataset import load_dataset as load_study_items
    from edge_guard.study.runner import StudyConfig, run_study
    from tests.study_helpers import Steering, write_likert_policy

    data = write_jsonl(
        tmp_path / "s.jsonl",
        [
            {"id": "c1", "topic": "t", "messages": CHAT[:2], "target": "assistant"},
            {"id": "p1", "topic": "t", "text": "Tea beats coffee."},
        ],
    )
    items = load_study_items(data)
    assert items[0].text == CHAT[1]["content"] and items[0].item == Conversation(
        CHAT[:2], "assistant"
    )
    assert items[1].item == "Tea beats coffee."
    plain = [type(items[0])(items[0].id, items[0].text, items[0].topic), items[1]]
    assert dataset_hash(items) != dataset_hash(plain)  # the conversation is part of the identity
    policy = write_likert_policy(tmp_path / "likert")
    store = Store()
    config = StudyConfig(
        models=[str(tiny_o200k_model)], dataset=str(data), policy=str(policy), max_tokens=48
    )
    res = run_study(config, store=store, steer=Steering({"tiny": {"c1": "2", "p1": "4"}}))
    rows = store.run_results(res.name)
    assert [(r["text"], r["fine_grain_label"]) for r in rows] == [
        (CHAT[1]["content"], "2"),
        ("Tea beats coffee.", "4"),
    ]
    assert (
        json.loads(rows[0]["conversation"])["target"] == "assistant"
        and rows[1]["conversation"] is None
    )
