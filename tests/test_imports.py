"""Import hygiene, read from the source (nothing imported): the layer order holds, no cycles.

`LAYERS` is the rule, bottom to top: a module may import its own layer and the layers below
it, never one above. Shells (the service, the TUI, the CLI) are the top layer and import
each other only where `SHELL_EDGES` says (the CLI starts the server and opens the TUI).
Every `import` counts, inside functions too (a lazy import still ties two modules together);
only those under `if TYPE_CHECKING:` are skipped. `KNOWN_EXCEPTIONS` are today's breaks of
the order, each named with the issue that removes it; any other break fails, and so does an
exception that no longer happens (delete it from the list).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import edge_guard

ROOT = Path(edge_guard.__file__).parent

# The layer order, bottom -> top. Names are edge_guard's top-level modules and packages
# ("edge_guard" is the package's own __init__).
LAYERS = (
    ("foundation", ("edge_guard", "defaults", "errors", "sanitize", "paths", "lazy", "config")),
    ("gguf reading", ("gguf",)),
    ("harmony", ("harmony",)),
    ("option values", ("settings.values", "settings.keep_alive")),
    ("data", ("conversation", "response", "result")),
    ("engine", ("engine",)),
    ("store", ("store",)),
    ("policy", ("policy",)),
    ("models, backends", ("registry", "backends", "datasets", "warm")),
    ("classify path", ("classification", "settings")),
    ("runs", ("runs",)),
    ("api", ("api",)),
    ("workflows", ("policy_tests", "compare", "study", "review", "report", "bench")),
    ("shells", ("service", "tui", "cli", "__main__")),
)
# A unit is a top-level module or package, or a dotted part of one that sits in another
# layer than its package ("settings.values": the option checks the backends use).
# The only imports between shells: (importing module, imported shell).
SHELL_EDGES = {
    ("edge_guard.__main__", "cli"),
    ("edge_guard.cli.serve_cmd", "service"),  # `edge-guard serve`
    ("edge_guard.cli.tui_cmd", "tui"),  # `edge-guard tui`
}
# Today's breaks of the order: (importing module, imported module or package) -> the issue
# whose work removes it.
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {}


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


Layers = tuple[tuple[str, tuple[str, ...]], ...]


def _unit(module: str, layers: Layers = LAYERS) -> str:
    """The unit of LAYERS a module belongs to: the longest dotted name that LAYERS lists, else
    its top-level module or package ("edge_guard" for the root)."""
    parts = module.split(".")[1:]
    listed = {unit for _, units in layers for unit in units}
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in listed:
            return ".".join(parts[:n])
    return parts[0] if parts else module


def layer_of(module: str, layers: Layers = LAYERS) -> int:
    unit = _unit(module, layers)
    for level, (_, units) in enumerate(layers):
        if unit in units:
            return level
    raise KeyError(f"{module}: its package {unit!r} is in no layer of LAYERS (add it)")


def layer_breaks(
    graph: dict[str, set[str]],
    layers: Layers = LAYERS,
    shell_edges: set[tuple[str, str]] = SHELL_EDGES,
) -> list[tuple[str, str]]:
    """(importer, imported) for every import against the order: up a layer, or from one
    shell to another outside `shell_edges`."""
    top = len(layers) - 1
    bad = []
    for name, deps in sorted(graph.items()):
        mine = layer_of(name, layers)
        for dep in sorted(deps):
            theirs = layer_of(dep, layers)
            between_shells = mine == theirs == top and _unit(name, layers) != _unit(dep, layers)
            if theirs > mine or (between_shells and (name, _unit(dep, layers)) not in shell_edges):
                bad.append((name, dep))
    return bad


def _excepted(brk: tuple[str, str]) -> tuple[str, str] | None:
    name, dep = brk
    for key in KNOWN_EXCEPTIONS:
        if name == key[0] and (dep == key[1] or dep.startswith(key[1] + ".")):
            return key
    return None


def test_every_module_is_in_a_layer() -> None:
    graph = import_graph(ROOT)
    assert len(graph) > 100  # every module was read
    for name in graph:
        layer_of(name)


def test_no_import_goes_up_the_layers() -> None:
    breaks = layer_breaks(import_graph(ROOT))
    assert [b for b in breaks if _excepted(b) is None] == []
    used = {_excepted(b) for b in breaks}
    assert sorted(set(KNOWN_EXCEPTIONS) - used) == [], "no longer happens: delete it"


def test_no_import_cycles_between_edge_guard_modules() -> None:
    graph = import_graph(ROOT)
    assert len(graph) > 100
    assert cycles(graph) == []


def test_the_checks_catch_lazy_imports_up_the_layers_and_between_shells(tmp_path: Path) -> None:
    pkg = tmp_path / "edge_guard"
    for folder in (pkg, pkg / "cli", pkg / "tui", pkg / "service", pkg / "core"):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "__init__.py").write_text("")
    (pkg / "core" / "a.py").write_text("from edge_guard.core import b\n")
    (pkg / "core" / "b.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from edge_guard.tui import app\n"
        "def f():\n    from . import a\n    from edge_guard.cli.main import run\n"
    )
    (pkg / "cli" / "main.py").write_text("import edge_guard.tui.app\n")
    (pkg / "cli" / "serve.py").write_text("from edge_guard.service import app\n")
    (pkg / "tui" / "app.py").write_text("def g():\n    from edge_guard.cli import main\n")
    (pkg / "service" / "app.py").write_text("")
    layers = (("core", ("edge_guard", "core")), ("shells", ("service", "tui", "cli")))
    graph = import_graph(pkg)
    assert cycles(graph) == [
        ["edge_guard.cli.main", "edge_guard.tui.app"],
        ["edge_guard.core.a", "edge_guard.core.b"],
    ]
    assert layer_breaks(graph, layers, {("edge_guard.cli.serve", "service")}) == [
        ("edge_guard.cli.main", "edge_guard.tui.app"),  # shell to shell, not allowed
        ("edge_guard.core.b", "edge_guard.cli.main"),  # lazy, up a layer
        ("edge_guard.tui.app", "edge_guard.cli"),
        ("edge_guard.tui.app", "edge_guard.cli.main"),
    ]
    with pytest.raises(KeyError, match="'extra' is in no layer"):
        layer_of("edge_guard.extra.x", layers)


# -- private names ------------------------------------------------------------------------
# No module reaches into another's underscore names: `x._name` (x not `self`/`cls`),
# `getattr(x, "_name")` (and setattr/hasattr/delattr) and `from m import _name` all fail,
# dunders aside. The only exceptions are other projects' privates the code must touch:
# (file under edge_guard/, name) -> why.
FOREIGN_PRIVATES: dict[tuple[str, str], str] = {
    ("backends/server_http.py", "_pool"): "httpx's HTTPTransport has no public handle on its "
    "connection pool, where the per-request deadline clock goes",
    ("backends/server_http.py", "_network_backend"): "httpcore's pool takes its network "
    "backend only as this attribute; the deadline clock wraps it",
    ("policy/parser_child.py", "_exit"): "os._exit: the standard library's exit without "
    "cleanup, documented public API (a forked worker must not run the parent's atexit)",
}
_ACCESSORS = ("getattr", "setattr", "hasattr", "delattr")


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _own(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id in ("self", "cls")


def private_reaches(root: Path) -> list[tuple[str, int, str]]:
    """(file under root, line, name) for every reach into another object's or module's
    underscore name (see FOREIGN_PRIVATES' comment)."""
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Attribute) and _private(node.attr) and not _own(node.value):
                names = [node.attr]
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in _ACCESSORS
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)
                and _private(node.args[1].value)
                and not _own(node.args[0])
            ):
                names = [node.args[1].value]
            elif isinstance(node, ast.ImportFrom):
                names = [a.name for a in node.names if _private(a.name)]
            out += [(rel, node.lineno, name) for name in names]
    return sorted(out)


def test_no_module_reaches_into_another_modules_private_names() -> None:
    reaches = private_reaches(ROOT)
    assert [r for r in reaches if (r[0], r[2]) not in FOREIGN_PRIVATES] == []
    used = {(r[0], r[2]) for r in reaches}
    assert sorted(set(FOREIGN_PRIVATES) - used) == [], "no longer happens: delete it"


def test_the_private_check_catches_every_form(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text(
        "from m import _hidden, shown\n"
        "import os\n"
        "class C:\n"
        "    def f(self, clf):\n"
        "        self._ok = cls_ok = self.x._deep\n"
        "        clf._row(1)\n"
        "        getattr(clf, '_cache', None)\n"
        "        setattr(self, '_mine', 1)\n"
        "        return clf.__dict__, getattr(clf, '__name__'), super()._up()\n"
        "    @classmethod\n"
        "    def g(cls):\n"
        "        return cls._shared, os.path\n"
    )
    assert private_reaches(tmp_path) == [
        ("a.py", 1, "_hidden"),
        ("a.py", 5, "_deep"),
        ("a.py", 6, "_row"),
        ("a.py", 7, "_cache"),
        ("a.py", 9, "_up"),
    ]
