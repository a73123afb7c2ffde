"""A notebook's `parameters` cell: read it without running it, and take values for it from the command line.

Each `name = literal  # description` line of the cell gives a parameter, its default and its description. Values
given on the command line are YAML/JSON literals (never `eval`); book/param_rules.py checks them against the cell
before anything executes. Torch-free: `kdsae run --help` builds on it.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kdsae_core.common import paths
from kdsae_core.common.errors import BadFile, RunFolderError

SOURCES = ("local", "hub")
FIGURE_FOLDER_PARAMETER = "out"  # every chapter names its figure folder `out`; `kdsae run --out` sets it
# Parameters that name an existing file or folder. One rule for relative paths, the command line's: a path given
# to `kdsae run` is relative to the folder the command runs in, and is made absolute (and checked) before the
# notebook starts. A notebook's own defaults, and the book's build, name paths from the repository root.
PATH_PARAMETERS = ("run", "results_file", "reference_dir", "toy_results")


@dataclass(frozen=True)
class Parameter:
    name: str
    default: Any
    help: str = ""

    @property
    def kind(self) -> str:
        """The type a value must have: that of the default (None: any literal)."""
        d = self.default
        if d is None:
            return "any"
        return {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "dict"}.get(type(d), "any")

    def describe(self) -> str:
        return f"{self.name}={self.default!r}" + (f" ({self.kind})" if self.kind != "any" else "")


# ---- reading the parameters cell -----------------------------------------------------------------------
def load_notebook(path: str | Path):
    """A jupytext .py (percent) or .ipynb notebook as an nbformat notebook."""
    import jupytext  # imported when a notebook is read, so that `kdsae --help` starts without it

    path = Path(path)
    if not path.is_file():
        raise BadFile(f"notebook {path} does not exist (`kdsae run --list` shows the chapters).")
    try:
        return jupytext.read(path)
    except Exception as e:  # noqa: BLE001 - any parse failure is one message for the user
        raise BadFile(f"{path} is not a readable notebook ({type(e).__name__}: {e}).") from None


def parameters_cell(nb) -> str:
    cells = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.get("metadata", {}).get("tags", [])]
    if not cells:
        raise BadFile("the notebook has no cell tagged `parameters`, so it takes no parameters.")
    return cells[0].source


def read_parameters(source: str) -> list[Parameter]:
    """Parameters of a `parameters` cell, in order: `name = literal  # description` lines."""
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        raise BadFile(f"the parameters cell is not valid Python ({e.msg}, line {e.lineno}).") from None
    comments = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    found = []
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            continue
        try:
            default = ast.literal_eval(node.value)
        except ValueError:
            raise BadFile(
                f"parameter {node.targets[0].id} has a default that is not a literal "
                f"({ast.unparse(node.value)}); parameters cells hold literals only."
            ) from None
        found.append(Parameter(node.targets[0].id, default, comments.get(node.end_lineno, "")))
    return found


def notebook_parameters(path: str | Path) -> list[Parameter]:
    return read_parameters(parameters_cell(load_notebook(path)))


# ---- values ---------------------------------------------------------------------------------------------
class _Loader(yaml.SafeLoader):
    """YAML with the 1.2 core booleans only: `yes`, `no`, `on` and `off` stay strings (YAML 1.1 would turn
    `-p source no` into False)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def parse_value(text: str) -> Any:
    """A command-line value as a YAML/JSON literal: 1.5, true, [10, 20], null, zipf:1 (a string)."""
    try:
        return yaml.load(text, Loader=_Loader) if text.strip() else text
    except yaml.YAMLError:
        return text  # not a literal: keep the text (a string parameter accepts it; others refuse it)


def load_parameter_file(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = yaml.load(path.read_text(), Loader=_Loader)
    except FileNotFoundError:
        raise BadFile(f"parameter file {path} does not exist.") from None
    except yaml.YAMLError as e:
        raise BadFile(f"parameter file {path} is not valid YAML ({str(e).splitlines()[0]}).") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise BadFile(f"parameter file {path} must be a mapping of parameter names to values.")
    return data


def raw_text(value: Any) -> str:
    return (
        value
        if isinstance(value, str)
        else yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
    )


# ---- paths ---------------------------------------------------------------------------------------------
def absolute_paths(given: dict) -> dict:
    """`given` with every relative path parameter made absolute from the current folder (see PATH_PARAMETERS)."""
    return {
        k: str(Path(v).expanduser().absolute()) if k in PATH_PARAMETERS and isinstance(v, str) and v else v
        for k, v in given.items()
    }


def resolve(path: str | Path) -> Path:
    """A path parameter inside a notebook: absolute (as `kdsae run` passes every given path), or relative to the
    repository root (the chapters' defaults)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else paths.REPO_ROOT / p


def figure_folder(out: str | Path, chapter: str) -> Path:
    """The folder a chapter writes its figures into: `out`, or _build/figures/<chapter>; never results/."""
    folder = (resolve(out) if out else paths.figures_out(chapter)).resolve()
    if inside_results(folder):
        raise RunFolderError(f"figure folder {folder} is inside results/: figures are derived, write them elsewhere.")
    return folder


def inside_results(folder: Path) -> bool:
    results = paths.RESULTS.resolve()
    folder = Path(folder).resolve()
    return folder == results or results in folder.parents
