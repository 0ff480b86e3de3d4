"""The package's shape: no import cycles, no launcher on ``import memoptim``, small units.

The import graph counts every ``import`` statement of a module, also those inside functions
(deferring an import hides a cycle from Python, not from a reader).  An edge goes to the module
named; importing a submodule of a package is not an edge to the package's ``__init__``.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "memoptim"
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 600


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The memoptim modules ``path`` (module ``name``) imports, resolved to modules."""
    out: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], base]).strip(".")
            for a in node.names:  # "from pkg import submodule" names the submodule
                out.add(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base)
    return {m for m in out if m in known and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(path, name, known) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a path, or ``None``."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_src_has_no_import_cycles():
    graph = _graph()
    assert graph.get("memoptim.optim.driver"), "the graph is empty"
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_import_memoptim_does_not_load_the_distributed_launcher():
    code = ("import sys, memoptim; "
            "print(sorted(m for m in sys.modules if m.startswith('memoptim.distributed.launcher') "
            "or m in ('multiprocessing.forkserver', 'socket', 'torch.multiprocessing.spawn')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "memoptim.distributed.launcher" not in out.stdout, out.stdout
    from memoptim.distributed import launch  # still there when asked for

    assert callable(launch)


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_modules_and_functions_stay_small(path):
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{path.name}: over {MAX_MODULE_LINES} lines"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            assert length <= MAX_FUNCTION_LINES, f"{path.name}:{node.lineno} {node.name} is {length} lines"


def test_the_architecture_page_lays_out_the_package_as_it_is():
    """docs/architecture.md's folder tree names every top-level module and package of memoptim,
    of ``optim/`` and of ``experiments/``, and no file or folder that does not exist."""
    page = (SRC.parent / "docs" / "architecture.md").read_text()
    tree = page.split("```")[1]
    named = set(re.findall(r"([\w]+(?:\.py|/))", tree))
    src = PACKAGE
    existing = {p.name + ("/" if p.is_dir() else "") for p in src.rglob("*") if "__pycache__" not in p.parts}
    assert not named - existing - {"src/", "memoptim/"}, sorted(named - existing)
    for package in (src, src / "optim", src / "experiments"):
        entries = {p.name + ("/" if p.is_dir() else "") for p in package.iterdir()
                   if (p.suffix == ".py" or (p / "__init__.py").is_file()) and not p.name.startswith("__")}
        assert entries <= named, f"{package.relative_to(SRC)}: not on the page: {sorted(entries - named)}"
