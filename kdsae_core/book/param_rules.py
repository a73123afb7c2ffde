"""The rules a notebook parameter's value must meet, checked before anything executes: its type (that of the
default in the `parameters` cell), the meaning every chapter gives the shared names (source, trial, layers, paths),
and a chapter's own range rules (the toy chapter builds its `ToyConfig`, whose `validate` is the one the sweep uses).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Callable

from kdsae_core.book.params import PATH_PARAMETERS, SOURCES, Parameter, notebook_parameters, raw_text, resolve
from kdsae_core.common.errors import InvalidParameter
from kdsae_core.runs import layout
from kdsae_core.sae.model import TRIAL_NAMES
from kdsae_core.toy.config import ToyConfig
from kdsae_core.toy.profiles import PROFILES
from kdsae_core.train.config import SAETrainConfig, refuse_unreachable_target
from kdsae_core.train.settings import Setting, notebook_settings


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
        raise InvalidParameter(
            f"{notebook.name} has no parameter {', '.join(map(repr, unknown))}; {_valid_list(params)}."
        )
    values = {p.name: p.default for p in params}
    for name, value in given.items():
        p = by_name[name]
        if p.kind == "str" and name in raw:
            value = value if isinstance(value, str) else raw_text(value)
        try:
            values[name] = _type_ok(p.kind, value)
        except TypeError:
            what = "a JSON-style literal with finite numbers" if p.kind == "any" else f"a {p.kind}"
            raise InvalidParameter(
                f"parameter {name} of {notebook.name} must be {what} "
                f"(got {value!r}, a {type(value).__name__}); {_valid_list(params)}."
            ) from None
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


# ---- range rules ----------------------------------------------------------------------------------------
def _check_paths(values: dict) -> None:
    """Path parameters name something that exists (a run folder holds config.json) before anything executes."""
    for name in PATH_PARAMETERS:
        v = values.get(name)
        if not (isinstance(v, str) and v):
            continue
        if not resolve(v).exists():
            raise InvalidParameter(
                f"{name} {v} does not exist (a relative path is taken from the folder you run kdsae in)"
            )
        if name == "run" and values.get("source", "local") == "local" and not layout.run_config(resolve(v)).exists():
            raise InvalidParameter(
                f"run {v} is not a run folder (it has no config.json from `kdsae train` or `kdsae download`)"
            )


def _check_common(values: dict) -> None:
    """Names that mean the same thing in every chapter (ARCHITECTURE.md)."""
    _check_paths(values)
    if "source" in values and values["source"] not in SOURCES:
        raise InvalidParameter(f"source must be one of {', '.join(SOURCES)} (got {values['source']!r})")
    if "trial" in values and values["trial"] is not None and values["trial"] not in TRIAL_NAMES:
        raise InvalidParameter(f"trial must be one of {', '.join(TRIAL_NAMES)} (got {values['trial']!r})")
    if "rerun" in values and not isinstance(values["rerun"], bool):
        raise InvalidParameter(f"rerun must be true or false (got {values['rerun']!r})")
    layers = values.get("layers")
    if layers is not None:
        items = layers if isinstance(layers, list) else [layers]
        if not items or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in items):
            raise InvalidParameter(f"layers must be null or a list of 0-based layer numbers (got {layers!r})")


TOY_LISTS = {"n": int, "alpha": float, "d_teacher": int, "widths": int}
TOY_SCALARS = {
    "importance": str,
    "mode": str,
    "steps": int,
    "batch": int,
    "lr": float,
    "seeds": int,
    "eval_samples": int,
    "seed": int,
}


def _as_list(name: str, value: Any, kind: type) -> list:
    items = value if isinstance(value, list) else [value]
    ok = all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and (kind is float or float(v).is_integer())
        for v in items
    )
    if not ok or not items:
        what = "numbers" if kind is float else "whole numbers"
        raise InvalidParameter(
            f"{name} must be a number or a list of {what}, e.g. [0.8, 0.9] (got {value!r})"
            if kind is float
            else f"{name} must be a whole number or a list of them (got {value!r})"
        )
    return [kind(v) for v in items]


def toy_config(values: dict) -> ToyConfig:
    """The ToyConfig the toy chapter trains with: the profile's settings, overridden by every sweep
    parameter that is not None (a single number stands for a one-element list). Raises InvalidParameter."""
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
        if (
            kind is str
            and not isinstance(v, str)
            or kind is int
            and not (isinstance(v, int) and not isinstance(v, bool))
            or kind is float
            and not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v))
        ):
            raise InvalidParameter(f"{name} must be a {kind.__name__} (got {v!r})")
        overrides[name] = kind(v)
    return ToyConfig.from_profile(profile, **overrides)


def sweep_settings_given(values: dict) -> list[str]:
    return [k for k in (*TOY_LISTS, *TOY_SCALARS) if values.get(k) is not None]


def toy_chapter_config(values: dict) -> ToyConfig:
    """Check the toy chapter's parameters and return the ToyConfig a rerun trains with (built, and so validated,
    even when the committed results are rendered; sweep settings without rerun are refused)."""
    if values.get("source", "local") != "local":
        raise InvalidParameter("Experiment 1 has only local results (nothing of it is on the hub): use source local")
    cfg = toy_config(values)  # validates profile and every sweep setting, even when they are not used
    if not values.get("rerun"):
        given = sweep_settings_given(values)
        if given:
            raise InvalidParameter(
                f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} only when the sweep "
                "is recomputed: add `-p rerun true` "
                "(or leave them out to render committed results)"
            )
    return cfg


# ---- Experiment 2's chapters: their science settings, as declared in train/settings.py ----------------------------
PILOT_LAMBDA = Setting("pilot_lambdas", "float", "one pilot's lambda", low=0, open_low=True)
SCIENCE = {name for trial in (*TRIAL_NAMES, None) for name in notebook_settings(trial)} - {"layers"}


def check_pilot_lambdas(lambdas) -> list[float]:
    """pilot_lambdas: a list of distinct positive numbers (each is trial A's `mean`-form lambda of one pilot)."""
    items = lambdas if isinstance(lambdas, list) else [lambdas]
    bad = InvalidParameter(
        f"pilot_lambdas must be a list of distinct positive numbers, e.g. [1e-4, 7e-4] (got {lambdas!r})"
    )
    try:
        values = [PILOT_LAMBDA.check(v) for v in items]
    except InvalidParameter:
        raise bad from None
    if not values or len({f"{v:.0e}" for v in values}) != len(values):  # a pilot is named by its lambda: P7e-04
        raise bad
    return values


def exp2_chapter_config(values: dict) -> SAETrainConfig | None:
    """Check an Experiment 2 chapter's science parameters and return the SAETrainConfig a rerun trains with (None
    without rerun). Each is checked against its declaration; together, as the rerun's config, from the run's own."""
    trial = values.get("trial")
    declared = notebook_settings(trial)
    given = {k: values[k] for k in sorted(SCIENCE) if values.get(k) is not None}
    for k in given:
        if k not in declared:
            raise InvalidParameter(f"{k} does not apply to trial {trial}, the trial this page retrains")
    science = {declared[k].name: declared[k].check(v, k) for k, v in given.items()}
    pilots = values.get("pilot_lambdas")
    if pilots is not None:
        check_pilot_lambdas(pilots)
        if not values.get("pilots"):
            raise InvalidParameter("pilot_lambdas applies only with pilots true: add `-p pilots true`")
        given["pilot_lambdas"] = pilots
    if not values.get("rerun"):
        if given:
            raise InvalidParameter(
                f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} only when the SAEs "
                "are retrained: add `-p rerun true` (or leave them out to render the committed run)"
            )
        return None
    if values.get("source", "local") != "local":
        raise InvalidParameter("rerun retrains from a local run folder's settings: use source local")
    return _rerun_config(values, trial, science)


def _rerun_config(values: dict, trial: str | None, science: dict) -> SAETrainConfig:
    record = json.loads(layout.run_config(resolve(values["run"])).read_text())
    trials = [trial] if trial else values.get("trials") or list(TRIAL_NAMES)
    cfg = SAETrainConfig.like(record["settings"], trials=list(trials), layers=values.get("layers"), **science)
    refuse_unreachable_target(cfg, science.get("target_l0"), "target_l0")
    n_layers = record.get("n_layers")
    if cfg.model == record["settings"].get("model") and n_layers and values.get("layers") is not None:
        bad = [v for v in values["layers"] if v >= n_layers]
        if bad:
            raise InvalidParameter(
                f"layers must be 0-based layer numbers of the model, 0-{n_layers - 1} (got "
                f"{values['layers']!r}: the model has {n_layers} layers)"
            )
    return cfg


RULES: dict[str, Callable[[dict], Any]] = {
    "01_toy_validation": toy_chapter_config,
    **dict.fromkeys(("02_trial_a", "03_trial_b", "04_trial_c", "05_trials_compared"), exp2_chapter_config),
}
