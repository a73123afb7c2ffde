"""A notebook's `parameters` cell: read it, and check values against it before anything executes.

The cell is read without running it: each `name = literal  # description` line gives a parameter, its
default and its description. Values given on the command line are YAML/JSON literals (never `eval`),
checked for type against the default, then for range by the notebook's own rules (the toy chapter
builds its `ToyConfig`, whose `validate` is the one the sweep uses).
"""

from __future__ import annotations

import ast
import io
import math
import re
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from kdsae_core.common import paths
from kdsae_core.common.errors import BadFile, InvalidParameter, RunFolderError

SOURCES = ("local", "hub")
TRIALS = ("A", "B", "C")
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
    import jupytext
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
            raise BadFile(f"parameter {node.targets[0].id} has a default that is not a literal "
                          f"({ast.unparse(node.value)}); parameters cells hold literals only.") from None
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
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))


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


def _plain(value: Any) -> bool:
    """JSON-representable with finite numbers (what papermill injects and run.json records)."""
    if value is None or isinstance(value, (bool, int, str)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def _type_ok(kind: str, value: Any) -> Any:
    """The value converted to the parameter's type, or raise TypeError."""
    if not _plain(value):
        raise TypeError(kind)
    if kind == "any":
        return value
    if kind == "bool":
        if isinstance(value, bool):
            return value
    elif kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind == "str":
        if isinstance(value, str):
            return value
    elif kind == "list":
        if isinstance(value, list):
            return value
    elif kind == "dict":
        if isinstance(value, dict):
            return value
    raise TypeError(kind)


def _valid_list(params: list[Parameter]) -> str:
    return "valid parameters: " + ", ".join(p.describe() for p in params)


def check(notebook: str | Path, given: dict[str, Any], raw: set[str] = frozenset()) -> dict[str, Any]:
    """Every parameter's value (defaults, then `given`), checked; raise InvalidParameter with one line
    naming the problem and listing the valid parameters. `raw` names values that came as command-line
    text: a string parameter takes such text as it is (`-p run 2024` is the string "2024")."""
    notebook = Path(notebook)
    params = notebook_parameters(notebook)
    by_name = {p.name: p for p in params}
    unknown = [k for k in given if k not in by_name]
    if unknown:
        raise InvalidParameter(f"{notebook.name} has no parameter {', '.join(map(repr, unknown))}; "
                               f"{_valid_list(params)}.")
    values = {p.name: p.default for p in params}
    for name, value in given.items():
        p = by_name[name]
        if p.kind == "str" and name in raw:
            value = value if isinstance(value, str) else raw_text(value)
        try:
            values[name] = _type_ok(p.kind, value)
        except TypeError:
            what = "a JSON-style literal with finite numbers" if p.kind == "any" else f"a {p.kind}"
            raise InvalidParameter(f"parameter {name} of {notebook.name} must be {what} "
                                   f"(got {value!r}, a {type(value).__name__}); {_valid_list(params)}.") from None
    try:
        _check_common(values)
        rule = RULES.get(notebook.stem)
        if rule:
            rule(values)
    except InvalidParameter as e:
        # The config dataclasses word their errors for the command line (--d-teacher); here it is d_teacher.
        problem = re.sub(r"--([a-z][a-z-]*)", lambda m: m.group(1).replace("-", "_"), str(e)).rstrip(".")
        raise InvalidParameter(f"{notebook.name}: {problem}; {_valid_list(params)}.") from None
    return values


def raw_text(value: Any) -> str:
    return value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


# ---- range rules ----------------------------------------------------------------------------------------
def absolute_paths(given: dict) -> dict:
    """`given` with every relative path parameter made absolute from the current folder (see PATH_PARAMETERS)."""
    return {k: str(Path(v).expanduser().absolute()) if k in PATH_PARAMETERS and isinstance(v, str) and v else v
            for k, v in given.items()}


def _check_paths(values: dict) -> None:
    """Path parameters name something that exists (a run folder holds config.json) before anything executes."""
    for name in PATH_PARAMETERS:
        v = values.get(name)
        if not (isinstance(v, str) and v):
            continue
        if not resolve(v).exists():
            raise InvalidParameter(f"{name} {v} does not exist (a relative path is taken from the folder you run "
                                   "kdsae in)")
        if name == "run" and values.get("source", "local") == "local" and not paths.run_config(resolve(v)).exists():
            raise InvalidParameter(f"run {v} is not a run folder (it has no config.json from `kdsae train` or "
                                   "`kdsae download`)")


def _check_common(values: dict) -> None:
    """Names that mean the same thing in every chapter (ARCHITECTURE.md)."""
    _check_paths(values)
    if "source" in values and values["source"] not in SOURCES:
        raise InvalidParameter(f"source must be one of {', '.join(SOURCES)} (got {values['source']!r})")
    if "trial" in values and values["trial"] is not None and values["trial"] not in TRIALS:
        raise InvalidParameter(f"trial must be one of {', '.join(TRIALS)} (got {values['trial']!r})")
    if "rerun" in values and not isinstance(values["rerun"], bool):
        raise InvalidParameter(f"rerun must be true or false (got {values['rerun']!r})")
    layers = values.get("layers")
    if layers is not None:
        items = layers if isinstance(layers, list) else [layers]
        if not items or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in items):
            raise InvalidParameter(f"layers must be null or a list of 0-based layer numbers (got {layers!r})")


