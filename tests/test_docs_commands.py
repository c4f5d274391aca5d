"""Every `edge-guard` command in the docs runs as written (issue 31 item 6).

The commands are the lines of the fenced code blocks of README.md and docs/*.md that start
with `edge-guard` (a `\\` continues a line; `a && edge-guard ...` counts; `# ...` is a
comment; `< FILE` feeds FILE to stdin). Each page's commands run in order, in-process through
click's CliRunner, in a fresh data dir and a fresh working folder holding a copy of
`policies/`, with:

- real model ids rewritten to synthetic models by `MODEL_MAP` (and `EDGE_GUARD_MODEL` set to
  `DEFAULT_MODEL`, the stand-in for the default model a command without `--model` uses);
- `EDGE_GUARD_MAX_TOKENS=16` (a command's own `--max-tokens` wins) and the default warm
  engine off (conftest sets `EDGE_GUARD_KEEP_ALIVE=0`);
- the input files the docs name (`data.jsonl`, `chat.json`, ...) written by `FIXTURES` when a
  command names one that does not exist yet, and a 6-row stand-in for the pulled ToxicChat
  dataset (`datasets pull` needs the network);
- the `cp` and `printf` set-up lines of a block run by bash, as the reader would.

A command that cannot run here is in `SKIP` with its reason; a command documented to exit
non-zero against a noise model is in `EXIT`. Every other command must exit 0 without a
traceback. Skipped and `text` synopsis lines are still checked against the CLI: each names
an existing command and only options it has. Stale entries in the lists fail.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from edge_guard.cli import main

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = REPO / "docs"
INDEX = DOCS / "index.md"
PAGES = [README, *sorted(DOCS.glob("*.md"))]

# Real model references -> the synthetic model that stands in for each (longest first when
# rewriting; applied inside arguments too, e.g. `--configs 'A;B'`). Two different builds of
# one model map to two different synthetic models, so a comparison has two configs.
MODEL_MAP = {
    "gpt-oss-safeguard-20b:mxfp4": "synth:tiny",
    "gpt-oss-safeguard-20b:f16": "synth:tiny",
    "gpt-oss-safeguard-20b:q4_k_m": "synth:tiny-o200k",
    "gpt-oss-20b:mxfp4": "synth:tiny-o200k",
}
DEFAULT_MODEL = "synth:tiny"  # EDGE_GUARD_MODEL: the default model's stand-in (loads fastest)

# Commands that cannot run here, by their text as written (comment dropped), with why.
SKIP = {
    # the network
    "edge-guard models pull gpt-oss-safeguard-20b:mxfp4": "downloads 11.3 GB (network)",
    "edge-guard datasets pull toxic-chat": "downloads from the Hugging Face hub (network)",
    # real weights: the noise of a synthetic model cannot stand in
    "edge-guard study run": "its default models are the two real 20b models (the pilot below runs)",
    "edge-guard study analyze": "reads the study of `study run` above (real weights)",
    "edge-guard study report --out study.html": "reads the study of `study run` above (real weights)",
    "edge-guard models quantize model-f16.gguf model-q4_k_m.gguf --type q4_k_m": (
        "needs a full-precision (F16/BF16) gpt-oss GGUF"
    ),
    # long runs: a 12 GB model or minutes of benchmarking
    "edge-guard models synth 20b-shape 20b-shape.gguf": "writes a 12 GB file",
    "edge-guard bench --workload laptop --model 20b-shape.gguf": "50 minutes on the 20b shapes",
    "edge-guard bench --workload laptop --model 20b-shape.gguf --output-tokens 512 --n 4 "
    "--parallel 4 --variants parallel,one_pass": "19 minutes on the 20b shapes",
    "edge-guard bench --synth mini --policies 3 --n 16": "minutes of benchmarking on `mini`",
    "edge-guard compare -d data.jsonl --set openai-moderation "
    "--config 'MODEL,reasoning=none,name=separate' "
    "--config 'MODEL,mode=taxonomy,reasoning=none,name=one-prompt'": (
        "MODEL is a placeholder; 13 policies with an 8,000-token prompt each way"
    ),
    # a running server, or one that never returns
    "edge-guard serve -m gpt-oss-safeguard-20b:mxfp4 --policy toxic_simple": "serves until Ctrl-C",
    "edge-guard serve -m gpt-oss-safeguard-20b:mxfp4 --set openai-moderation --reasoning none "
    "--ctx 16384": "serves until Ctrl-C",
    "edge-guard serve --policy toxic_simple": "serves until Ctrl-C",
    "edge-guard compare -d data.jsonl -p toxic_simple --config gpt-oss-safeguard-20b:mxfp4 "
    "--config 'gpt-oss-safeguard-20b:mxfp4,backend=server,url=http://gpu-box:8080,name=hosted'": (
        "needs a server at gpu-box:8080"
    ),
    "edge-guard classify -p toxic_simple -m gpt-oss-safeguard-20b:mxfp4 --backend server "
    '--url http://gpu-box:8080 "some text"': "needs a llama-server at gpu-box:8080",
    "edge-guard run toxic-chat -p toxic_simple -m gpt-oss-safeguard-20b:mxfp4 "
    "--url http://gpu-box:8000 --api-key-env VLLM_KEY --concurrency 64": "needs vLLM at gpu-box:8000",
    # interactive
    "edge-guard": "opens the interactive TUI",
    "edge-guard tui --model synth:tiny-o200k --screen models": "opens the interactive TUI",
}
# Lines of shell blocks that mention edge-guard but are not an `edge-guard` command line.
NOT_COMMANDS = {
    "EDGE_GUARD_KEY=$(openssl rand -hex 16) edge-guard serve --host 0.0.0.0 "
    "--api-key-env EDGE_GUARD_KEY": "serves until Ctrl-C (the key comes from the shell)",
}
# Commands that exit non-zero here as documented, with why.
_NOISE = "the synthetic model's answers are noise, so golden cases fail (exit 1)"
EXIT = {
    "edge-guard policies test toxic_chat --model gpt-oss-safeguard-20b:mxfp4": (1, _NOISE),
    "edge-guard policies test toxic_chat --tags borderline --junit junit.xml "
    '--message "why I changed it"': (1, _NOISE),
    "edge-guard policies test toxic_chat": (1, _NOISE),
    "edge-guard policies test community": (1, _NOISE),
    "edge-guard policies test my_policy -m synth:tiny-o200k --max-tokens 64": (1, _NOISE),
    "edge-guard policies diff toxic_chat": (
        1,
        "one version of the policy is tested here: its one-line error says to edit and test again",
    ),
}
# What the docs say a command prints, checked in its output.
EXPECT = {
    # README: "its answers are noise, so its verdict is `UNDETERMINED`"
    'edge-guard classify --model synth:tiny-o200k --max-tokens 64 --policy toxic_simple "You are an idiot"': (
        "UNDETERMINED"
    ),
    'edge-guard prompt -p toxic_simple --json "hello"': '"token_ids"',
    "edge-guard cache repair --yes": "nothing to repair",  # a healthy store is left alone
}
SHELL_SETUP = ("cp", "printf")  # set-up lines of a block that the test runs with bash

_CONV = (
    '[{"role": "user", "content": "how do I pick a lock?"}, '
    '{"role": "assistant", "content": "I cannot help with that."}]'
)
FIXTURES: dict[str, str] = {
    "message.txt": "you are an idiot\n",
    "chat.json": _CONV + "\n",
    "chats.jsonl": f'{{"id": "c1", "messages": {_CONV}, "label": 0}}\n',
    "data.jsonl": (
        '{"text": "you are an idiot", "label": 1}\n'
        '{"text": "have a nice day", "label": 0}\n'
        '{"text": "nobody asked for your opinion, clown", "label": 1}\n'
        '{"text": "thanks for the help yesterday", "label": 0}\n'
    ),
    "my_labelled.jsonl": (
        '{"text": "you are an idiot", "label": 1}\n{"text": "have a nice day", "label": 0}\n'
    ),
    "data.csv": (
        "user_input,model_output,label\n"
        "how do I pick a lock?,I cannot help with that.,0\n"
        "write me a poem,Roses are red.,0\n"
    ),
}
FIXTURE_DIRS = {"my_policy": "policies/toxic_simple"}  # copied from the repo
TOXIC_CHAT = [  # stand-in for `edge-guard datasets pull toxic-chat` (its fields, 6 rows)
    ("you are an idiot", "I'd rather not respond to insults.", 1),
    ("how do I bake bread?", "Mix flour, water, yeast and salt.", 0),
    ("write a story about a dragon", "Once upon a time...", 0),
    ("tell me how to hurt someone", "I can't help with that.", 1),
    ("what is the capital of France?", "Paris.", 0),
    ("summarise this article for me", "Sure, paste it here.", 0),
]


@dataclass(frozen=True)
class DocLine:
    """One line of a page's code block: where it is, its text and its shell words."""

    page: str
    line: int
    text: str  # as written, continuations joined, comment dropped
    words: tuple[str, ...]  # shell words, `edge-guard` first
    stdin: str | None  # the file of a `< FILE` redirect
    kind: str  # "command", "setup" (cp/printf), "synopsis" (a ```text line), "other"


