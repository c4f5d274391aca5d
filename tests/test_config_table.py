"""One config: the `EDGE_GUARD_*` variables are one table (edge_guard.defaults.ENV), read
through one accessor, and docs/configuration.md shows that same table."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

from edge_guard import defaults
from edge_guard.settings.resolve import SETTING_NAMES, Settings, resolve_settings

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "edge_guard"
DOC = REPO / "docs" / "configuration.md"
NAME = re.compile(r"^EDGE_GUARD_[A-Z0-9_]+$")

# Direct reads of the environment outside edge_guard/defaults.py whose variable is not a
# literal: each is a variable the user names (an API key's) or not edge_guard's own.
ALLOWED_DYNAMIC_READS = {
    ("cli/serve_cmd.py", "var"): "the variable named by --api-key-env",
    ("backends/server_client.py", "var"): "the variable named by api_key_env",
    ("backends/server.py", "api_key_env"): "the variable named by --api-key-env",
    ("registry/__init__.py", "var"): "HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE",
}


def _sources() -> list[tuple[str, ast.Module]]:
    return [
        (str(p.relative_to(PACKAGE)), ast.parse(p.read_text(), str(p)))
        for p in sorted(PACKAGE.rglob("*.py"))
        if p.name != "defaults.py" or p.parent != PACKAGE
    ]


def _string_constants(tree: ast.Module) -> dict[str, str]:
    """Module-level `NAME = "EDGE_GUARD_..."` assignments."""
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Name) and isinstance(node.value.value, str):
                    out[target.id] = node.value.value
    return out


def _environ_reads(tree: ast.Module) -> list[ast.expr]:
    """The key of every `os.environ.get/pop/setdefault(KEY)`, `os.environ[KEY]`,
    `os.getenv(KEY)` and `KEY in os.environ`."""
    keys: list[ast.expr] = []

    def is_environ(node: ast.expr) -> bool:
        return ast.unparse(node) in ("os.environ", "environ")

    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            f = node.func
            if (f.attr in ("get", "pop", "setdefault") and is_environ(f.value)) or ast.unparse(
                f
            ) in ("os.getenv", "getenv"):
                keys.append(node.args[0])
        elif isinstance(node, ast.Subscript) and is_environ(node.value):
            keys.append(node.slice)
        elif isinstance(node, ast.Compare) and any(is_environ(c) for c in node.comparators):
            keys.append(node.left)
    return keys


def test_the_docs_table_is_the_codes_table() -> None:
    text = DOC.read_text()
    start, end = "<!-- env-table:start -->\n", "<!-- env-table:end -->"
    assert start in text and end in text
    shown = text.split(start, 1)[1].split(end, 1)[0]
    assert shown == defaults.env_markdown(), "run `python -m edge_guard.defaults` into the doc"


def test_the_docs_config_example_resolves() -> None:
    example = re.search(r"```toml\n(.*?)```", DOC.read_text(), re.S)
    assert example is not None
    settings = resolve_settings(config=tomllib.loads(example.group(1)), env={})
    assert (settings.backend, settings.url, settings.concurrency) == (
        "server",
        "http://gpu-box:8080",
        16,
    )


def test_no_module_reads_an_edge_guard_variable_but_through_the_accessor() -> None:
    constants: dict[str, str] = {}
    trees = _sources()
    for _, tree in trees:
        constants.update({k: v for k, v in _string_constants(tree).items() if NAME.match(str(v))})
    bad, dynamic = [], set()
    for rel, tree in trees:
        for key in _environ_reads(tree):
            if isinstance(key, ast.Constant):
                if NAME.match(str(key.value)):
                    bad.append(f"{rel}: {ast.unparse(key)}")
                continue
            last = ast.unparse(key).rsplit(".", 1)[-1]
            if last in constants:
                bad.append(f"{rel}: {ast.unparse(key)} = {constants[last]}")
            else:
                dynamic.add((rel, ast.unparse(key)))
    assert bad == [], "read these through edge_guard.defaults.env"
    assert dynamic == set(ALLOWED_DYNAMIC_READS)


# A value for each setting's variable, unlike the default (the server URL comes with each,
# since `backend=server` needs one).
SAMPLES = {
    "model": "synth:tiny",
    "ctx": "2048",
    "gpu_layers": "0",
    "parallel": "3",
    "keep_alive": "90",
    "style": "chat-template",
    "effort": "low",
    "date": "2024-01-02",
    "reasoning": "none",
    "cascade": "0.2:0.8",
    "temperature": "0.5",
    "seed": "7",
    "max_tokens": "99",
    "db": "/tmp/x.db",
    "backend": "server",
    "url": "http://h:1",
    "api_key_env": "K",
    "concurrency": "5",
    "timeout": "7",
    "server_kind": "vllm",
}


def test_every_variable_named_in_the_code_is_in_the_table() -> None:
    table = {v.name for v in defaults.ENV}
    named = {
        node.value
        for _, tree in _sources()
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and NAME.match(node.value)
    }
    assert named - table == set()
    # and every row of the table is read: a setting's by resolve_settings, the others by
    # the package, or by the tests ("Tests: ...")
    code = "\n".join(p.read_text() for p in PACKAGE.rglob("*.py") if p.name != "defaults.py")
    tests = "\n".join(p.read_text() for p in (REPO / "tests").rglob("*.py"))
    for v in defaults.ENV:
        if v.setting is None:
            where = tests if v.meaning.startswith("Tests:") else code
            assert v.name in where, f"{v.name} is in the table but nothing reads it"


@pytest.mark.parametrize("var", [v for v in defaults.ENV if v.setting], ids=lambda v: v.name)
def test_each_settings_variable_sets_its_setting(var: defaults.EnvVar) -> None:
    assert var.setting in SETTING_NAMES
    env = {var.name: SAMPLES[var.setting], "EDGE_GUARD_SERVER_URL": "http://h:1"}
    value = getattr(resolve_settings(env=env, config={}), var.setting)
    assert value != getattr(Settings(), var.setting)
    assert str(value) in (SAMPLES[var.setting], SAMPLES[var.setting] + ".0")


def test_a_blank_variable_is_unset() -> None:
    blank = resolve_settings(env={"EDGE_GUARD_CTX": "  "}, config={})
    assert blank.ctx == defaults.DEFAULT_CTX == Settings().ctx


def test_the_accessor_refuses_a_variable_missing_from_the_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EDGE_GUARD_NOT_A_THING", "1")
    with pytest.raises(
        KeyError, match=r"EDGE_GUARD_NOT_A_THING is not in edge_guard\.defaults\.ENV"
    ):
        defaults.env("EDGE_GUARD_NOT_A_THING")
    monkeypatch.setenv("EDGE_GUARD_REVIEWER", "ana")
    assert defaults.env("EDGE_GUARD_REVIEWER") == "ana"
    monkeypatch.setenv("EDGE_GUARD_REVIEWER", " ")
    assert defaults.env("EDGE_GUARD_REVIEWER") is None
