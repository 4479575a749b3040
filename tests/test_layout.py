"""The package layout's rules: no import cycle among tddfa modules, dependencies pointing one way
(lower layers never import upper ones at module level), and no oversized module."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "tddfa"

#: Layer of each top-level package (a module may import, at module level, only from its own
#: layer or lower ones). Function-level (lazy) imports are free: they load on demand.
LAYERS = {
    "errors": 0,
    "io": 1, "assets": 1,
    "models": 2, "face": 2, "detection": 2, "render": 2, "export": 2,
    "pipeline": 3, "video": 4, "evaluation": 4, "train": 4, "v1": 4,
    "batch": 5, "serve": 5,
    "cli": 6, "__main__": 7,
    # the root package re-exports the result types and, lazily, FaceAligner
    "__init__": 3,
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _top_level_imports(path: Path) -> set[str]:
    """tddfa modules imported at module level (outside functions; TYPE_CHECKING blocks skipped)."""
    tree = ast.parse(path.read_text())
    out: set[str] = set()

    def visit(nodes):
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tddfa"):
                out.add(node.module)
            elif isinstance(node, ast.Import):
                out.update(a.name for a in node.names if a.name.startswith("tddfa"))
            elif isinstance(node, (ast.If, ast.Try, ast.With)):
                visit(getattr(node, "body", []))
                visit(getattr(node, "orelse", []))
                for h in getattr(node, "handlers", []):
                    visit(h.body)

    visit(tree.body)
    return out


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        deps = set()
        for mod in _top_level_imports(path):
            while mod not in files and "." in mod:
                mod = mod.rsplit(".", 1)[0]
            if mod in files and mod != name:
                deps.add(mod)
        graph[name] = deps
    return graph


def _layer(module: str) -> int:
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else "__init__"
    return LAYERS.get(key, 99)


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in graph[node]:
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep):] + [dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                dfs(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            dfs(node)


def test_dependencies_point_down():
    bad = []
    for name, deps in _graph().items():
        for dep in deps:
            # a package __init__ may re-export its own modules
            if dep.startswith(name + "."):
                continue
            if _layer(dep) > _layer(name):
                bad.append(f"{name} (layer {_layer(name)}) imports {dep} (layer {_layer(dep)})")
    assert not bad, "\n".join(bad)


def test_every_package_is_known_and_modules_stay_small():
    for path in SRC.rglob("*.py"):
        name = _module_name(path)
        assert _layer(name) < 99, f"{name}: add its package to LAYERS in tests/test_layout.py"
        n = len(path.read_text().splitlines())
        assert n <= 560, f"{name} has {n} lines: split it (one module per idea)"
