"""The package's layers contract, checked over the AST of every module (lazy imports included).

Data flows one way: images -> dense features -> region features -> similarity -> predictions /
losses / verdicts. A module may import from its own package and from lower layers only; two
packages of the same layer are independent. No import circles between modules, and no module
over 500 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "densevlm"

# Lowest first. A top-level name of the package (module or subpackage) belongs to one layer.
LAYERS: list[set[str]] = [
    {"errors", "version", "lazy"},
    {"fileio", "devices"},
    {"backbones", "imaging", "regions", "losses"},
    {"vocab"},
    {"data"},  # data/synth builds its world's vocabulary
    {"model", "dense"},
    {"retrieval", "inference", "review"},
    {"training", "evaluation", "report"},
    {"export"},  # its accuracy gate runs the evaluation protocol
    {"inspection"},
    {"cli"},
    {"__init__", "__main__"},
]
LAYER_OF = {name: rank for rank, names in enumerate(LAYERS) for name in names}
MAX_LINES = 500


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, path: Path) -> set[str]:
    """Modules of the package that ``module`` imports, anywhere in its body."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, path, node)
            names = [target] + [f"{target}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if (name == PACKAGE or name.startswith(PACKAGE + ".")) and name != module:
                found.add(name)
    return found


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"  # the package itself: its public surface


def test_every_top_level_name_has_a_layer():
    unknown = sorted({_top(m) for m in MODULES} - set(LAYER_OF))
    assert not unknown, f"add these to LAYERS in {__file__}: {unknown}"


def test_no_module_imports_a_higher_layer_or_a_sibling_package():
    bad = []
    for module, targets in GRAPH.items():
        own = _top(module)
        for target in targets:
            other = _top(target)
            if other == own or own not in LAYER_OF or other not in LAYER_OF:
                continue
            if LAYER_OF[other] >= LAYER_OF[own]:
                bad.append(f"{module} -> {target}")
    assert not bad, "imports that go up or sideways:\n" + "\n".join(sorted(bad))


def test_no_import_circles():
    seen: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[str] = []

    def visit(node: str) -> None:
        seen[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH[node]):
            if nxt.startswith(node + ".") or node.startswith(nxt + "."):
                continue  # a package and its own modules (re-exports) are not a circle
            if seen.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in seen:
                visit(nxt)
        stack.pop()
        seen[node] = 2

    for module in sorted(GRAPH):
        if module not in seen:
            visit(module)
    assert not cycles, "import circles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_is_under_the_size_limit(module):
    lines = MODULES[module].read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"{MODULES[module]} has {lines} lines (limit {MAX_LINES})"


def test_every_subpackage_declares_its_public_names():
    missing = []
    for path in sorted((SRC / PACKAGE).rglob("__init__.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = [t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)]
        if "__all__" not in names:
            missing.append(str(path.relative_to(SRC)))
    dirs = [p for p in (SRC / PACKAGE).rglob("*") if p.is_dir() and any(p.glob("*.py"))]
    missing += [str(d.relative_to(SRC)) for d in dirs if not (d / "__init__.py").exists()]
    assert not missing, f"subpackages without __init__.py / __all__: {missing}"
