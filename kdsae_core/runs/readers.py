"""One file of an Experiment 2 run folder read and checked: `metrics.jsonl` as a table (a truncated last line
skipped) and a measurement JSON as a row of its scalars, its sorted importances and its predictions. A whole run
folder as tables, the files found and verified against the manifest: runs/tables.py.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from kdsae_core import theory
from kdsae_core.common.errors import BadFile
from kdsae_core.common.fileio import read_json_object

# Scalar fields of a measurement file, in the order tables show them. `avg_active` becomes `L0`.
MEASUREMENT_SCALARS = [
    "tokens",
    "measure_tokens",
    "d_in",
    "d_sae",
    "F_alive",
    "dead",
    "L0",
    "alpha",
    "g_alpha",
    "d_star_S",
    "mse",
    "l1",
    "loss",
    "explained_variance",
    "L_inf",
]
METRIC_COLUMNS = ["trial", "layer", "step", "tokens", "mse", "l1", "loss", "L0", "lambda", "alive_frac"]
PREDICTION_COLUMNS = ["features_kept", "features_dropped", "predicted_floor", "naive_floor"]


def read_metrics(path: Path) -> pd.DataFrame:
    """metrics.jsonl as a table; a truncated LAST line (a run stopped mid-write) is skipped with a warning."""
    path = Path(path)
    rows, lines = [], path.read_text().splitlines() if path.exists() else []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines):
                print(f"kdsae: {path}: skipping the truncated last line {i}", file=sys.stderr)
                continue
            raise BadFile(f"{path}, line {i}, is not valid JSON.") from None
        rows.append(row)
    df = pd.DataFrame(rows)
    for col in METRIC_COLUMNS:
        if col not in df:
            df[col] = np.nan if col != "trial" else pd.Series(dtype=str)
    df["layer"] = df["layer"].astype("Int64") if len(df) else df["layer"]
    return df


def measurement_row(path: Path, trial: str, layer: int, snapshot: str) -> tuple[dict, np.ndarray, list[dict]]:
    """A measurement file as (its row of MEASUREMENT_SCALARS, its sorted importances, its prediction rows); the
    quantities the file omits are recomputed and the ones it holds checked against the formulas."""
    data = read_json_object(path)
    missing = [k for k in ("F_alive", "avg_active", "sorted_importance") if k not in data]
    if missing:
        raise BadFile(f"measurement file {path} lacks {', '.join(missing)}.")
    if data.get("layer") is not None and int(data["layer"]) != layer:
        raise BadFile(f"{path} is named for layer {layer} but holds layer {data['layer']}.")
    row = {"trial": trial, "layer": layer, "snapshot": snapshot}
    for key in MEASUREMENT_SCALARS:
        row[key] = data.get("avg_active" if key == "L0" else key)
    if _alpha_undefined(data):  # measure.py wrote alpha null with a note: no theory columns, no predictions
        importance = _undefined_alpha_importance(path, data)
        row.update({"alpha": None, "g_alpha": None, "d_star_S": None, "L_inf": float(importance.sum())})
        if row["dead"] is None and row["d_sae"] is not None:
            row["dead"] = int(row["d_sae"]) - int(data["F_alive"])
        return row, importance, []
    m = theory.load_measurement(path)  # validates F, L0 and the importance order
    # Quantities the released files omit are recomputed; the ones present must agree with the formulas.
    for key, value in (("alpha", m.alpha), ("g_alpha", m.g_alpha), ("d_star_S", m.d_star_S), ("L_inf", m.L_inf)):
        if row[key] is None:
            row[key] = value
        elif not math.isclose(float(row[key]), value, rel_tol=1e-4, abs_tol=1e-9):
            raise BadFile(
                f"{path}: {key} = {row[key]} disagrees with {value:.6g} recomputed from F_alive and "
                "avg_active (book/methods.md)."
            )
    if row["dead"] is None and row["d_sae"] is not None:
        row["dead"] = int(row["d_sae"]) - m.F_alive
    preds = []
    for width, p in (data.get("predictions") or {}).items():
        preds.append(
            {
                "trial": trial,
                "layer": layer,
                "snapshot": snapshot,
                "width": int(width),
                **{k: p.get(k) for k in PREDICTION_COLUMNS},
            }
        )
    return row, m.sorted_importance, preds


def _alpha_undefined(data: dict) -> bool:
    """A measurement whose alpha = 1 - L0/F lies outside (0, 1) (no latent alive, or L0 >= F): measure.py
    writes it with alpha null and a note saying why."""
    try:
        F, L0 = int(data["F_alive"]), float(data["avg_active"])
    except (TypeError, ValueError):
        return False
    return data.get("alpha", 0) is None and not 0 < L0 < F


def _undefined_alpha_importance(path: Path, data: dict) -> np.ndarray:
    imp = np.asarray(data["sorted_importance"], dtype=np.float64)
    if (
        imp.ndim != 1
        or imp.size != int(data["F_alive"])
        or not np.all(np.isfinite(imp))
        or np.any(imp < 0)
        or np.any(np.diff(imp) > 0)
    ):
        raise BadFile(
            f"measurement file {path} is inconsistent: sorted_importance must hold F_alive = "
            f"{data['F_alive']} finite, non-negative values in descending order."
        )
    return imp
