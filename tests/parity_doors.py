"""The parity matrix's options and doors (tests/test_parity.py).

An `Option` is one row of the matrix: the `Settings` fields it sets (the matrix checks they
cover `request_options()`), its value for each door (flags, keywords, request fields), and
what it needs besides (a policy set, a conversation, a text too long for the context).
A door driver classifies one cell's input with the option through that door and returns
its `Outcome`: per policy, the stored key (when the door reports one) and the verdict
(a set's thresholds applied), or the door's one-line refusal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from edge_guard.conversation import Conversation

POLICY, SET = "toxic_simple", "parity"
# Thresholds that decide: P >= 1e-9 (violation) and P >= 1 (no violation unless P rounds to 1).
SET_MEMBERS = {"toxic_simple": 1e-9, "toxic_chat": 1.0}
SET_VERDICTS = {"toxic_simple": "violation", "toxic_chat": "no_violation"}
# Every door classifies with these (the CLI's flags): one engine, one numerics class.
BASE = {"ctx": 4096, "parallel": 4, "max_tokens": 16}
BASE_FLAGS = ("--ctx", "4096", "--parallel", "4", "--max-tokens", "16")
SERVER = "http://127.0.0.1:8089"  # the Host a client of serve's default bind sends


@dataclass(frozen=True)
class Option:
    name: str
    fields: tuple[str, ...]  # the `Settings` request options it sets
    values: dict[str, Any] = field(default_factory=dict)  # Settings values (keywords, fields)
    flags: tuple[str, ...] = ()
    policy: str = POLICY  # SET: the policy set with thresholds
    conversation: bool = False  # a conversation judged at target "user"
    long: bool = False  # a text too long for the context

    def text(self, door: str) -> str:
        head = f"parity check: {self.name} through {door}"
        return head + " and more" * 4000 if self.long else head

    def item(self, door: str) -> str | Conversation:
        text = self.text(door)
        if not self.conversation:
            return text
        return Conversation(
            [{"role": "user", "content": text}, {"role": "assistant", "content": "An answer."}],
            "user",
        )


OPTIONS = [
    Option("effort", ("effort",), {"effort": "low"}, ("--effort", "low")),
    Option("style", ("style",), {"style": "chat-template"}, ("--style", "chat-template")),
    Option("date", ("date",), {"date": "2020-01-01"}, ("--date", "2020-01-01")),
    Option("reasoning none", ("reasoning",), {"reasoning": "none"}, ("--reasoning", "none")),
    Option("cascade band", ("cascade",), {"cascade": "0.2:0.8"}, ("--cascade", "0.2:0.8")),
    Option("max_tokens", ("max_tokens",), {"max_tokens": 24}, ("--max-tokens", "24")),
    Option(
        "temperature+seed",
        ("temperature", "seed"),
        {"temperature": 0.7, "seed": 5},
        ("--temperature", "0.7", "--seed", "5"),
    ),
    Option("truncate", ("truncate",), {"truncate": True}, ("--truncate",), long=True),
    # One-pass verdicts are always determined, so the thresholds decide every member.
    Option("set thresholds", (), {"reasoning": "none"}, ("--reasoning", "none"), policy=SET),
    Option("conversation target", (), conversation=True),
]


@dataclass
class Outcome:
    """What a door answered: {policy: (key or None, verdict)}, or its one-line refusal."""

    results: dict[str, tuple[str | None, str]] = field(default_factory=dict)
    refused: str | None = None


def write_set(folder: Path) -> Path:
    """policies/sets/parity.toml: two binary members, thresholds that decide every verdict."""
    (folder / "sets").mkdir(parents=True, exist_ok=True)
    members = ", ".join(f'"{n}"' for n in SET_MEMBERS)
    thresholds = "".join(f"{n} = {t}\n" for n, t in SET_MEMBERS.items())
    (folder / "sets" / f"{SET}.toml").write_text(
        f"policies = [{members}]\n[thresholds]\n{thresholds}"
    )
    return folder


def _policy_flags(option: Option) -> list[str]:
    return ["--set", SET] if option.policy == SET else ["-p", option.policy]


def _input_flags(option: Option, door: str, tmp: Path) -> list[str]:
    item = option.item(door)
    if isinstance(item, Conversation):
        path = tmp / f"conv-{abs(hash(door))}.json"
        path.write_text(json.dumps(item.to_dict()))
        return ["--messages", str(path)]
    return [item]


def _from_json(out: dict[str, Any]) -> dict[str, tuple[str | None, str]]:
    """A classify --json / result dict (one policy or a set's) as {policy: (key, verdict)}."""
    if "results" in out:
        return {n: (r.get("key"), r["verdict"]) for n, r in out["results"].items()}
    return {out["policy"]: (out.get("key"), out["verdict"])}


def cli(*args: str) -> Any:
    from edge_guard.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def cli_classify(option: Option, door: str, model: Path, db: Path, tmp: Path) -> Outcome:
    """`edge-guard classify` (the reference every other door is held to)."""
    r = cli(
        "classify",
        *_policy_flags(option),
        "-m",
        model,
        *BASE_FLAGS,
        *option.flags,
        "--db",
        db,
        "--json",
        *_input_flags(option, door, tmp),
    )
    if r.exit_code != 0:
        return Outcome(refused=r.output.strip())
    return Outcome(_from_json(json.loads(r.stdout)))


def cli_run(option: Option, door: str, model: Path, db: Path, tmp: Path) -> Outcome:
    """`edge-guard run` over a one-row dataset; a set run read back as `eval` reads it."""
    from edge_guard.runs.multi_eval import multi_outcomes
    from edge_guard.store import Store

    item = option.item(door)
    row = item.to_dict() if isinstance(item, Conversation) else {"text": item}
    data = tmp / "one.jsonl"
    data.write_text(json.dumps(row) + "\n")
    extra = ["--target", "user"] if isinstance(item, Conversation) else []
    r = cli(
        "run",
        data,
        *_policy_flags(option),
        "--name",
        "parity",
        "-m",
        model,
        *BASE_FLAGS,
        *option.flags,
        *extra,
        "--db",
        db,
        "--json",
    )
    if r.exit_code != 0:
        return Outcome(refused=r.output.strip())
    store = Store(db)
    try:
        rows = store.run_results("parity")
        if option.policy != SET:
            return Outcome({rows[0]["policy_name"]: (rows[0]["key"], rows[0]["verdict"])})
        per = multi_outcomes(store, "parity")[1]  # the thresholds applied, as eval applies them
        keys = {r["policy_name"]: r["key"] for r in rows}
        return Outcome({n: (keys[n], o.verdicts[0]) for n, o in per.items()})
    finally:
        store.close()


def python_classify(option: Option, door: str, model: Path, db: Path, **extra: Any) -> Outcome:
    """`edge_guard.classify(...)` with the option as keywords."""
    from edge_guard import MultiResult, classify
    from edge_guard.errors import EdgeGuardError

    kw = {**BASE, **option.values, **extra}
    if "url" not in extra:
        kw.update(model=str(model), db=str(db))
    try:
        res = classify(option.item(door), option.policy, **kw)
    except EdgeGuardError as exc:
        return Outcome(refused=str(exc))
    items = res.results.items() if isinstance(res, MultiResult) else [(res.policy, res)]
    return Outcome({str(n): (r.key, str(r.verdict)) for n, r in items})


def request_fields(option: Option, door: str) -> dict[str, Any]:
    """The /v1/classify body: the input, the policy (or set) and the option's fields."""
    item = option.item(door)
    body: dict[str, Any] = {"policy": option.policy, **option.values}
    if isinstance(item, Conversation):
        body.update(messages=[m.as_dict() for m in item.messages], target=item.target)
    else:
        body["text"] = item
    return body


def serve_classify(option: Option, door: str, client: Any) -> Outcome:
    r = client.post("/v1/classify", json=request_fields(option, door))
    if r.status_code != 200:
        return Outcome(refused=f"HTTP {r.status_code}: {r.json()['error']['message']}")
    return Outcome({row["policy"]: (row["key"], row["verdict"]) for row in r.json()["results"]})


def serve_moderations(option: Option, door: str, client: Any) -> Outcome:
    """/v1/moderations on a server started with the option's flags (its defaults)."""
    item = option.item(door)
    body: dict[str, Any] = {
        "input": item if isinstance(item, str) else item.judged_text,
        "model": option.policy,
    }
    if isinstance(item, Conversation):  # what a user would try: the conversation's fields
        body.update(messages=[m.as_dict() for m in item.messages], target=item.target)
    r = client.post("/v1/moderations", json=body)
    if r.status_code != 200:
        return Outcome(refused=f"HTTP {r.status_code}: {r.json()['error']['message']}")
    verdicts = r.json()["results"][0]["verdicts"]
    return Outcome({n: (None, v) for n, v in verdicts.items()})