TOY_LISTS = {"n": int, "alpha": float, "d_teacher": int, "widths": int}
TOY_SCALARS = {"importance": str, "mode": str, "steps": int, "batch": int, "lr": float, "seeds": int,
               "eval_samples": int, "seed": int}


def _as_list(name: str, value: Any, kind: type) -> list:
    items = value if isinstance(value, list) else [value]
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and (kind is float or float(v).is_integer())
             for v in items)
    if not ok or not items:
        what = "numbers" if kind is float else "whole numbers"
        raise InvalidParameter(f"{name} must be a number or a list of {what}, e.g. [0.8, 0.9] (got {value!r})"
                               if kind is float else f"{name} must be a whole number or a list of them (got {value!r})")
    return [kind(v) for v in items]


def toy_config(values: dict):
    """The ToyConfig the toy chapter trains with: the profile's settings, overridden by every sweep
    parameter that is not None (a single number stands for a one-element list). Raises InvalidParameter."""
    from kdsae_core.toy.config import ToyConfig
    from kdsae_core.toy.profiles import PROFILES
    profile = values.get("profile", "quick")
    if profile not in PROFILES:
        raise InvalidParameter(f"profile must be one of {', '.join(PROFILES)} (got {profile!r})")
    overrides = {}
    for name, kind in TOY_LISTS.items():
        if values.get(name) is not None:
            overrides[name] = _as_list(name, values[name], kind)
    for name, kind in TOY_SCALARS.items():
        v = values.get(name)
        if v is None:
            continue
        if kind is str and not isinstance(v, str) or kind is int and not (isinstance(v, int) and not isinstance(v, bool)) \
                or kind is float and not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)):
            raise InvalidParameter(f"{name} must be a {kind.__name__} (got {v!r})")
        overrides[name] = kind(v)
    return ToyConfig.from_profile(profile, **overrides)


def sweep_settings_given(values: dict) -> list[str]:
    return [k for k in (*TOY_LISTS, *TOY_SCALARS) if values.get(k) is not None]


def check_toy(values: dict) -> None:
    """The toy chapter's parameters: rerun builds a valid ToyConfig; rendering needs an existing file."""
    if values.get("source", "local") != "local":
        raise InvalidParameter("Experiment 1 has only local results (nothing of it is on the hub): use source local")
    cfg = toy_config(values)  # validates profile and every sweep setting, even when they are not used
    if not values.get("rerun"):
        given = sweep_settings_given(values)
        if given:
            raise InvalidParameter(f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} only when the sweep "
                                   "is recomputed: add `-p rerun true` "
                                   "(or leave them out to render committed results)")
    return cfg


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


RULES: dict[str, Callable[[dict], Any]] = {
    "01_toy_validation": check_toy,
}