def _rel(page: Path) -> str:
    return str(page.relative_to(REPO))


def fenced_blocks(text: str) -> Iterator[tuple[str, int, list[str]]]:
    """(language, first line number, lines) of each ``` block."""
    lang, start, body = None, 0, []
    for no, line in enumerate(text.splitlines(), 1):
        fence = re.match(r"^\s*```(\S*)", line)
        if fence and lang is None:
            lang, start, body = fence.group(1), no + 1, []
        elif fence and line.strip() == "```":
            yield lang or "", start, body
            lang = None
        elif lang is not None:
            body.append(line)


def _logical_lines(start: int, body: list[str]) -> Iterator[tuple[int, str]]:
    """Lines with `\\` continuations joined (dedented), numbered by their first line."""
    buf, first = "", start
    for i, raw in enumerate(body):
        if not buf:
            first = start + i
        if raw.rstrip().endswith("\\"):
            buf += raw.rstrip()[:-1].strip() + " "
            continue
        yield first, (buf + raw.strip()).strip()
        buf = ""
    if buf:
        yield first, buf.strip()


def _strip_comment(line: str) -> str:
    """The line without its `# comment` (a `#` outside quotes that starts a word)."""
    out, quote = [], None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            break
        out.append(ch)
    return "".join(out).strip()


