"""Hostile policies: unreadable files are one-line errors; a misbehaving parse.py makes only
its items undetermined (error recorded) while the batch goes on, in any thread."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from edge_guard.backends.local import EngineSettings
from edge_guard.classification.classifier import Classifier, RunItem
from edge_guard.engine.sampling import ForcedTokens, SamplingConfig, harmony_script
from edge_guard.errors import PolicyError
from edge_guard.policy.core import load_policy
from edge_guard.result import Verdict


def folder(tmp_path: Path, files: dict[str, bytes]) -> Path:
    d = tmp_path / "pol"
    d.mkdir(exist_ok=True)
    for name, data in files.items():
        (d / name).write_bytes(data)
    return d


@pytest.mark.parametrize(
    ("files", "phrase"),
    [
        ({"policy.md": b""}, "policy text is empty"),
        ({"policy.md": b" \n\t\n"}, "policy text is empty"),
        ({"policy.md": b"Flag \xff\xfe toxic text"}, "not UTF-8 text (bad byte at offset 5)"),
        ({"policy.md": b"Flag\x00toxic"}, "contains NUL bytes"),
        ({"policy.md": b"ok", "policy.toml": b"[output\nkind="}, "invalid TOML"),
        ({"policy.md": b"ok", "policy.toml": b"name = '\xff'"}, "not UTF-8 text"),
        ({"policy.md": b"ok", "policy.toml": b"[output]\nkind = 'poem'"}, "[output] kind 'poem'"),
        (
            {"policy.md": b"ok", "parse.py": b"raise RuntimeError('boom')\n"},
            "importing it failed: RuntimeError: boom",
        ),
        ({"policy.md": b"ok", "parse.py": b"def parse(:\n"}, "importing it failed: SyntaxError"),
        ({"policy.md": b"ok", "parse.py": b"parse = 3\n"}, "`parse` is not a function"),
        ({"policy.toml": b"name = 'x'"}, "a policy folder needs a policy.md"),
    ],
)
def test_unusable_policy_files_are_one_line_errors(
    tmp_path: Path, files: dict[str, bytes], phrase: str
) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy(folder(tmp_path, files))
    assert "\n" not in str(info.value) and phrase in str(info.value)


KNOWN = "known: kind, labels, violation, min, max, threshold"
BAD_OUTPUTS = [
    ({"kind": "labels", "labels": ["spam", "ham", "spam"]}, "labels", "lists 'spam' twice"),
    (
        {"kind": "labels", "labels": ["a", "b"], "violation": ["a", "a"]},
        "violation",
        "lists 'a' twice",
    ),
    ({"violation": 1}, "violation", "must be a list of strings"),
    ({"violation": "1"}, "violation", "must be a list of strings"),
    ({"labels": ["", "1"]}, "labels[0]", "must be a non-empty string without NUL"),
    ({"violations": ["1"]}, "violations", f"is not a known key ({KNOWN})"),
    ({"kind": "likert", "min": 1.5}, "min", "must be an integer"),
    ({"kind": "likert", "min": 3, "max": 2}, "min", "must be below max, by at most 20 (got 3..2)"),
    ({"kind": "labels", "labels": ["only"]}, "labels", "must list >= 2 labels for kind 'labels'"),
    ({"violation": ["9"]}, "violation", "value(s) ['9'] are not among the labels ['0', '1']"),
    ({"threshold": True}, "threshold", "must be a number"),
    ({"kind": "poem"}, "kind", "'poem' is not one of binary, likert, json, labels"),
]


def _toml(table: dict[str, object]) -> str:
    import json

    return "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items())  # TOML's subset


@pytest.mark.parametrize(("table", "key", "why"), BAD_OUTPUTS)
def test_bad_output_tables_are_one_line_errors_naming_the_file_and_key(
    tmp_path: Path, table: dict[str, object], key: str, why: str
) -> None:
    """Repeated labels and a non-list `violation` included (it was a TypeError); the HTTP
    door's inline `policy_output` gets the same check and reason, naming its field."""
    from edge_guard.service.catalog import BadInlinePolicy, inline_policy

    toml = f"[output]\n{_toml(table)}".encode()
    path = folder(tmp_path, {"policy.md": b"ok", "policy.toml": toml})
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert str(info.value) == f"{path / 'policy.toml'}: [output] {key} {why}"
    with pytest.raises(BadInlinePolicy) as inline:
        inline_policy("Answer 1 for spam, else 0.", table)
    assert (inline.value.param, str(inline.value)) == (
        f"policy_output.{key}",
        f"field 'policy_output.{key}': {why}",
    )


def test_a_module_output_and_a_non_table_output_are_checked_too(tmp_path: Path) -> None:
    mod = tmp_path / "mod_policy.py"
    mod.write_text("POLICY = 'Answer 1 or 0.'\nOUTPUT = {'kind': 'labels', 'labels': ['a', 'a']}\n")
    with pytest.raises(PolicyError, match=r"mod_policy\.py: \[output\] labels lists 'a' twice$"):
        load_policy(mod)
    path = folder(tmp_path, {"policy.md": b"ok", "policy.toml": b"output = 5\n"})
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert str(info.value) == f"{path / 'policy.toml'}: [output] must be a table"


