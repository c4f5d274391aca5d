"""Built-in answer parsers are strict: the whole final answer must match the declared format."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import types
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_guard.harmony.vocab import o200k_harmony_vocab
from edge_guard.policy.core import OutputSpec, Policy, load_policy
from edge_guard.policy.parsers import (
    builtin_parse,
    label_scores,
    label_token_map,
    run_parser,
    run_parsers,
)
from edge_guard.response import ModelResponse
from edge_guard.result import ClassificationResult, Verdict

BINARY = OutputSpec()
LIKERT = OutputSpec("likert", tuple(str(i) for i in range(1, 6)), ())
LABELS = OutputSpec("labels", ("safe", "spam", "scam"), ("spam", "scam"))
JSON = OutputSpec("json", (), ())


def resp(text: str | None) -> ModelResponse:
    return ModelResponse(text, "", "return" if text is not None else "length")


@given(st.text())
def test_binary_accepts_exactly_a_lone_digit(text: str) -> None:
    r = builtin_parse(resp(text), BINARY)
    if text.strip(" \t\n\r\x0b\x0c") in ("0", "1"):
        assert r.parsed_successfully and r.fine_grain_label == text.strip()
    else:
        assert not r.parsed_successfully
        assert r.verdict == Verdict.UNDETERMINED


@given(st.text(), st.sampled_from(["0", "1"]), st.text(min_size=1))
def test_binary_rejects_digit_with_any_other_text(prefix: str, digit: str, suffix: str) -> None:
    text = prefix + digit + suffix
    if text.strip(" \t\n\r\x0b\x0c") not in ("0", "1"):
        assert not builtin_parse(resp(text), BINARY).parsed_successfully


@given(st.integers(-3, 9), st.sampled_from(["", " ", "\n", "  \n"]))
def test_likert_range(n: int, pad: str) -> None:
    r = builtin_parse(resp(f"{pad}{n}{pad}"), LIKERT)
    assert r.parsed_successfully == (1 <= n <= 5)
    if r.parsed_successfully:
        assert r.fine_grain_label == str(n) and r.float_label == float(n)


@given(st.text())
def test_likert_random_strings(text: str) -> None:
    r = builtin_parse(resp(text), LIKERT)
    assert r.parsed_successfully == (text.strip(" \t\n\r\x0b\x0c") in {"1", "2", "3", "4", "5"})


def test_labels_exact_match_case_insensitive() -> None:
    assert builtin_parse(resp(" Spam\n"), LABELS).fine_grain_label == "spam"
    assert builtin_parse(resp("spam!"), LABELS).parsed_successfully is False
    r = builtin_parse(resp("safe"), LABELS)
    assert r.verdict == Verdict.NO_VIOLATION
    assert builtin_parse(resp("scam"), LABELS).verdict == Verdict.VIOLATION


def test_json_output() -> None:
    ok = builtin_parse(
        resp(
            json.dumps(
                {
                    "violation": 1,
                    "policy_category": "phishing",
                    "confidence": "high",
                    "rationale": "asks for a password",
                }
            )
        ),
        JSON,
    )
    assert ok.verdict == Verdict.VIOLATION and ok.metadata["policy_category"] == "phishing"
    assert ok.metadata["confidence_value"] == 0.9
    assert builtin_parse(resp('{"violation": 0}'), JSON).verdict == Verdict.NO_VIOLATION
    for bad in (
        '```json\n{"violation": 1}\n```',
        '{"violation": 2}',
        "[1]",
        "violation: 1",
        '{"category": "x"}',
    ):
        assert builtin_parse(resp(bad), JSON).verdict == Verdict.UNDETERMINED, bad


@given(st.text())
def test_json_never_raises(text: str) -> None:
    builtin_parse(resp(text), JSON)


def test_missing_final_is_undetermined_for_every_kind() -> None:
    for spec in (BINARY, LIKERT, LABELS, JSON):
        assert builtin_parse(resp(None), spec).verdict == Verdict.UNDETERMINED


def test_label_scores_normalise_over_labels() -> None:
    vocab = o200k_harmony_vocab()
    tmap = label_token_map(BINARY, vocab.encoder)
    assert tmap is not None and set(tmap.values()) == {"0", "1"}
    zero, one = vocab.encoder.encode("0")[0], vocab.encoder.encode("1")[0]
    scores = label_scores(BINARY, tmap, {zero: -2.0, one: -1.0})
    assert scores is not None
    assert (
        sum(scores["label_probs"].values()) == 1.0
        or abs(sum(scores["label_probs"].values()) - 1) < 1e-12
    )
    assert scores["p_violation"] > 0.5


def test_custom_parser_failures_are_recorded() -> None:
    def raises(r):  # type: ignore[no-untyped-def]
        raise ValueError("nope")

    def wrong_type(r):  # type: ignore[no-untyped-def]
        return {"label": 1}

    def hangs(r):  # type: ignore[no-untyped-def]
        time.sleep(30)

    for fn, needle in (
        (raises, "raised ValueError"),
        (wrong_type, "returned dict"),
        (hangs, "did not return"),
    ):
        policy = Policy("p", "text", parser=fn, parser_source=fn.__name__)
        t0 = time.monotonic()
        r = run_parser(policy, resp("1"), time_limit=0.5)
        assert time.monotonic() - t0 < 10
        assert r.verdict == Verdict.UNDETERMINED
        assert needle in (r.error or "")


# A policy folder whose parse() hangs on the answer "hang" (after writing its pid where the
# test reads it), prints on the others and reports the pid of the process that parsed.
HANGING_PARSE = """
import os, time
from edge_guard.policy.core import OutputSpec
from edge_guard.policy.parsers import builtin_parse

