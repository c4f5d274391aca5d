"""Import hygiene, read from the source (nothing imported): no cycles, shells stay shells.

Every `import` counts, inside functions too (a lazy import still ties two modules
together); only those under `if TYPE_CHECKING:` are skipped. The core never imports the
command line (`edge_guard.cli`) or the terminal UI (`edge_guard.tui`); the TUI never
imports the CLI; only the CLI's `tui` command opens the TUI.
"""

from __future__ import annotations

import ast
from pathlib import Path

import edge_guard

ROOT = Path(edge_guard.__file__).parent
# module -> the shell packages it may import besides its own
ALLOWED_SHELL_IMPORTS = {
    "edge_guard.__main__": {"edge_guard.cli"},
    "edge_guard.cli.tui_cmd": {"edge_guard.tui"},
}
SHELLS = ("edge_guard.cli", "edge_guard.tui")


def module_names(root: Path) -> dict[str, tuple[Path, bool]]:
    """module name -> (file, is a package) for every .py file under `root`."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts.pop()
        out[".".join(parts)] = (path, is_pkg)
    return out


def _runtime_nodes(tree: ast.AST):  # type: ignore[no-untyped-def]
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the package's modules it imports (anywhere in its body; not its parents)."""
    modules = module_names(root)
    graph: dict[str, set[str]] = {}
    for name, (path, is_pkg) in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        package = name if is_pkg else name.rpartition(".")[0]
        found: set[str] = set()
        for node in _runtime_nodes(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            for t in targets:
                while t and t not in modules:  # the longest module the import names
                    t = t.rpartition(".")[0]
                # A module importing its own parent package (a package's __init__ re-exports
                # its children) is not a cycle of design, as in ../shared/tools/import_graph.py.
                if t and t != name and not name.startswith(t + "."):
                    found.add(t)
        graph[name] = found
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on.add(start)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    group = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        group.append(w)
                        if w == v:
                            break
                    if len(group) > 1:
                        out.append(sorted(group))
    return out


def shell_breaks(graph: dict[str, set[str]]) -> list[str]:
    """'A imports B' for each import of a shell package from outside it (not allowed)."""
    bad = []
    for name, deps in sorted(graph.items()):
        own = next((s for s in SHELLS if name == s or name.startswith(s + ".")), None)
        allowed = ALLOWED_SHELL_IMPORTS.get(name, set())
        for dep in sorted(deps):
            shell = next((s for s in SHELLS if dep == s or dep.startswith(s + ".")), None)
            if shell is not None and shell != own and shell not in allowed:
                bad.append(f"{name} imports {dep}")
    return bad


def test_no_import_cycles_between_edge_guard_modules() -> None:
    graph = import_graph(ROOT)
    assert len(graph) > 100  # every module was read
    assert cycles(graph) == []


def test_core_never_imports_the_cli_or_the_tui() -> None:
    assert shell_breaks(import_graph(ROOT)) == []


def test_the_checks_catch_lazy_cycles_and_shell_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "edge_guard"
    for folder in (pkg, pkg / "cli", pkg / "tui", pkg / "core"):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "__init__.py").write_text("")
    (pkg / "core" / "a.py").write_text("from edge_guard.core import b\n")
    (pkg / "core" / "b.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from edge_guard.tui import app\n"
        "def f():\n    from . import a\n    from edge_guard.cli.main import run\n"
    )
    (pkg / "cli" / "main.py").write_text("import edge_guard.tui.app\n")
    (pkg / "tui" / "app.py").write_text("from edge_guard.cli import main\n")
    graph = import_graph(pkg)
    assert cycles(graph) == [
        ["edge_guard.cli.main", "edge_guard.tui.app"],
        ["edge_guard.core.a", "edge_guard.core.b"],
    ]
    assert shell_breaks(graph) == [
        "edge_guard.cli.main imports edge_guard.tui.app",
        "edge_guard.core.b imports edge_guard.cli.main",
        "edge_guard.tui.app imports edge_guard.cli",
        "edge_guard.tui.app imports edge_guard.cli.main",
    ]