def test_a_non_list_violation_through_the_cli_is_one_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from edge_guard.cli import main

    path = folder(tmp_path, {"policy.md": b"ok", "policy.toml": b"[output]\nviolation = 1\n"})
    result = CliRunner().invoke(main, ["prompt", "-p", str(path), "hello"])
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().splitlines() == [
        f"error: {path / 'policy.toml'}: [output] violation must be a list of strings"
    ]


def test_unusable_policy_through_the_cli(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from edge_guard.cli import main

    path = folder(tmp_path, {"policy.md": b"\xc3\x28 invalid"})
    result = CliRunner().invoke(main, ["prompt", "-p", str(path), "hello"])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {path / 'policy.md'}: policy is not UTF-8 text (bad byte at offset 0)"
    ]


PARSERS = {
    "raises": (
        "def parse(r):\n    if r.response.strip() == '1':\n        raise ValueError('no')\n"
        "    return BUILTIN(r)\n",
        "raised ValueError: no",
    ),
    "wrong_type": (
        "def parse(r):\n    if r.response.strip() == '1':\n        return {'v': 1}\n"
        "    return BUILTIN(r)\n",
        "returned dict, not ClassificationResult",
    ),
    "hangs": (
        "import time\ndef parse(r):\n    while r.response.strip() == '1':\n"
        "        time.sleep(0.05)\n    return BUILTIN(r)\n",
        "did not return within 0.5 s",
    ),
    "swallows_time_limit": (
        "import time\ndef parse(r):\n    while r.response.strip() == '1':\n        try:\n"
        "            time.sleep(0.05)\n        except Exception:\n            pass\n"
        "    return BUILTIN(r)\n",
        "did not return within 0.5 s",
    ),
    "exits": (
        "import sys\ndef parse(r):\n    if r.response.strip() == '1':\n        sys.exit(3)\n"
        "    return BUILTIN(r)\n",
        "raised SystemExit: 3",
    ),
}
PRELUDE = (
    "from edge_guard.policy.parsers import builtin_parse\nfrom edge_guard.policy.core import OutputSpec\n"
    "def BUILTIN(r):\n    return builtin_parse(r, OutputSpec())\n"
)


def run_batch(policy_dir: Path, model: Path, db: Path) -> dict[int, object]:
    """Four texts: the model is steered to answer 1, 0, 1, 0; parse() misbehaves on '1'."""
    clf = Classifier(
        policy_dir,
        model,
        db=db,
        parallel=4,
        sampling=SamplingConfig(max_tokens=40),
        engine_settings=EngineSettings(n_ctx=2048, n_parallel=4),
    )
    vocab = clf.backend.vocab()
    steer = [ForcedTokens(harmony_script(vocab, final=a)) for a in "1010"]
    clf.store.ensure_run("batch", kind="test")
    items = [RunItem("batch", i) for i in range(4)]
    texts = [f"text number {i}" for i in range(4)]
    return dict(clf.iter(texts, run_items=items, logits_processors=steer))


@pytest.mark.parametrize("thread", ["main", "worker"])
@pytest.mark.parametrize("mode", sorted(PARSERS))
def test_misbehaving_parser_fails_only_its_items(
    mode: str, thread: str, tmp_path: Path, tiny_model: Path, fast_parser_limit: float
) -> None:
    source, phrase = PARSERS[mode]
    pol = folder(
        tmp_path,
        {"policy.md": b"Answer 1 if toxic, else 0.", "parse.py": (PRELUDE + source).encode()},
    )
    db = tmp_path / "s.db"
    box: dict[str, object] = {}

    def go() -> None:
        try:
            box["results"] = run_batch(pol, tiny_model, db)
        except BaseException as exc:  # the test fails below with the reason
            box["error"] = exc

    if thread == "main":
        go()
    else:
        worker = threading.Thread(target=go)
        worker.start()
        worker.join(60)
        assert not worker.is_alive(), "the batch hung"
    assert "error" not in box, box.get("error")
    results = box["results"]
    assert isinstance(results, dict) and sorted(results) == [0, 1, 2, 3]
    for i in (0, 2):  # answered "1": the parser failed
        r = results[i]
        assert r.verdict == Verdict.UNDETERMINED and phrase in (r.error or ""), r.error  # type: ignore[attr-defined]
    for i in (1, 3):  # answered "0": parsed normally
        r = results[i]
        assert r.verdict == Verdict.NO_VIOLATION and r.error is None  # type: ignore[attr-defined]
    from edge_guard.store import Store

    rows = Store(db).run_results("batch")
    assert [r["idx"] for r in rows] == [0, 1, 2, 3]  # every result committed
    assert [bool(r["error"]) for r in rows] == [True, False, True, False]
