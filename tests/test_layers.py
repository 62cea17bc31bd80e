"""The package's layers, checked from the source (AST): every import —
top-level or inside a function — goes to the same layer or one below, and no
two modules import each other, directly or round a cycle.

The order is docs/architecture.md's layout, bottom to top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "gradcli"

# Bottom to top. A module belongs to the first entry its dotted name starts with.
LAYERS = [
    ["gradcli.core.rowform", "gradcli.core.errors", "gradcli.core.parallel", "gradcli._version", "gradcli.core.sizes"],
    ["gradcli.core.options"],
    ["gradcli.core"],
    ["gradcli.io"],
    ["gradcli.catalogue"],
    ["gradcli.usercode"],
    ["gradcli.problem"],
    ["gradcli.backends"],
    ["gradcli.compute"],
    ["gradcli.checking"],
    ["gradcli.certify", "gradcli.health"],
    ["gradcli.render"],
    ["gradcli.cli", "gradcli.testing", "gradcli.pytest_plugin", "gradcli.__main__", "gradcli"],
]


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = modules()


def layer_of(name: str) -> int:
    for level, prefixes in enumerate(LAYERS):
        if any(name == p or name.startswith(p + ".") for p in prefixes if p != "gradcli") or name == "gradcli" and "gradcli" in prefixes:
            return level
    raise AssertionError(f"{name} is in no layer: add it to LAYERS and to the layout in docs/architecture.md")


def imports(name: str) -> set[str]:
    """The gradcli modules ``name`` imports, anywhere in its file."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            submodules = {f"{target}.{a.name}" for a in node.names} & MODULES.keys()
            if submodules and len(submodules) == len(node.names):
                found |= submodules  # `from . import expr`: the submodule, not the package
            elif target in MODULES:
                found.add(target)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in MODULES}
    return found - {name}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_go_down_or_across_never_up(name):
    own = layer_of(name)
    upward = sorted(t for t in imports(name) if layer_of(t) > own)
    assert not upward, f"{name} (layer {own}) imports from higher layers: {upward}"


def test_rowform_imports_nothing_else_from_gradcli():
    for name in MODULES:
        if name.startswith("gradcli.core.rowform"):
            assert all(t.startswith("gradcli.core.rowform") for t in imports(name)), name


def test_no_import_cycles():
    graph = {name: imports(name) for name in MODULES}
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [])
    assert not cycles, " ; ".join(" -> ".join(c) for c in cycles)


def test_the_architecture_page_names_every_module():
    page = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    layout = page[page.index("## Layout"):]
    missing = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                     if p.name != "__init__.py" and p.name not in layout)
    assert not missing, f"docs/architecture.md's layout leaves out {missing}"
