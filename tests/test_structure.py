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


def _architecture_tree() -> list[tuple[Path, str]]:
    """docs/architecture.md's folder tree as ``(folder, name)`` pairs: each file or folder the tree
    names, with the folder it is named under.  A line that starts with a folder (``tasks/``) opens
    it for the names of its description and of its continuation lines; a line that starts with
    files lists files of the enclosing folder."""
    page = (SRC.parent / "docs" / "architecture.md").read_text()
    tree = next(block for block in page.split("```")[1::2] if block.lstrip().startswith("src/memoptim/"))
    stack: list[tuple[int, Path]] = [(-1, SRC.parent)]
    context, named = SRC.parent, []
    for line in tree.strip("\n").splitlines():
        indent = len(line) - len(line.lstrip())
        first = line.split()[0]
        names = re.findall(r"(?<![\w./`:])(\w+\.py|[\w/]+/)(?![\w.])", line)
        if re.fullmatch(r"[\w/]+/|\w+\.py,?", first):  # an entry, not a continuation line
            while stack[-1][0] >= indent:
                stack.pop()
            parent = stack[-1][1]
            context = parent / first.rstrip("/") if first.endswith("/") else parent
            if first.endswith("/"):
                stack.append((indent, context))
                named.append((parent, first))
                names = names[1:]
        named += [(context, n) for n in names]
    return named


def test_the_architecture_page_lays_out_the_package_as_it_is():
    """docs/architecture.md's folder tree names every top-level module and package of memoptim,
    of ``optim/`` and of ``experiments/``, each in its own folder, and nothing that is not there."""
    named = _architecture_tree()
    wrong = [f"{n} (under {d.relative_to(SRC.parent)})" for d, n in named if not (d / n.rstrip("/")).exists()]
    assert not wrong, f"the architecture page names what is not there: {wrong}"
    for package in (PACKAGE, PACKAGE / "optim", PACKAGE / "experiments"):
        entries = {p.name + ("/" if p.is_dir() else "") for p in package.iterdir()
                   if (p.suffix == ".py" or (p / "__init__.py").is_file()) and not p.name.startswith("__")}
        listed = {n for d, n in named if d == package}
        assert entries <= listed, f"{package.relative_to(SRC)}: not on the page: {sorted(entries - listed)}"
