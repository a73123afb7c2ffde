"""Figure-data regression: compare every figure's saved data with a reference copy, quantity by quantity.

Each figure saves its data beside its PNG (CSV or JSON). Two folders of such files are compared file by
file and column by column; numbers within the quantity's tolerance pass, anything else is a drift that
names the figure, the quantity and by how much it moved. Deterministic CPU runs match exactly (the
default tolerance is zero); re-trained runs use the looser per-quantity tolerances below.
"""

from __future__ import annotations

import fnmatch
import json
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import pandas as pd

from kdsae_core.figures import catalog
from kdsae_core.toy.evidence import evidence_with_grid, shown
from kdsae_core.toy.results import load_results

DATA_SUFFIXES = (".csv", ".json")

# (quantity-name pattern, rtol, atol) for comparing a re-trained run with the committed one: training
# noise moves losses and counts by a few percent; the closed-form quantities follow them.
RETRAIN_TOLERANCES: list[tuple[str, float, float]] = [
    ("*layer*", 0.0, 0.0),
    ("*width*", 0.0, 0.0),
    ("*step*", 0.0, 0.0),
    ("*tokens*", 0.0, 0.0),
    ("*alpha*", 0.0, 2e-3),
    ("*g_alpha*", 0.05, 0.0),
    ("*d_star*", 0.05, 0.0),
    ("*L0*", 0.05, 1.0),
    ("*F_alive*", 0.05, 2.0),
    ("*dead*", 0.10, 5.0),
    ("*", 0.05, 1e-6),
]
EXACT: list[tuple[str, float, float]] = [("*", 0.0, 0.0)]


@dataclass
class Drift:
    figure: str
    quantity: str
    detail: str

    def __str__(self) -> str:
        return f"{self.figure}: {self.quantity}: {self.detail}"


def data_files(folder: Path) -> dict[str, Path]:
    folder = Path(folder)
    return {
        str(p.relative_to(folder)): p for p in sorted(folder.rglob("*")) if p.suffix in DATA_SUFFIXES and p.is_file()
    }


def tolerance(quantity: str, tolerances) -> tuple[float, float]:
    for pattern, rtol, atol in tolerances:
        if fnmatch.fnmatchcase(quantity, pattern):
            return rtol, atol
    return 0.0, 0.0


def _flatten(obj, prefix="") -> dict[str, object]:
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(obj, list):
        out = {}
        for i, v in enumerate(obj):
            out.update(_flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: obj}


def _columns(path: Path) -> dict[str, list]:
    if path.suffix == ".csv":
        df = pd.read_csv(path)
        return {c: df[c].tolist() for c in df.columns}
    flat = _flatten(json.loads(path.read_text()))
    grouped: dict[str, list] = {}
    for key, value in flat.items():
        grouped.setdefault(key.split("[")[0], []).append(value)
    return grouped


def _compare_values(a: list, b: list, rtol: float, atol: float) -> str | None:
    if len(a) != len(b):
        return f"{len(b)} values instead of {len(a)}"
    worst_abs, worst_rel, bad = 0.0, 0.0, 0
    for x, y in zip(a, b):
        if isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(x, bool):
            if math.isnan(x) and math.isnan(y):
                continue
            diff = abs(x - y)
            if not diff <= atol + rtol * abs(x):
                bad += 1
                worst_abs = max(worst_abs, diff)
                worst_rel = max(worst_rel, diff / abs(x) if x else math.inf)
        elif x != y:
            return f"{x!r} became {y!r}"
    if bad:
        return (
            f"{bad}/{len(a)} values moved beyond rtol {rtol:g}, atol {atol:g} "
            f"(largest change {worst_abs:.4g}, {100 * worst_rel:.3g}% relative)"
        )
    return None


def compare(reference: Path, candidate: Path, tolerances=EXACT) -> list[Drift]:
    """Every drift of `candidate`'s figure data from `reference`'s (missing or extra files included)."""
    ref, cand = data_files(reference), data_files(candidate)
    drifts = [Drift(name, "-", "missing from the new figures") for name in ref if name not in cand]
    drifts += [Drift(name, "-", "new figure data with no reference") for name in cand if name not in ref]
    for name in sorted(set(ref) & set(cand)):
        a, b = _columns(ref[name]), _columns(cand[name])
        for q in sorted(set(a) | set(b)):
            if q not in a or q not in b:
                drifts.append(Drift(name, q, "quantity added" if q not in a else "quantity removed"))
                continue
            problem = _compare_values(a[q], b[q], *tolerance(q, tolerances))
            if problem:
                drifts.append(Drift(name, q, problem))
    return drifts


# ---- the committed figure data (results/figures/) -------------------------------------------------------------
def draw_figure_data(out: Path, exp2_run: Path | None, toy_results: Path | None) -> dict[str, Path]:
    """Draw every figure of the committed runs into `out` ({group: folder}): `exp2` from an Experiment 2 run
    folder, `toy` from a toy_results.json. The Pythia-410M reference figures are left out: their data are
    the authors' files, which are read from outside the repository and never committed."""
    matplotlib.use("Agg")
    groups = {}
    if exp2_run is not None:
        groups["exp2"] = Path(out) / "exp2"
        catalog.draw_run_folder(exp2_run, groups["exp2"])
    if toy_results is not None:
        groups["toy"] = Path(out) / "toy"
        grid = load_results(toy_results)
        catalog.draw_toy(grid, groups["toy"])
        catalog.draw_why(evidence_with_grid(grid, shown(toy_results)), groups["toy"])
    return groups


def only_data(folder: Path, dest: Path) -> None:
    """Copy the figure data files (not the PNGs) of `folder` to `dest`, replacing what was there."""
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    for rel, path in data_files(folder).items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest / rel)


def check_committed(
    reference: Path, exp2_run: Path | None, toy_results: Path | None, tolerances=EXACT, work: Path | None = None
) -> list[Drift]:
    """Redraw the figures and compare their data with the committed reference, group by group."""
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        groups = draw_figure_data(Path(tmp), exp2_run, toy_results)
        drifts = []
        for name, folder in groups.items():
            ref = Path(reference) / name
            if not ref.is_dir():
                drifts.append(Drift(name, "-", f"no committed figure data in {ref} to compare with"))
                continue
            drifts += [Drift(f"{name}/{d.figure}", d.quantity, d.detail) for d in compare(ref, folder, tolerances)]
        return drifts