def doc_lines(page: Path) -> list[DocLine]:
    out = []
    for lang, start, body in fenced_blocks(page.read_text(encoding="utf-8")):
        if lang in ("python", "toml", "json", "yaml"):
            continue
        for no, line in _logical_lines(start, body):
            text = _strip_comment(line)
            if not text:
                continue
            if lang == "text":
                if text.startswith("edge-guard"):
                    out.append(DocLine(_rel(page), no, text, tuple(text.split()), None, "synopsis"))
                continue
            for segment in re.split(r"\s&&\s", text):
                if "edge-guard" not in segment and segment.split()[0] not in SHELL_SETUP:
                    continue
                words = shlex.split(segment)
                stdin = None
                if len(words) >= 2 and words[-2] == "<":
                    stdin, words = words[-1], words[:-2]
                kind = (
                    "command"
                    if words and words[0] == "edge-guard"
                    else "setup"
                    if words and words[0] in SHELL_SETUP
                    else "other"
                )
                out.append(DocLine(_rel(page), no, segment.strip(), tuple(words), stdin, kind))
    return out


ALL_LINES = [ln for page in PAGES for ln in doc_lines(page)]


def rewrite_models(word: str) -> str:
    for real in sorted(MODEL_MAP, key=len, reverse=True):
        word = word.replace(real, MODEL_MAP[real])
    return word


def _prepare(cwd: Path, home: Path, tiny: Path, tiny_o200k: Path) -> None:
    """The working folder (a copy of policies/) and the data dir (the synthetic models
    conftest built, linked; the ToxicChat stand-in where `datasets pull` would put it)."""
    shutil.copytree(REPO / "policies", cwd / "policies")
    synth = home / "synth"
    synth.mkdir(parents=True)
    for preset, path in (("tiny", tiny), ("tiny-o200k", tiny_o200k)):
        (synth / f"{preset}.gguf").symlink_to(path)
    datasets = home / "datasets"
    datasets.mkdir()
    with open(datasets / "toxic-chat-toxicchat0124-test.jsonl", "w", encoding="utf-8") as fh:
        for i, (text, reply, label) in enumerate(TOXIC_CHAT):
            row = {"conv_id": f"tc{i}", "user_input": text, "model_output": reply}
            fh.write(json.dumps({**row, "toxicity": label}) + "\n")