def parse(response):
    if response.response == "hang":
        with open(PID_FILE, "w") as f:
            f.write(str(os.getpid()))
        while True:
            try:
                time.sleep(0.05)
            except BaseException:  # nothing raised into it may stop it
                pass
    print("parsed", response.response)
    result = builtin_parse(response, OutputSpec())
    result.metadata["pid"] = os.getpid()
    return result
"""


def hanging_policy(tmp_path: Path) -> tuple[Path, Path]:
    folder, pid_file = tmp_path / "hanging", tmp_path / "pid"
    folder.mkdir()
    (folder / "policy.md").write_text("Answer 1 if toxic, else 0.")
    (folder / "parse.py").write_text(f"PID_FILE = {str(pid_file)!r}\n" + HANGING_PARSE)
    return folder, pid_file


@pytest.mark.timeout(300, method="thread")  # it checks that no SIGALRM handler is set
@pytest.mark.parametrize("thread", ["main", "worker"])
def test_a_hung_parser_is_stopped_in_any_thread_without_signals_or_threads(
    thread: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, pid_file = hanging_policy(tmp_path)
    policy = load_policy(folder)
    touched: list[str] = []
    for name in ("signal", "setitimer", "alarm"):
        real = getattr(signal, name)
        monkeypatch.setattr(
            signal, name, lambda *a, _n=name, _r=real: (touched.append(_n), _r(*a))[1]
        )
    threads_before = set(threading.enumerate())
    box: dict[str, list[ClassificationResult]] = {}

    def go() -> None:
        box["results"] = run_parsers(policy, [resp("hang"), resp("1")], time_limit=0.5)

    if thread == "main":
        go()
    else:
        worker = threading.Thread(target=go)
        worker.start()
        worker.join(120)
        assert not worker.is_alive()
    hung, after = box["results"]
    assert hung.verdict == Verdict.UNDETERMINED
    assert hung.error == "policy hanging: parse() did not return within 0.5 s"
    assert hung.metadata == {"parser_error": hung.error}
    # the hung parser ran in another process, which is gone (killed and reaped)
    pid = int(pid_file.read_text())
    assert pid != os.getpid()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    # the next answer went on in a fresh worker
    assert after.verdict == Verdict.VIOLATION and after.error is None
    assert after.metadata["pid"] not in (pid, os.getpid())
    assert capsys.readouterr().out == "parsed 1\n"  # print() reaches the caller's stdout
    assert set(threading.enumerate()) == threads_before  # no thread left behind
    assert touched == []  # no signal handler or timer was set, even for a moment
    assert signal.getsignal(signal.SIGALRM) == signal.SIG_DFL


def test_an_edited_parse_py_is_never_run_for_the_policy_loaded_before(tmp_path: Path) -> None:
    folder, _ = hanging_policy(tmp_path)
    old = load_policy(folder)
    first = run_parser(old, resp("1"))
    assert first.verdict == Verdict.VIOLATION
    source = (folder / "parse.py").read_text()
    before = (folder / "parse.py").stat()
    (folder / "parse.py").write_text(source.replace('print("parsed"', 'print("PARSED"'))
    # The same size and mtime: a .pyc cached from the first load still looks current.
    os.utime(folder / "parse.py", ns=(before.st_atime_ns, before.st_mtime_ns))
    stale = run_parser(old, resp("1"))
    assert stale.verdict == Verdict.UNDETERMINED
    assert f"{folder / 'parse.py'} changed since it was loaded: load the policy again" in (
        stale.error or ""
    )
    fresh = run_parser(load_policy(folder), resp("0"))
    assert fresh.verdict == Verdict.NO_VIOLATION and fresh.metadata["pid"] != first.metadata["pid"]


def test_builtin_set_parsers_and_script_functions_run_in_process() -> None:
    from edge_guard.policy.parser_worker import parser_ref

    def nested(r: ModelResponse) -> ClassificationResult:
        return builtin_parse(r, BINARY)

    assert parser_ref(builtin_parse) is None  # edge_guard's own code
    ref = parser_ref(nested)  # a nested function travels as code with its module's globals
    assert ref is not None and ref.attr is None and ref.code is not None
    main = types.FunctionType(nested.__code__, {"__name__": "__main__", "__file__": __file__})
    assert parser_ref(main) is None  # loading the running script again would run it again


def test_a_result_the_caller_cannot_read_back_fails_its_item_only(tmp_path: Path) -> None:
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "policy.md").write_text("Answer 1 if toxic, else 0.")
    (folder / "parse.py").write_text(
        "from edge_guard.policy.core import OutputSpec\n"
        "from edge_guard.policy.parsers import builtin_parse\n"
        "class Tag:\n    pass\n"
        "def parse(r):\n    result = builtin_parse(r, OutputSpec())\n"
        "    if r.response == '1':\n        result.metadata['tag'] = Tag()\n    return result\n"
    )
    odd, fine = run_parsers(load_policy(folder), [resp("1"), resp("0")])
    assert odd.verdict == Verdict.UNDETERMINED
    assert (odd.error or "").startswith(
        "policy odd: parse(): returned a result that cannot be read back (ModuleNotFoundError"
    )
    assert fine.verdict == Verdict.NO_VIOLATION and fine.error is None


def test_a_same_size_edit_in_the_same_second_is_loaded_from_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A .pyc's stamp is the size and whole-second mtime: loading from it would run old code."""
    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # .pyc files written, as for users
    monkeypatch.setattr(sys, "pycache_prefix", None)
    folder = tmp_path / "quick"
    folder.mkdir()
    (folder / "policy.md").write_text("Answer 1 if toxic, else 0.")
    code = (
        "from edge_guard.policy.core import OutputSpec\n"
        "from edge_guard.policy.parsers import builtin_parse\n"
        "from edge_guard.response import ModelResponse\n"
        "FLAG = {flag}\n"
        "def parse(response):\n"
        "    return builtin_parse(ModelResponse(str(FLAG), '', 'return'), OutputSpec())\n"
    )
    (folder / "parse.py").write_text(code.format(flag=1))
    before = (folder / "parse.py").stat()
    assert run_parser(load_policy(folder), resp("1")).verdict == Verdict.VIOLATION
    (folder / "parse.py").write_text(code.format(flag=0))
    os.utime(folder / "parse.py", ns=(before.st_atime_ns, before.st_mtime_ns))
    assert run_parser(load_policy(folder), resp("1")).verdict == Verdict.NO_VIOLATION


def test_sys_exit_in_a_parse_run_in_process_fails_its_item_only() -> None:
    """A script's own parse() (run in the caller's process: loading `__main__` again would
    run the script) that calls sys.exit() fails its response, not the batch or the caller."""

    def exits(r: ModelResponse) -> ClassificationResult:
        if r.response == "1":
            sys.exit(3)
        return builtin_parse(r, BINARY)

    script = {"__name__": "__main__", "sys": sys, "builtin_parse": builtin_parse, "BINARY": BINARY}
    fn = types.FunctionType(exits.__code__, script)
    policy = Policy("p", "text", parser=fn, parser_source="exits")
    hit, after = run_parsers(policy, [resp("1"), resp("0")])
    assert hit.verdict == Verdict.UNDETERMINED
    assert hit.error == "policy p: parse() raised SystemExit: 3"
    assert after.verdict == Verdict.NO_VIOLATION and after.error is None
