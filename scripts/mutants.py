"""Break one line of wiring at a time in a copy of the repo and check that a test fails.

Each entry of the data file (`scripts/mutants.toml`) names a file, the exact text to
replace (found exactly once; several edits per entry are allowed), its replacement, and
the tests that must fail without that line. For every entry this script applies the break
to a temporary copy of the repository (a `git worktree` of the commit, or a copy of the
working tree with `--working-tree`: the checkout you run it from is never modified), runs
the named tests, puts the file back, and reports:

- `caught`: the tests failed (`caught (timeout)` when they ran past --timeout: a hang);
- `MISSED`: the tests passed with the line broken: a test is missing;
- `stale`: the text to replace is no longer in the file (update the data file);
- `error`: pytest could not run the named tests (exit status 2-5).

The named tests are first run once, unbroken: an entry whose tests already fail is
reported `baseline fails`, not `caught`. Usage:

    python scripts/mutants.py                      # every entry, against HEAD
    python scripts/mutants.py --only cascade-redecide --only service-no-cache
    python scripts/mutants.py --check              # only check that every text is found
    python scripts/mutants.py --working-tree       # against uncommitted changes too

Exit status: 0 when every entry is caught, 1 otherwise. It does not run in CI (minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).with_name("mutants.toml")
# Files that decide a synthetic model's bytes (tests/conftest.py builder_version): a break
# there builds its models into a scratch cache, not the shared one.
BUILDER_FILES = ("edge_guard/registry/synth.py", "edge_guard/harmony/vocab.py")


@dataclass
class Mutant:
    name: str
    package: str
    file: str
    edits: list[tuple[str, str]]
    tests: list[str]
    why: str = ""
    issue: bool = False
    result: str = ""
    seconds: float = 0.0
    detail: str = field(default="", repr=False)


def load(path: Path) -> list[Mutant]:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    out = []
    for i, m in enumerate(data.get("mutant", [])):
        edits = [(e["original"], e["replacement"]) for e in m.get("edit", [])]
        if "original" in m:
            edits.insert(0, (m["original"], m["replacement"]))
        if not edits or not m.get("tests"):
            raise SystemExit(f"{path}: mutant {i + 1} ({m.get('name')}) needs an edit and tests")
        out.append(
            Mutant(
                m["name"],
                m.get("package", ""),
                m["file"],
                edits,
                list(m["tests"]),
                m.get("why", ""),
                bool(m.get("issue", False)),
            )
        )
    names = [m.name for m in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SystemExit(f"{path}: duplicate mutant names {', '.join(dup)}")
    return out


def problem(tree: Path, m: Mutant) -> str | None:
    """Why `m` cannot be applied to `tree` (None when every original is found once)."""
    path = tree / m.file
    if not path.is_file():
        return f"{m.file} does not exist"
    text = path.read_text(encoding="utf-8")
    for original, _ in m.edits:
        n = text.count(original)
        if n != 1:
            first = original.strip().splitlines()[0][:60]
            return f"{'not found' if n == 0 else f'found {n} times'}: {first!r}"
    return None


def make_tree(rev: str, working: bool, scratch: Path) -> Path:
    tree = scratch / "tree"
    if working:  # tracked and untracked (not ignored) files as they are now
        listed = subprocess.run(
            ["git", "ls-files", "-z", "-co", "--exclude-standard"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        ).stdout.split(b"\0")
        for name in filter(None, listed):
            src = ROOT / os.fsdecode(name)
            if src.is_file():
                dst = tree / os.fsdecode(name)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
    else:
        subprocess.run(
            ["git", "worktree", "add", "--detach", "--quiet", str(tree), rev], cwd=ROOT, check=True
        )
    return tree


def drop_tree(tree: Path, working: bool) -> None:
    if not working:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(tree)],
            cwd=ROOT,
            check=False,
            capture_output=True,
        )


def pytest(
    tree: Path, tests: list[str], timeout: float, env: dict[str, str], *, first_failure: bool = True
) -> tuple[int, str]:
    """(exit status, output) of the named tests in `tree`; -1 when it ran past `timeout`."""
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-rfE",
        "-p",
        "no:cacheprovider",
        "-n",
        "0",
        f"--timeout={int(timeout)}",
        *(["-x"] if first_failure else []),
        *tests,
    ]
    try:
        proc = subprocess.run(
            cmd,
            cwd=tree,
            env=env,
            capture_output=True,
            text=True,
            errors="replace",  # a test may print undecodable bytes (hostile output)
            timeout=timeout * (1 if first_failure else len(tests)) + 60,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout if isinstance(exc.stdout, str) else ""
        return -1, out
    out = proc.stdout + proc.stderr
    if proc.returncode != 0 and "+++++ Timeout" in out:
        return -1, out
    return proc.returncode, out


def failing_tests(tree: Path, tests: list[str], timeout: float, env: dict[str, str]) -> set[str]:
    """The node ids (or files) among `tests` that fail unbroken, from one run of them all."""
    files = {t for t in tests if "::" not in t}
    tests = sorted(files | {t for t in tests if t.split("::")[0] not in files})
    rc, out = pytest(tree, tests, timeout, env, first_failure=False)
    if rc == 0:
        return set()
    print(out[-3000:], flush=True)
    bad = {
        line.split()[1]
        for line in out.splitlines()
        if line.startswith(("FAILED ", "ERROR ")) and len(line.split()) > 1
    }
    return bad or set(tests)  # no ids (a crash, a timeout): every selection is suspect


def run(mutants: list[Mutant], tree: Path, timeout: float, scratch: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    every = sorted({t for m in mutants for t in m.tests})
    failing = failing_tests(tree, every, timeout, env)
    for bad in sorted(failing):
        print(f"baseline: {bad} fails unbroken", flush=True)
    for m in mutants:
        why = problem(tree, m)
        if why is not None:
            m.result, m.detail = "stale", why
        elif any(f.startswith(t) or t.startswith(f) for f in failing for t in m.tests):
            m.result = "baseline fails"
        else:
            path = tree / m.file
            saved = path.read_text(encoding="utf-8")
            text = saved
            for original, replacement in m.edits:
                text = text.replace(original, replacement)
            menv = dict(env)
            if m.file in BUILDER_FILES:
                menv["EDGE_GUARD_TEST_MODELS"] = str(scratch / "models")
            path.write_text(text, encoding="utf-8")
            start = time.monotonic()
            try:
                rc, out = pytest(tree, m.tests, timeout, menv)
            finally:
                path.write_text(saved, encoding="utf-8")
            m.seconds = time.monotonic() - start
            m.result = {-1: "caught (timeout)", 0: "MISSED", 1: "caught"}.get(rc, "error")
            m.detail = "" if rc in (-1, 1) else out[-1500:]
        print(
            f"{m.result:<17} {m.name:<40} {m.seconds:6.1f} s  {m.detail.splitlines()[-1] if m.detail else ''}",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--only", action="append", default=[], help="run this entry (repeatable)")
    ap.add_argument("--package", action="append", default=[], help="entries of this package")
    ap.add_argument("--rev", default="HEAD", help="the commit to break (default HEAD)")
    ap.add_argument(
        "--working-tree",
        action="store_true",
        help="break a copy of the working tree (uncommitted changes included)",
    )
    ap.add_argument("--timeout", type=float, default=180, help="seconds per test run")
    ap.add_argument("--check", action="store_true", help="only check that each text is found")
    ap.add_argument("--list", action="store_true", help="list the entries")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = ap.parse_args(argv)
    mutants = load(args.data)
    if args.only:
        unknown = sorted(set(args.only) - {m.name for m in mutants})
        if unknown:
            ap.error(f"unknown entries: {', '.join(unknown)}")
        mutants = [m for m in mutants if m.name in args.only]
    if args.package:
        mutants = [m for m in mutants if m.package in args.package]
    if args.list:
        for m in mutants:
            print(f"{m.package:<10} {m.name:<40} {m.file}  ({m.why})")
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up the copy when stopped
    with tempfile.TemporaryDirectory(prefix="edge-guard-mutants-") as tmp:
        scratch = Path(tmp)
        tree = make_tree(args.rev, args.working_tree, scratch)
        try:
            if args.check:
                bad = [(m, problem(tree, m)) for m in mutants]
                for m, why in bad:
                    print(f"{'ok' if why is None else 'stale':<6} {m.name:<40} {why or ''}")
                return int(any(why for _, why in bad))
            run(mutants, tree, args.timeout, scratch)
        finally:
            drop_tree(tree, args.working_tree)
    counts: dict[str, int] = {}
    for m in mutants:
        key = "caught" if m.result.startswith("caught") else m.result
        counts[key] = counts.get(key, 0) + 1
    print("\n" + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) + f" of {len(mutants)}")
    if args.json:
        args.json.write_text(json.dumps([m.__dict__ for m in mutants], indent=1, default=list))
    return int(any(not m.result.startswith("caught") for m in mutants))


if __name__ == "__main__":
    sys.exit(main())
