"""Plain `pytest` (the console script, not `python -m pytest`) collects every test module.

`python -m pytest` puts the working directory on sys.path; the `pytest` script does not,
so modules that import the shared helpers (`from tests.runs_helpers import …`) failed
with "No module named 'tests'" until pyproject set `pythonpath`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The modules that failed under plain `pytest` ("No module named 'tests'") before the fix.
BROKEN_BEFORE = [
    "tests/test_compare.py",
    "tests/test_quantize.py",
    "tests/test_report.py",
    "tests/test_runs.py",
    "tests/hostile/test_hostile_models.py",
    "tests/tui/test_app.py",
    "tests/tui/test_screens.py",
    "tests/tui/test_snapshots.py",
    "tests/tui/test_workbench.py",
]


def helper_importers() -> list[str]:
    """Every test module that imports a `tests.<helper>` module (more are added over time)."""
    return sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / "tests").rglob("test_*.py")
        if p.name != Path(__file__).name
        and any(s in p.read_text(encoding="utf-8") for s in ("from tests.", "import tests."))
    )


def test_the_modules_that_broke_still_import_tests_helpers() -> None:
    assert set(BROKEN_BEFORE) <= set(helper_importers())


def test_plain_pytest_collects_modules_that_import_tests_helpers() -> None:
    script = Path(sys.executable).with_name("pytest")
    modules = helper_importers()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [str(script), "--collect-only", "-q", "-p", "no:cacheprovider", *modules],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-2000:]  # before: 9 import errors
    collected = {line.split("::")[0] for line in proc.stdout.splitlines() if "::" in line}
    assert collected == set(modules)