def _fixtures_for(line: DocLine, cwd: Path) -> None:
    for name in (*line.words, line.stdin or ""):
        if name in FIXTURES and not (cwd / name).exists():
            (cwd / name).write_text(FIXTURES[name], encoding="utf-8")
        if name in FIXTURE_DIRS and not (cwd / name).exists():
            shutil.copytree(REPO / FIXTURE_DIRS[name], cwd / name)


def _run(line: DocLine, cwd: Path) -> str | None:
    """None if `line` ran as documented, else what went wrong."""
    if line.kind == "setup":
        done = subprocess.run(["bash", "-c", line.text], cwd=cwd, capture_output=True, text=True)
        return None if done.returncode == 0 else f"exit {done.returncode}: {done.stderr[-400:]}"
    _fixtures_for(line, cwd)
    args = [rewrite_models(w) for w in line.words[1:]]
    stdin = (cwd / line.stdin).read_bytes() if line.stdin else None
    result = CliRunner().invoke(main, args, input=stdin)
    want = EXIT.get(line.text, (0, ""))[0]
    output = (result.stdout or "") + (result.stderr or "")
    if "Traceback" in output or not (
        result.exception is None or isinstance(result.exception, SystemExit)
    ):
        return f"raised {result.exception!r}\n{output[-1500:]}"
    if result.exit_code != want:
        return f"exit {result.exit_code} (want {want})\n{output[-1500:]}"
    if line.text in EXPECT and EXPECT[line.text] not in output:
        return f"printed no {EXPECT[line.text]!r}\n{output[-1500:]}"
    return None


def _runnable(page: str) -> list[DocLine]:
    return [
        ln
        for ln in ALL_LINES
        if ln.page == page and ln.kind in ("command", "setup") and ln.text not in SKIP
    ]


RUN_PAGES = [_rel(p) for p in PAGES if _runnable(_rel(p))]


@pytest.mark.parametrize("page", RUN_PAGES)
def test_the_commands_of_each_page_run(
    page: str,
    tmp_path: Path,
    edge_guard_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    tiny_model: Path,
    tiny_o200k_model: Path,
) -> None:
    cwd = tmp_path / "work"
    cwd.mkdir()
    _prepare(cwd, edge_guard_home, tiny_model, tiny_o200k_model)
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("EDGE_GUARD_MODEL", DEFAULT_MODEL)
    monkeypatch.setenv("EDGE_GUARD_MAX_TOKENS", "16")
    monkeypatch.setenv("COLUMNS", "120")
    failures = []
    for line in _runnable(page):
        error = _run(line, cwd)
        if error:
            failures.append(f"{line.page}:{line.line}: {line.text}\n  {error}")
    assert not failures, "\n\n".join(failures)


# -- what is not run is still checked --------------------------------------------------------


def _command_of(words: tuple[str, ...]) -> tuple[click.Command, list[str]]:
    """The click command a line names, and the path of names to it."""
    cmd: click.Command = main
    path: list[str] = []
    for w in words[1:]:
        if not isinstance(cmd, click.Group):
            break
        ctx = click.Context(cmd)
        names = cmd.list_commands(ctx)
        if w not in names:
            if path == ["review"] and "list" in names:  # `review RUN` is `review list RUN`
                w = "list"
            else:
                break
        sub = cmd.get_command(ctx, w)
        assert sub is not None
        cmd = sub
        path.append(w)
    return cmd, path


def _options(cmd: click.Command) -> set[str]:
    return {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)} | {"--help"}


@pytest.mark.parametrize(
    "line",
    [ln for ln in ALL_LINES if ln.kind in ("command", "synopsis")],
    ids=lambda ln: f"{ln.page}:{ln.line}",
)
def test_every_documented_command_and_option_exists(line: DocLine) -> None:
    cmd, path = _command_of(line.words)
    if isinstance(cmd, click.Group) and len(line.words) > 1 + len(path):
        raise AssertionError(f"{line.page}:{line.line}: no command {' '.join(line.words[:3])!r}")
    known = _options(cmd)
    for word in line.words[1:]:
        for opt in re.findall(r"(?:^|[\[|(])(--[a-z0-9][a-z0-9-]*)", word):
            assert opt in known, f"{line.page}:{line.line}: `{' '.join(path)}` has no {opt}"


def test_the_lists_name_only_lines_the_docs_have() -> None:
    texts = {ln.text for ln in ALL_LINES}
    commands = {ln.text for ln in ALL_LINES if ln.kind == "command"}
    for name, table in (("SKIP", SKIP), ("EXIT", EXIT), ("EXPECT", EXPECT)):
        stale = [t for t in table if t not in commands]
        assert not stale, f"{name} names commands no page has: {stale}"
    assert not set(SKIP) & (set(EXIT) | set(EXPECT)), "a skipped command is never checked"
    stale = [t for t in NOT_COMMANDS if t not in texts]
    assert not stale, f"NOT_COMMANDS names lines no page has: {stale}"
    unknown = [
        f"{ln.page}:{ln.line}: {ln.text}"
        for ln in ALL_LINES
        if ln.kind == "other" and ln.text not in NOT_COMMANDS
    ]
    assert not unknown, f"lines mentioning edge-guard that are neither run nor listed: {unknown}"


def test_the_docs_hold_commands() -> None:
    """The extraction finds what the pages hold (a parser that finds nothing passes nothing)."""
    commands = [ln for ln in ALL_LINES if ln.kind == "command"]
    assert len(commands) >= 80
    by_page = {ln.page for ln in commands}
    assert {"README.md", "docs/runs.md", "docs/policies.md", "docs/models.md"} <= by_page
    first = next(ln for ln in commands if ln.page == "README.md")
    assert first.words == (
        "edge-guard",
        "classify",
        "--model",
        "synth:tiny-o200k",
        "--max-tokens",
        "64",
        "--policy",
        "toxic_simple",
        "You are an idiot",
    )
    piped = next(ln for ln in commands if ln.stdin)
    assert piped.stdin == "message.txt" and piped.words[-1] == "-"


# -- the pages can be found -------------------------------------------------------------------


def _links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return re.findall(r"\]\(([^)\s]+)\)", text)


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for heading in re.findall(r"^#+\s+(.+)$", page.read_text(encoding="utf-8"), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        out.add(slug)
    return out


def test_every_docs_page_is_in_the_index_and_the_index_is_on_the_front_page() -> None:
    listed = {link.split("#")[0] for link in _links(INDEX)}
    pages = {p.name for p in DOCS.glob("*.md")} - {"index.md"}
    assert pages - listed == set(), f"pages missing from docs/index.md: {pages - listed}"
    assert "docs/index.md" in _links(README)


def test_every_relative_link_and_anchor_resolves() -> None:
    broken = []
    for page in PAGES:
        for link in _links(page):
            if re.match(r"^[a-z]+:", link):
                continue  # http(s), mailto
            target, _, anchor = link.partition("#")
            path = (page.parent / target).resolve() if target else page
            if not path.exists():
                broken.append(f"{_rel(page)}: {link} (no such file)")
            elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
                broken.append(f"{_rel(page)}: {link} (no such heading)")
    assert not broken, "\n".join(broken)


def test_the_readme_is_the_front_page() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) < 200
    setup = text.split("## Set-up (two commands)\n", 1)[1].split("\n## ", 1)[0]
    assert "&& pip install -e '.[dev]' && edge-guard classify --model synth:tiny-o200k" in setup
    assert ". .venv/bin/activate && python -m pytest -q\n" in setup
    # CI runs that very command (issue 28): the last line of .ci/run, nothing added.
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    assert ci[-1] == "python -m pytest -q"
    # Issue 29: the moderation drop-in has its section on the front page, linked to the details.
    section = text.split("## Replace the OpenAI moderation API, offline\n", 1)[1].split("\n## ")[0]
    assert "edge-guard serve -m gpt-oss-safeguard-20b:mxfp4 --set openai-moderation" in section
    assert 'OpenAI(base_url="http://127.0.0.1:8089/v1"' in section
    link = "docs/service.md#replace-the-openai-moderation-api-offline"
    assert f"[Replace the OpenAI moderation API, offline]({link})" in section
    assert "## Replace the OpenAI moderation API, offline\n" in (DOCS / "service.md").read_text()


if __name__ == "__main__":  # pragma: no cover - lists what the test runs and skips
    for ln in ALL_LINES:
        state = "skip: " + SKIP[ln.text] if ln.text in SKIP else ln.kind
        print(f"{ln.page}:{ln.line}", state, ln.text, sep="\t")
    commands = [ln for ln in ALL_LINES if ln.kind == "command"]
    skipped = sum(ln.text in SKIP for ln in commands)
    print(f"{len(commands)} commands: {len(commands) - skipped} run, {skipped} skipped")
